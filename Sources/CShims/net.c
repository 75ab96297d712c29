// Network-device shims: TAP setup and link state need ioctl(2), which Swift cannot call
// (variadic). Policy (names, error messages) lives in Swift.
#define _GNU_SOURCE
#include "CShims.h"
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <net/if.h>

static int ifreq_socket(struct ifreq *ifr, const char *name) {
    if (strlen(name) >= IFNAMSIZ) { errno = ENAMETOOLONG; return -1; }
    memset(ifr, 0, sizeof(*ifr));
    strncpy(ifr->ifr_name, name, IFNAMSIZ - 1);
    return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

int vs_if_set_up(const char *name, int up) {
    struct ifreq ifr;
    int s = ifreq_socket(&ifr, name);
    if (s < 0) return -1;
    int rc = ioctl(s, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        if (up) ifr.ifr_flags |= IFF_UP; else ifr.ifr_flags &= ~IFF_UP;
        rc = ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    int e = errno; close(s); errno = e;
    return rc;
}

int vs_if_mtu(const char *name) {
    struct ifreq ifr;
    int s = ifreq_socket(&ifr, name);
    if (s < 0) return -1;
    int rc = ioctl(s, SIOCGIFMTU, &ifr);
    int e = errno; close(s); errno = e;
    return rc < 0 ? -1 : ifr.ifr_mtu;
}

int vs_if_exists(const char *name) { return if_nametoindex(name) != 0; }

int vs_socketpair_seqpacket(int fds[2]) {
    return socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds);
}
