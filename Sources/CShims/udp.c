// UDP shims for VXLAN tunnel ports: IPv4 addresses travel as uint32_t in network byte
// order so Swift never builds a sockaddr_in; policy (which ports, error messages) lives in
// Swift (Sources/Switch/VxlanTunnel.swift).
#define _GNU_SOURCE
#include "CShims.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

static void sin_fill(struct sockaddr_in *s, uint32_t addr_be, uint16_t port) {
    memset(s, 0, sizeof(*s));
    s->sin_family = AF_INET;
    s->sin_addr.s_addr = addr_be;
    s->sin_port = htons(port);
}

int vs_resolve4(const char *host, uint32_t *addr_be) {
    struct in_addr a;
    if (inet_pton(AF_INET, host, &a) == 1) { *addr_be = a.s_addr; return 0; }
    struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_DGRAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) return rc;
    *addr_be = ((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr;
    freeaddrinfo(res);
    return 0;
}

const char *vs_resolve_error(int rc) { return gai_strerror(rc); }

int vs_udp_open(uint32_t addr_be, uint16_t port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in s;
    sin_fill(&s, addr_be, port);
    if (bind(fd, (struct sockaddr *)&s, sizeof(s)) != 0) {
        int e = errno; close(fd); errno = e;
        return -1;
    }
    return fd;
}

int vs_udp_local_port(int fd) {
    struct sockaddr_in s;
    socklen_t len = sizeof(s);
    if (getsockname(fd, (struct sockaddr *)&s, &len) != 0 || s.sin_family != AF_INET) return -1;
    return ntohs(s.sin_port);
}

int vs_udp_multicast_join(int fd, uint32_t group_be, int ifindex) {
    struct ip_mreqn m;
    memset(&m, 0, sizeof(m));
    m.imr_multiaddr.s_addr = group_be;
    m.imr_ifindex = ifindex;
    if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof(m)) != 0) return -1;
    int zero = 0;
    (void)setsockopt(fd, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof(zero));
    return 0;
}

int vs_udp_multicast_leave(int fd, uint32_t group_be, int ifindex) {
    struct ip_mreqn m;
    memset(&m, 0, sizeof(m));
    m.imr_multiaddr.s_addr = group_be;
    m.imr_ifindex = ifindex;
    return setsockopt(fd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &m, sizeof(m));
}

int vs_udp_multicast_sender(int fd, int ifindex, int ttl) {
    struct ip_mreqn m;
    memset(&m, 0, sizeof(m));
    m.imr_ifindex = ifindex;
    if (ifindex != 0 && setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &m, sizeof(m)) != 0) return -1;
    int off = 0;
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)) != 0) return -1;
    return setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &off, sizeof(off));
}

int vs_udp_path_mtu(uint32_t local_be, uint32_t remote_be, uint16_t port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in s;
    int mtu = -1;
    socklen_t len = sizeof(mtu);
    sin_fill(&s, local_be, 0);
    if (local_be != 0 && bind(fd, (struct sockaddr *)&s, sizeof(s)) != 0) goto out;
    sin_fill(&s, remote_be, port);
    if (connect(fd, (struct sockaddr *)&s, sizeof(s)) != 0) goto out;
    if (getsockopt(fd, IPPROTO_IP, IP_MTU, &mtu, &len) != 0) mtu = -1;
out:;
    int e = errno; close(fd); errno = e;
    return mtu;
}

ssize_t vs_udp_sendv(int fd, const void *iov, int iovcnt, uint32_t addr_be, uint16_t port) {
    struct sockaddr_in s;
    sin_fill(&s, addr_be, port);
    struct msghdr msg = { .msg_name = &s, .msg_namelen = sizeof(s),
                          .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t r;
    do { r = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return r;
}

ssize_t vs_udp_recv(int fd, void *buf, size_t len, uint32_t *from_be) {
    struct sockaddr_in s;
    socklen_t slen = sizeof(s);
    ssize_t r;
    do { r = recvfrom(fd, buf, len, MSG_DONTWAIT, (struct sockaddr *)&s, &slen); } while (r < 0 && errno == EINTR);
    *from_be = (r >= 0 && s.sin_family == AF_INET) ? s.sin_addr.s_addr : 0;
    return r;
}

int vs_udp_recv_batch(int fd, void *bufs, size_t buf_len, int n, int32_t *lengths, uint32_t *from_be) {
    enum { MAX = 64 };
    if (n > MAX) n = MAX;
    if (n <= 0) return 0;
    struct mmsghdr msgs[MAX];
    struct iovec iov[MAX];
    struct sockaddr_in from[MAX];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)n);
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = (char *)bufs + (size_t)i * buf_len;
        iov[i].iov_len = buf_len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
    }
    int r;
    do { r = recvmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT, NULL); } while (r < 0 && errno == EINTR);
    if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    for (int i = 0; i < r; i++) {
        // A datagram longer than the buffer was cut: report it as -1 (dropped, counted).
        lengths[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -1 : (int32_t)msgs[i].msg_len;
        from_be[i] = from[i].sin_family == AF_INET ? from[i].sin_addr.s_addr : 0;
    }
    return r;
}

int vs_udp_send_batch(int fd, const void *iov, const int32_t *iov_start, const int32_t *iov_count,
                      const uint32_t *addr_be, uint16_t port, int n, int *first_errno) {
    enum { MAX = 64 };
    if (n > MAX) n = MAX;
    struct mmsghdr msgs[MAX];
    struct sockaddr_in to[MAX];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        sin_fill(&to[i], addr_be[i], port);
        msgs[i].msg_hdr.msg_name = &to[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(to[i]);
        msgs[i].msg_hdr.msg_iov = (struct iovec *)iov + iov_start[i];
        msgs[i].msg_hdr.msg_iovlen = (size_t)iov_count[i];
    }
    int r;
    do { r = sendmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT | MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    *first_errno = r < n ? errno : 0;
    return r;
}
