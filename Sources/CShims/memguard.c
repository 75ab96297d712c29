// Surviving guest memory that shrinks under the switch (a frontend truncating the file
// behind a region after SET_MEM_TABLE). Touching a shared mapping past the end of its file
// raises SIGBUS; without this the whole daemon dies with every guest's link.
//
// Each guest mapping is registered in a fixed table. The SIGBUS handler (SA_SIGINFO, on the
// thread's alternate stack if it has one) looks the faulting address up. If it lies in a
// registered mapping, the whole mapping is replaced by private anonymous memory (mmap
// MAP_FIXED: async-signal-safe, and whole mappings so hugetlbfs VMAs are never split), the
// fault is counted and the control thread woken through an eventfd; the interrupted
// instruction then completes on zeros. Any other address gets the previous action back and
// faults again: a real bug still crashes (with the Swift runtime's backtrace).
#define _GNU_SOURCE
#include "CShims.h"
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

// 256 ports (the engine's limit) x 32 regions; a port may use up to 64 (VhostUserDevice.maxMemorySlots).
#define GUARD_SLOTS 8192

struct guard_slot {
    _Atomic uintptr_t start;   // 0: free
    _Atomic uintptr_t end;
    _Atomic uint64_t faults;
};

static struct guard_slot slots[GUARD_SLOTS];
static _Atomic int guard_eventfd = -1;
static _Atomic int installed = 0;
static struct sigaction previous;   // the runtime's crash handler (Swift's backtracer), if any

// The handler runs inside whatever the thread was doing, possibly inside a sanitizer's
// runtime holding its own locks (ThreadSanitizer takes one around every atomic): so it is
// not instrumented, reads the table with plain volatile loads (aligned 8-byte loads are
// single-copy atomic, and an entry is published long before its mapping can fault), and
// calls mmap and write as raw system calls, which no sanitizer intercepts.
__attribute__((no_sanitize("thread", "address", "undefined")))
static void on_sigbus(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    uintptr_t a = (uintptr_t)si->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t s = *(volatile uintptr_t *)&slots[i].start;
        if (s == 0 || a < s) continue;
        uintptr_t e = *(volatile uintptr_t *)&slots[i].end;
        if (a >= e) continue;
        long r = syscall(SYS_mmap, (void *)s, e - s, PROT_READ | PROT_WRITE,
                         MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (r == -1) break;
        // Not an atomic add (see above); two threads faulting at once on one mapping can only
        // lose a count, never the fact that it faulted.
        volatile uint64_t *faults = (volatile uint64_t *)&slots[i].faults;
        *faults = *faults + 1;
        int fd = *(volatile int *)&guard_eventfd;
        if (fd >= 0) {
            uint64_t one = 1;
            (void)syscall(SYS_write, fd, &one, sizeof one);
        }
        return;
    }
    // Not guest memory: put back what was there before us (the default action, or the Swift
    // runtime's backtracer); returning re-executes the faulting instruction, which then
    // crashes the process as it would have without us.
    sigaction(sig, &previous, NULL);
}

int vs_memguard_install(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1)) return atomic_load(&guard_eventfd);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    atomic_store(&guard_eventfd, fd);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGBUS, &sa, &previous) != 0) return -1;
    return fd;
}

int vs_memguard_eventfd(void) { return atomic_load(&guard_eventfd); }

int vs_memguard_altstack(void) {
    stack_t old;
    // Keep a stack someone else gave this thread (the sanitizers' runtimes do, and unmap it
    // themselves when the thread ends).
    if (sigaltstack(NULL, &old) == 0 && !(old.ss_flags & SS_DISABLE)) return 0;
    stack_t ss;
    memset(&ss, 0, sizeof ss);
    ss.ss_size = 64 * 1024;
    ss.ss_sp = mmap(NULL, ss.ss_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ss.ss_sp == MAP_FAILED) return -1;
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(ss.ss_sp, ss.ss_size);
        return -1;
    }
    return 1;
}

void vs_memguard_altstack_release(int given) {
    if (given != 1) return;   // 0: the stack was someone else's; -1: none was set up
    stack_t old;
    if (sigaltstack(NULL, &old) != 0 || (old.ss_flags & SS_DISABLE)) return;
    stack_t off;
    memset(&off, 0, sizeof off);
    off.ss_flags = SS_DISABLE;
    if (sigaltstack(&off, NULL) == 0) munmap(old.ss_sp, old.ss_size);
}

int vs_memguard_add(void *base, size_t len) {
    uintptr_t s = (uintptr_t)base;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t zero = 0;
        // Claim the slot by its end first (a reader checks start, then end).
        if (atomic_load(&slots[i].start) != 0) continue;
        if (!atomic_compare_exchange_strong(&slots[i].end, &zero, s + len)) continue;
        atomic_store(&slots[i].faults, 0);
        atomic_store_explicit(&slots[i].start, s, memory_order_release);
        return i;
    }
    return -1;
}

void vs_memguard_remove(int slot) {
    if (slot < 0 || slot >= GUARD_SLOTS) return;
    atomic_store_explicit(&slots[slot].start, 0, memory_order_release);
    atomic_store_explicit(&slots[slot].end, 0, memory_order_release);
}

uint64_t vs_memguard_faults(int slot) {
    if (slot < 0 || slot >= GUARD_SLOTS) return 0;
    return atomic_load_explicit(&slots[slot].faults, memory_order_acquire);
}

int vs_memguard_registered(void) {
    int n = 0;
    for (int i = 0; i < GUARD_SLOTS; i++) n += atomic_load(&slots[i].start) != 0;
    return n;
}
