#define _GNU_SOURCE
#include "CShims.h"
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/eventfd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/ioctl.h>
#include <net/if.h>
#include <linux/if_tun.h>

_Static_assert(sizeof(uint64_t) == 8, "u64");

ssize_t vs_send_with_fds(int sock, const void *buf, size_t len, const int *fds, int nfds) {
    if (nfds < 0 || nfds > VS_MAX_FDS) { errno = EINVAL; return -1; }
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    union { char buf[CMSG_SPACE(sizeof(int) * VS_MAX_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds > 0) {
        memset(&control, 0, sizeof(control));
        msg.msg_control = control.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t r;
    do { r = sendmsg(sock, &msg, MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return r;
}

ssize_t vs_recv_with_fds(int sock, void *buf, size_t len, int *fds, int maxfds, int *nfds, int *truncated) {
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    union { char buf[CMSG_SPACE(sizeof(int) * VS_MAX_FDS)]; struct cmsghdr align; } control;
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = sizeof(control.buf) };
    *nfds = 0; *truncated = 0;
    ssize_t r;
    do { r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC); } while (r < 0 && errno == EINTR);
    if (r < 0) return r;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        int *in = (int *)CMSG_DATA(c);
        for (int i = 0; i < n; i++) {
            if (*nfds < maxfds) fds[(*nfds)++] = in[i];
            else { close(in[i]); *truncated = 1; }  // more fds than any message may carry
        }
    }
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) *truncated = 1;
    return r;
}

int vs_eventfd(unsigned int initval) { return eventfd(initval, EFD_NONBLOCK | EFD_CLOEXEC); }
int vs_eventfd_signal(int fd) { uint64_t one = 1; return write(fd, &one, 8) == 8 ? 0 : -1; }
int vs_eventfd_drain(int fd) { uint64_t v; return read(fd, &v, 8) == 8 ? 0 : -1; }
int vs_memfd_create(const char *name) { return memfd_create(name, MFD_CLOEXEC); }
int vs_memfd_create_sealable(const char *name) { return memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING); }

int vs_epoll_create(void) { return epoll_create1(EPOLL_CLOEXEC); }
int vs_epoll_ctl(int epfd, int op, int fd, uint32_t events, uint64_t token) {
    struct epoll_event ev = { .events = events, .data.u64 = token };
    return epoll_ctl(epfd, op, fd, &ev);
}
int vs_epoll_wait(int epfd, uint64_t *tokens, uint32_t *events, int max, int timeout_ms) {
    struct epoll_event evs[64];
    if (max > 64) max = 64;
    int n = epoll_wait(epfd, evs, max, timeout_ms);
    for (int i = 0; i < n; i++) { tokens[i] = evs[i].data.u64; events[i] = evs[i].events; }
    return n;
}
int vs_epoll_op_add(void) { return EPOLL_CTL_ADD; }
int vs_epoll_op_mod(void) { return EPOLL_CTL_MOD; }
int vs_epoll_op_del(void) { return EPOLL_CTL_DEL; }
uint32_t vs_epollin(void) { return EPOLLIN; }
uint32_t vs_epollout(void) { return EPOLLOUT; }
uint32_t vs_epollerr_hup(void) { return EPOLLERR | EPOLLHUP; }

uint64_t vs_monotonic_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
uint64_t vs_coarse_seconds(void) {
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec;
}

int vs_tap_open(char *name, int vnet_hdr) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq ifr; memset(&ifr, 0, sizeof(ifr));
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | (vnet_hdr ? IFF_VNET_HDR : 0);
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { int e = errno; close(fd); errno = e; return -1; }
    strncpy(name, ifr.ifr_name, IFNAMSIZ - 1);
    return fd;
}

int vs_tap_enable_offloads(int fd) {
    int size = 12;   /* struct virtio_net_hdr_mrg_rxbuf: the modern header, num_buffers included */
    if (ioctl(fd, TUNSETVNETHDRSZ, &size) < 0) return -1;
    int le = 1;      /* virtio 1.x byte order on any host (a no-op on little-endian ones) */
    if (ioctl(fd, TUNSETVNETLE, &le) < 0 && errno != EINVAL) return -1;
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)) < 0) return -1;
    return 0;
}

