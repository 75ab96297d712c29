// UDP shims for VXLAN tunnel ports. Addresses travel as 16 bytes laid out as a struct
// in6_addr (IPv4 as IPv4-mapped ::ffff:a.b.c.d), so Swift never builds a sockaddr; a mapped
// address means an AF_INET socket and sockaddr_in, any other an AF_INET6 one (a tunnel uses
// one family). The older uint32_t helpers (vs_resolve4, vs_udp_open) serve tests. Policy
// (which ports, error messages) lives in Swift (Sources/Switch/VxlanSockets.swift).
#define _GNU_SOURCE
#include "CShims.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
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

static int is_v4(const void *addr16) {
    return IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)addr16);
}

static uint32_t v4_of(const void *addr16) {
    uint32_t a;
    memcpy(&a, (const uint8_t *)addr16 + 12, 4);
    return a;
}

/// A sockaddr_in or sockaddr_in6 for addr16:port in `ss`; its length.
static socklen_t sa_fill(struct sockaddr_storage *ss, const void *addr16, uint16_t port) {
    if (is_v4(addr16)) {
        sin_fill((struct sockaddr_in *)ss, v4_of(addr16), port);
        return sizeof(struct sockaddr_in);
    }
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    memset(s6, 0, sizeof(*s6));
    s6->sin6_family = AF_INET6;
    memcpy(&s6->sin6_addr, addr16, 16);
    s6->sin6_port = htons(port);
    return sizeof(struct sockaddr_in6);
}

/// The 16-byte form of a received sockaddr (zeros for anything else).
static void sa_take(const struct sockaddr_storage *ss, void *addr16) {
    uint8_t *o = addr16;
    memset(o, 0, 16);
    if (ss->ss_family == AF_INET) {
        o[10] = 0xff;
        o[11] = 0xff;
        memcpy(o + 12, &((const struct sockaddr_in *)ss)->sin_addr.s_addr, 4);
    } else if (ss->ss_family == AF_INET6) {
        memcpy(o, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
    }
}

int vs_resolve(const char *host, void *addr16) {
    struct in6_addr a6;
    struct in_addr a4;
    uint8_t *o = addr16;
    if (inet_pton(AF_INET6, host, &a6) == 1) { memcpy(o, &a6, 16); return 0; }
    memset(o, 0, 16);
    o[10] = 0xff;
    o[11] = 0xff;
    if (inet_pton(AF_INET, host, &a4) == 1) { memcpy(o + 12, &a4.s_addr, 4); return 0; }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM }, *res = NULL;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0) return rc;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, res->ai_addr, res->ai_addrlen < sizeof(ss) ? res->ai_addrlen : sizeof(ss));
    sa_take(&ss, addr16);
    freeaddrinfo(res);
    return 0;
}

int vs_addr_format(const void *addr16, char *out, int len) {
    if (is_v4(addr16)) {
        struct in_addr a = { .s_addr = v4_of(addr16) };
        return inet_ntop(AF_INET, &a, out, (socklen_t)len) ? 0 : -1;
    }
    return inet_ntop(AF_INET6, addr16, out, (socklen_t)len) ? 0 : -1;
}

int vs_udp_open_addr(const void *addr16, uint16_t port, int rcvbuf) {
    int v4 = is_v4(addr16);
    int fd = socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    // IPv6 sockets take IPv6 only: an IPv4 tunnel on the same UDP port has its own socket.
    if (!v4 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
        int e = errno; close(fd); errno = e;
        return -1;
    }
    if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0)
        (void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_storage ss;
    socklen_t len = sa_fill(&ss, addr16, port);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        int e = errno; close(fd); errno = e;
        return -1;
    }
    return fd;
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
    struct sockaddr_storage s;
    socklen_t len = sizeof(s);
    if (getsockname(fd, (struct sockaddr *)&s, &len) != 0) return -1;
    if (s.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&s)->sin_port);
    if (s.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&s)->sin6_port);
    return -1;
}

