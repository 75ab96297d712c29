// Thin C shims for what Swift cannot reach directly: SCM_RIGHTS ancillary
// data, eventfd/memfd, a packed-struct-free epoll interface and memory-order
// primitives for virtqueue indexes. Every function is a one-liner-sized
// wrapper; policy lives in Swift.
#ifndef VSWITCH_CSHIMS_H
#define VSWITCH_CSHIMS_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdio.h>

/// Largest number of fds one vhost-user message may carry (the spec's limit, 8 regions).
#define VS_MAX_FDS 8

/// sendmsg(2) of `len` bytes with `nfds` descriptors in one SCM_RIGHTS message. Retries EINTR.
ssize_t vs_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds);

/// recvmsg(2) of up to `len` bytes; received descriptors (close-on-exec) go to `fds`, their
/// count to `*nfds`. `*truncated` is set when the kernel cut data or control data (MSG_TRUNC /
/// MSG_CTRUNC): the caller must treat the message as malformed. Retries EINTR.
ssize_t vs_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated);

int vs_eventfd(unsigned int initval);          // EFD_NONBLOCK | EFD_CLOEXEC
int vs_eventfd_signal(int fd);                 // write 1; 0 or -1
int vs_eventfd_drain(int fd);                  // read and discard the counter; 0 or -1
int vs_memfd_create(const char *name);         // MFD_CLOEXEC
/// A memfd that allows sealing (what QEMU's memory-backend-memfd creates); for tests.
int vs_memfd_create_sealable(const char *name);

int vs_epoll_create(void);
/// Register/modify/remove `fd` for `events` (EPOLLIN...) carrying the 64-bit `token`.
int vs_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token);
/// Wait; tokens and event masks are written to parallel arrays. Retries nothing: EINTR returns -1.
int vs_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms);

int vs_epoll_op_add(void);
int vs_epoll_op_mod(void);
int vs_epoll_op_del(void);
uint32_t vs_epollin(void);
uint32_t vs_epollout(void);
uint32_t vs_epollerr_hup(void);

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC).
uint64_t vs_monotonic_ns(void);
/// Coarse monotonic seconds (CLOCK_MONOTONIC_COARSE): cheap enough for per-batch MAC aging.
uint64_t vs_coarse_seconds(void);

/// Create a TAP interface (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR optional). `name` in/out, IFNAMSIZ.
int vs_tap_open(char *name, int vnet_hdr);
/// On a TAP opened with vnet_hdr: 12-byte virtio-net headers (TUNSETVNETHDRSZ), little-endian,
/// and TUNSETOFFLOAD(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6). 0, or -1 with errno.
int vs_tap_enable_offloads(int fd);
/// The virtio-net header size the TAP descriptor uses (0 without IFF_VNET_HDR), or -1.
int vs_tap_vnet_header_size(int fd);
/// Sets or clears IFF_UP on an interface of the caller's network namespace (net.c).
int vs_if_set_up(const char *name, int up);
/// The interface's MTU, or -1.
int vs_if_mtu(const char *name);
/// 1 if an interface of this name exists in the caller's network namespace.
int vs_if_exists(const char *name);
/// The terminal's size (TIOCGWINSZ: ioctl is variadic, so Swift cannot call it): 0, or -1
/// if fd is not a terminal.
int vs_tty_size(int fd, int *rows, int *cols);
/// A nonblocking AF_UNIX SOCK_SEQPACKET pair (one message per read, like a TAP descriptor).
int vs_socketpair_seqpacket(int fds[2]);

/// Socket helpers with sockaddr_un handled in C (path length checked: -2 means too long).
int vs_unix_listen(const char *path, int backlog);
int vs_unix_connect(const char *path);
/// Like vs_unix_listen, but the socket file gets `mode` (chmod between bind and listen, so
/// no client can connect while it still has the umask's mode).
int vs_unix_listen_mode(const char *path, int backlog, unsigned int mode);
/// Like vs_unix_listen_mode, and the socket file's group becomes `gid` (if >= 0) before the
/// mode is set and before listen: a QEMU in that group can connect from the first moment.
int vs_unix_listen_owned(const char *path, int backlog, unsigned int mode, int64_t gid);