int vs_tap_vnet_header_size(int fd) {
    struct ifreq ifr; memset(&ifr, 0, sizeof(ifr));
    if (ioctl(fd, TUNGETIFF, &ifr) < 0) return -1;
    if (!(ifr.ifr_flags & IFF_VNET_HDR)) return 0;
    int size = 0;
    if (ioctl(fd, TUNGETVNETHDRSZ, &size) < 0) return -1;
    return size;
}

static int fill_addr(struct sockaddr_un *a, const char *path) {
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(a->sun_path)) { errno = ENAMETOOLONG; return -1; }
    strcpy(a->sun_path, path);
    return 0;
}

int vs_unix_listen(const char *path, int backlog) {
    struct sockaddr_un a; if (fill_addr(&a, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, backlog) < 0) {
        int e = errno; close(fd); errno = e; return -1;
    }
    return fd;
}

int vs_unix_listen_mode(const char *path, int backlog, unsigned int mode) {
    return vs_unix_listen_owned(path, backlog, mode, -1);
}

int vs_unix_listen_owned(const char *path, int backlog, unsigned int mode, int64_t gid) {
    struct sockaddr_un a; if (fill_addr(&a, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) { int e = errno; close(fd); errno = e; return -1; }
    // Group first, then mode: chown may clear mode bits, and nobody can connect before listen.
    if ((gid >= 0 && chown(path, (uid_t)-1, (gid_t)gid) < 0) || chmod(path, (mode_t)mode) < 0
        || listen(fd, backlog) < 0) {
        int e = errno; unlink(path); close(fd); errno = e; return -1;
    }
    return fd;
}

int vs_peer_credentials(int fd, int32_t *pid, uint32_t *uid, uint32_t *gid) {
    struct ucred c; socklen_t len = sizeof(c);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) < 0) return -1;
    if (len != sizeof(c)) { errno = EINVAL; return -1; }
    *pid = c.pid; *uid = c.uid; *gid = c.gid;
    return 0;
}

int vs_peer_in_group(int fd, uint32_t gid) {
    gid_t small[64], *groups = small;
    socklen_t len = sizeof(small);
    int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
    if (rc < 0 && errno == ERANGE) {   // more than 64 groups: len now holds the size needed
        groups = malloc(len);
        if (groups == NULL) return -1;
        rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len);
    }
    int found = 0;
    if (rc == 0) {
        for (size_t i = 0; i < len / sizeof(gid_t); i++) if (groups[i] == gid) found = 1;
    }
    int e = errno;
    if (groups != small) free(groups);
    errno = e;
    return rc < 0 ? -1 : found;
}

int vs_unix_connect(const char *path) {
    struct sockaddr_un a; if (fill_addr(&a, path) < 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) { int e = errno; close(fd); errno = e; return -1; }
    return fd;
}

int vs_accept(int listen_fd) { return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC); }

#include <sched.h>
int vs_pin_to_cpu(int cpu) {
    cpu_set_t set; CPU_ZERO(&set); CPU_SET(cpu, &set);
    return sched_setaffinity(0, sizeof(set), &set);
}
int vs_cpu_allowed(int cpu) {
    cpu_set_t set; CPU_ZERO(&set);
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
    return CPU_ISSET(cpu, &set) ? 1 : 0;
}
int vs_gettid(void) { return (int)gettid(); }

int vs_seal_shrink(int fd) {
    (void)fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK);
    int seals = fcntl(fd, F_GET_SEALS);
    return seals >= 0 && (seals & F_SEAL_SHRINK) ? 1 : 0;
}

#include <stdio.h>
#include <sys/vfs.h>
#include <linux/magic.h>
int vs_fd_backing(int fd) {
    struct statfs fs;
    if (fstatfs(fd, &fs) == 0 && fs.f_type == HUGETLBFS_MAGIC) return 2;
    char link[32], target[16];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target);
    return n >= 7 && memcmp(target, "/memfd:", 7) == 0 ? 1 : 0;
}

#include <pthread.h>
void vs_set_thread_name(const char *name) { pthread_setname_np(pthread_self(), name); }

int vs_tty_size(int fd, int *rows, int *cols) {
    struct winsize w;
    if (ioctl(fd, TIOCGWINSZ, &w) < 0) return -1;
    *rows = w.ws_row;
    *cols = w.ws_col;
    return 0;
}