int vs_udp_multicast_join(int fd, const void *group16, int ifindex) {
    int zero = 0;
    if (is_v4(group16)) {
        struct ip_mreqn m;
        memset(&m, 0, sizeof(m));
        m.imr_multiaddr.s_addr = v4_of(group16);
        m.imr_ifindex = ifindex;
        if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof(m)) != 0) return -1;
        (void)setsockopt(fd, IPPROTO_IP, IP_MULTICAST_ALL, &zero, sizeof(zero));
        return 0;
    }
    struct ipv6_mreq m;
    memset(&m, 0, sizeof(m));
    memcpy(&m.ipv6mr_multiaddr, group16, 16);
    m.ipv6mr_interface = (unsigned)ifindex;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_JOIN_GROUP, &m, sizeof(m)) != 0) return -1;
#ifndef IPV6_MULTICAST_ALL
#define IPV6_MULTICAST_ALL 29
#endif
    (void)setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_ALL, &zero, sizeof(zero));
    return 0;
}

int vs_udp_multicast_leave(int fd, const void *group16, int ifindex) {
    if (is_v4(group16)) {
        struct ip_mreqn m;
        memset(&m, 0, sizeof(m));
        m.imr_multiaddr.s_addr = v4_of(group16);
        m.imr_ifindex = ifindex;
        return setsockopt(fd, IPPROTO_IP, IP_DROP_MEMBERSHIP, &m, sizeof(m));
    }
    struct ipv6_mreq m;
    memset(&m, 0, sizeof(m));
    memcpy(&m.ipv6mr_multiaddr, group16, 16);
    m.ipv6mr_interface = (unsigned)ifindex;
    return setsockopt(fd, IPPROTO_IPV6, IPV6_LEAVE_GROUP, &m, sizeof(m));
}

int vs_udp_multicast_sender(int fd, int v6, int ifindex, int ttl) {
    int off = 0;
    if (v6) {
        unsigned idx = (unsigned)ifindex;
        if (ifindex != 0 && setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &idx, sizeof(idx)) != 0) return -1;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &ttl, sizeof(ttl)) != 0) return -1;
        return setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &off, sizeof(off));
    }
    struct ip_mreqn m;
    memset(&m, 0, sizeof(m));
    m.imr_ifindex = ifindex;
    if (ifindex != 0 && setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &m, sizeof(m)) != 0) return -1;
    if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof(ttl)) != 0) return -1;
    return setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &off, sizeof(off));
}

int vs_udp_path_mtu(const void *local16, const void *remote16, uint16_t port) {
    int v4 = is_v4(remote16);
    int fd = socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_storage ss;
    socklen_t len;
    int mtu = -1;
    socklen_t mlen = sizeof(mtu);
    static const uint8_t any6[16];
    int local_any = v4 ? v4_of(local16) == 0 : memcmp(local16, any6, 16) == 0;
    if (!local_any) {
        len = sa_fill(&ss, local16, 0);
        if (bind(fd, (struct sockaddr *)&ss, len) != 0) goto out;
    }
    len = sa_fill(&ss, remote16, port);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) goto out;
    if (getsockopt(fd, v4 ? IPPROTO_IP : IPPROTO_IPV6, v4 ? IP_MTU : IPV6_MTU, &mtu, &mlen) != 0) mtu = -1;
out:;
    int e = errno; close(fd); errno = e;
    return mtu;
}