/// Credentials of the process at the other end of a connected Unix socket, as they were
/// when it connected (SO_PEERCRED). 0, or -1 with errno.
int vs_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid);
/// 1 if `gid` is among the peer's supplementary groups at connect time (SO_PEERGROUPS),
/// 0 if not, -1 with errno.
int vs_peer_in_group(int fd, uint32_t gid);
/// accept4(SOCK_CLOEXEC); -1 on error (EAGAIN when nothing is pending).
int vs_accept(int listen_fd);
/// Pins the calling thread to one CPU (sched_setaffinity).
int vs_pin_to_cpu(int cpu);
/// 1 if this process may run on `cpu` (it is in the affinity mask vswitchd started with:
/// online, and allowed by taskset or the cgroup's cpuset), else 0.
int vs_cpu_allowed(int cpu);
/// The calling thread's kernel id (gettid).
int vs_gettid(void);
/// Names the calling thread (pthread_setname_np; shows in /proc/PID/task/*/comm, top -H).
void vs_set_thread_name(const char *name);
/// Time-stamp counter: cheap cycle counting for the forwarding loop's busy/idle split.
static inline uint64_t vs_rdtsc(void) {
#if defined(__x86_64__)
    return __builtin_ia32_rdtsc();
#else
    return 0;
#endif
}
/// Best effort: forbid shrinking a memfd we are about to map (F_SEAL_SHRINK), so the
/// frontend cannot cut the file under our mapping (SIGBUS). Returns 1 if the file is now
/// sealed against shrinking, 0 if it cannot be (not a memfd, or sealing not allowed).
int vs_seal_shrink(int fd);
/// What backs a guest memory fd, for `vswitch show`: 2 hugetlbfs (fstatfs), 1 a memfd
/// (its /proc/self/fd link starts with "/memfd:"), 0 any other file.
int vs_fd_backing(int fd);

// ---- Memory ordering on shared ring memory (virtio 1.2, 2.7.13: the driver and device
// ---- may run concurrently; avail.idx is read with acquire, used.idx published with release).

static inline uint16_t vs_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}
static inline uint16_t vs_load_relaxed_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}
static inline void vs_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}
static inline void vs_store_relaxed_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}
/// Dirty-page log bits (live migration): the frontend reads and clears them concurrently,
/// so a bit is set after the write it marks, and atomically.
static inline void vs_atomic_or_u8(void *p, uint8_t bits) {
    __atomic_fetch_or((uint8_t *)p, bits, __ATOMIC_RELEASE);   // after the write it marks
}
/// Full barrier: needed between re-enabling notifications and re-reading avail.idx
/// (a store followed by a load of another location).
static inline void vs_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void vs_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void vs_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

/// Cache-line prefetch hints: never fault, never change memory. The forwarding loop asks
/// for the lines the other CPU (the guest or generator) wrote last, a batch ahead, so that
/// those transfers overlap instead of stalling one frame after another.
static inline void vs_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }
static inline void vs_prefetch_write(const void *p) { __builtin_prefetch(p, 1, 3); }