ssize_t vs_udp_sendv(int fd, const void *iov, int iovcnt, const void *addr16, uint16_t port) {
    struct sockaddr_storage s;
    socklen_t len = sa_fill(&s, addr16, port);
    struct msghdr msg = { .msg_name = &s, .msg_namelen = len,
                          .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
    ssize_t r;
    do { r = sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return r;
}

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif

int vs_udp_enable_gro(int fd) {
    int one = 1;
    return setsockopt(fd, SOL_UDP, UDP_GRO, &one, sizeof(one));
}

int vs_udp_recv_batch(int fd, void *bufs, size_t buf_len, int n, int32_t *lengths, void *from16) {
    return vs_udp_recv_batch_gro(fd, bufs, buf_len, n, lengths, NULL, from16);
}

int vs_udp_recv_batch_gro(int fd, void *bufs, size_t buf_len, int n, int32_t *lengths, int32_t *segment_sizes,
                          void *from16) {
    enum { MAX = 64 };
    if (n > MAX) n = MAX;
    if (n <= 0) return 0;
    struct mmsghdr msgs[MAX];
    struct iovec iov[MAX];
    struct sockaddr_storage from[MAX];
    // One cmsg per message: UDP_GRO's int (the size of the coalesced datagrams).
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control[MAX];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)n);
    for (int i = 0; i < n; i++) {
        iov[i].iov_base = (char *)bufs + (size_t)i * buf_len;
        iov[i].iov_len = buf_len;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
        if (segment_sizes) {
            msgs[i].msg_hdr.msg_control = control[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof(control[i].buf);
        }
    }
    int r;
    do { r = recvmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT, NULL); } while (r < 0 && errno == EINTR);
    if (r < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
    for (int i = 0; i < r; i++) {
        // A datagram longer than the buffer was cut: report it as -1 (dropped, counted).
        lengths[i] = (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) ? -1 : (int32_t)msgs[i].msg_len;
        sa_take(&from[i], (uint8_t *)from16 + 16 * (size_t)i);
        if (!segment_sizes) continue;
        segment_sizes[i] = 0;
        if (msgs[i].msg_hdr.msg_flags & MSG_CTRUNC) continue;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c; c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
                int size;
                memcpy(&size, CMSG_DATA(c), sizeof(size));
                segment_sizes[i] = size > 0 ? size : 0;
            }
        }
    }
    return r;
}

ssize_t vs_udp_sendv_gso(int fd, const void *iov, int iovcnt, const void *addr16, uint16_t port, uint16_t segment_size) {
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) total += ((const struct iovec *)iov)[i].iov_len;
    int r = vs_udp_send_gso(fd, iov, iovcnt, iovcnt, addr16, port, segment_size);
    return r == 1 ? (ssize_t)total : (r < 0 ? r : -EAGAIN);
}

int vs_udp_send_gso(int fd, const void *iov, int iovcnt, int iov_per_message, const void *addr16, uint16_t port,
                    uint16_t segment_size) {
    enum { MAX = 64 };
    if (iovcnt <= 0 || iov_per_message <= 0) return 0;
    int n = (iovcnt + iov_per_message - 1) / iov_per_message;
    if (n > MAX) return -EINVAL;
    struct sockaddr_storage s;
    socklen_t len = sa_fill(&s, addr16, port);
    struct mmsghdr msgs[MAX];
    union { char buf[CMSG_SPACE(sizeof(uint16_t))]; struct cmsghdr align; } control[MAX];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)n);
    memset(control, 0, sizeof(control[0]) * (size_t)n);
    for (int i = 0; i < n; i++) {
        struct msghdr *m = &msgs[i].msg_hdr;
        int first = i * iov_per_message;
        m->msg_name = &s;
        m->msg_namelen = len;
        m->msg_iov = (struct iovec *)iov + first;
        m->msg_iovlen = (size_t)(iovcnt - first < iov_per_message ? iovcnt - first : iov_per_message);
        m->msg_control = control[i].buf;
        m->msg_controllen = sizeof(control[i].buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        memcpy(CMSG_DATA(c), &segment_size, sizeof(segment_size));
    }
    int r;
    do { r = sendmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT | MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

int vs_udp_send_batch(int fd, const void *iov, const int32_t *iov_start, const int32_t *iov_count,
                      const void *addr16, uint16_t port, int n, int *first_errno) {
    enum { MAX = 64 };
    if (n > MAX) n = MAX;
    struct mmsghdr msgs[MAX];
    struct sockaddr_storage to[MAX];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)(n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        msgs[i].msg_hdr.msg_namelen = sa_fill(&to[i], (const uint8_t *)addr16 + 16 * (size_t)i, port);
        msgs[i].msg_hdr.msg_name = &to[i];
        msgs[i].msg_hdr.msg_iov = (struct iovec *)iov + iov_start[i];
        msgs[i].msg_hdr.msg_iovlen = (size_t)iov_count[i];
    }
    int r;
    do { r = sendmmsg(fd, msgs, (unsigned)n, MSG_DONTWAIT | MSG_NOSIGNAL); } while (r < 0 && errno == EINTR);
    *first_errno = r < n ? errno : 0;
    return r;
}