/// Counters written by the forwarding thread and read by the control thread.
static inline void vs_counter_add(uint64_t *p, uint64_t n) {
    __atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
static inline uint64_t vs_counter_load(const uint64_t *p) {
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}
/// A counter several threads add to (a locked add: for rare events, never per frame).
static inline void vs_counter_add_shared(uint64_t *p, uint64_t n) {
    (void)__atomic_fetch_add(p, n, __ATOMIC_RELAXED);
}

// ---- Capture rings (one producer: the forwarding thread; one consumer: a writer thread).
static inline uint64_t vs_load_acquire_u64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void vs_store_release_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void vs_store_relaxed_u64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/// Wall-clock time in nanoseconds (CLOCK_REALTIME, vDSO): capture timestamps.
uint64_t vs_realtime_ns(void);
/// A write-only stdio stream over a socket whose writes use send(MSG_NOSIGNAL), so a reader
/// that went away is an EPIPE error on the stream instead of a SIGPIPE (capture.c).
/// Closing the stream does not close the socket. NULL on failure.
FILE *vs_socket_stream(int fd);
/// Waits up to `timeout_ms` for `efd` (an eventfd) to be signalled or for `peer` (a socket,
/// or -1) to hang up. Returns 2 if the peer went away (POLLHUP/POLLERR, or readable at EOF),
/// 1 if the eventfd fired (it is drained), 0 on timeout or EINTR.
int vs_capture_wait(int efd, int peer, int timeout_ms);
// ---- UDP for VXLAN tunnels (udp.c). Addresses are 16 bytes laid out as a struct in6_addr,
// ---- IPv4 as IPv4-mapped (::ffff:a.b.c.d), which also picks an AF_INET socket; ports in
// ---- host order. (vs_resolve4 and vs_udp_open keep uint32_t IPv4 addresses, for tests.)

/// A dotted quad or a host name (getaddrinfo, AF_INET) -> address; 0 or a getaddrinfo error.
int vs_resolve4(const char *host, uint32_t *addr_be);
/// An IPv6 or IPv4 literal or a host name (getaddrinfo, first answer) -> 16 bytes; 0 or a
/// getaddrinfo error.
int vs_resolve(const char *host, void *addr16);
const char *vs_resolve_error(int rc);
/// inet_ntop of a 16-byte address (dotted quad for IPv4-mapped); 0, or -1.
int vs_addr_format(const void *addr16, char *out, int len);
/// Nonblocking UDP socket bound to addr:port (port 0: an ephemeral one); -1 and errno on
/// error (EADDRINUSE: another socket has the port). `rcvbuf` > 0 sets the receive buffer.
int vs_udp_open(uint32_t addr_be, uint16_t port, int rcvbuf);
/// The same for a 16-byte address: AF_INET for IPv4-mapped, else AF_INET6 with IPV6_V6ONLY.
int vs_udp_open_addr(const void *addr16, uint16_t port, int rcvbuf);
/// The port a UDP socket is bound to, or -1.
int vs_udp_local_port(int fd);
/// The MTU of the route to remote (IP_MTU or IPV6_MTU of a connected socket, from `local`
/// unless it is the any address), or -1.
int vs_udp_path_mtu(const void *local16, const void *remote16, uint16_t port);
/// Joins multicast `group16` on interface `ifindex` (0: the kernel picks by route):
/// IP_ADD_MEMBERSHIP or IPV6_JOIN_GROUP, and turns IP(V6)_MULTICAST_ALL off (only this
/// socket's groups arrive). 0, or -1 and errno.
int vs_udp_multicast_join(int fd, const void *group16, int ifindex);
/// Leaves `group16` on `ifindex` (IP_DROP_MEMBERSHIP, IPV6_LEAVE_GROUP): the last tunnel
/// port of a shared socket in that group is gone. 0, or -1 and errno.
int vs_udp_multicast_leave(int fd, const void *group16, int ifindex);
/// Multicast sending (IPv6 if `v6`): IP(V6)_MULTICAST_IF `ifindex` (if not 0), TTL or hop
/// limit `ttl`, loopback off (our own floods must not come back). 0, or -1 and errno.
int vs_udp_multicast_sender(int fd, int v6, int ifindex, int ttl);
/// One datagram from `iovcnt` struct iovec entries to addr:port (MSG_DONTWAIT). Retries EINTR.
ssize_t vs_udp_sendv(int fd, const void *iov, int iovcnt, const void *addr16, uint16_t port);
/// recvmmsg of up to n (<= 64) datagrams into n buffers of buf_len bytes laid end to end;
/// each one's length (-1: cut, longer than buf_len) and source address (16 bytes each at
/// from16). The count, 0 when none is waiting, -1 on another error.
int vs_udp_recv_batch(int fd, void *bufs, size_t buf_len, int n, int32_t *lengths, void *from16);
/// vs_udp_recv_batch on a socket with UDP_GRO (vs_udp_enable_gro): segment_sizes[i] is the
/// size of the datagrams the kernel coalesced into message i (from its UDP_GRO cmsg; the last
/// may be shorter), 0 for an ordinary datagram. segment_sizes NULL: no cmsg is asked for.
int vs_udp_recv_batch_gro(int fd, void *bufs, size_t buf_len, int n, int32_t *lengths, int32_t *segment_sizes,
                          void *from16);
/// setsockopt UDP_GRO 1: the kernel may hand this socket several datagrams of one size from
/// one source back to back in one message. 0, or -1 and errno (kernels before 5.0).
int vs_udp_enable_gro(int fd);
/// One UDP GSO super-datagram (cmsg UDP_SEGMENT = segment_size): the kernel cuts the iovecs'
/// bytes into datagrams of segment_size bytes (the last may be shorter), at most 64 of them
/// (Linux 4.18+). The bytes sent, or -errno (EIO/EINVAL: the kernel refuses GSO on this
/// socket or route; EMSGSIZE: too long). Retries EINTR.
ssize_t vs_udp_sendv_gso(int fd, const void *iov, int iovcnt, const void *addr16, uint16_t port, uint16_t segment_size);
/// Several such super-datagrams to addr:port by one sendmmsg: message i is the iovecs
/// [i * iov_per_message, (i + 1) * iov_per_message) of the iovcnt (at most 64 messages), each
/// with UDP_SEGMENT = segment_size. The messages sent (those after them were not), or -errno
/// if none was.
int vs_udp_send_gso(int fd, const void *iov, int iovcnt, int iov_per_message, const void *addr16, uint16_t port,
                    uint16_t segment_size);
/// sendmmsg of n (<= 64) datagrams to addr16[i]:port, message i made of iov_count[i] iovecs
/// from iov[iov_start[i]]. Returns how many were sent (the first not sent failed with
/// *first_errno), -1 if none was.
int vs_udp_send_batch(int fd, const void *iov, const int32_t *iov_start, const int32_t *iov_count,
                      const void *addr16, uint16_t port, int n, int *first_errno);


// ---- Guest memory that shrinks under the switch (memguard.c) ----
/// Installs the SIGBUS handler once; returns the eventfd it signals after replacing a
/// faulting guest mapping (the same fd on later calls), or -1.
int vs_memguard_install(void);
int vs_memguard_eventfd(void);
/// Gives the calling thread an alternate signal stack (64 KiB) for the handler, unless it
/// has one: 1 (ours: release it with vs_memguard_altstack_release before the thread ends),
/// 0 (it had one), -1 (failed).
int vs_memguard_altstack(void);
void vs_memguard_altstack_release(int given);
/// Registers a guest mapping; the slot for vs_memguard_remove / vs_memguard_faults, or -1.
int vs_memguard_add(void *base, size_t len);
void vs_memguard_remove(int slot);
/// How many times the mapping in `slot` faulted (and was replaced by anonymous memory).
uint64_t vs_memguard_faults(int slot);
/// Mappings registered now (tests: a removed memory region must leave the table).
int vs_memguard_registered(void);

#endif
