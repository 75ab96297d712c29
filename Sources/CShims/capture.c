// Capture helpers: a socket-backed stdio stream for libpcap's pcap_dump_fopen, and the
// writer thread's wait (eventfd + peer hang-up) in one poll(2).
#define _GNU_SOURCE
#include "CShims.h"
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

uint64_t vs_realtime_ns(void) {
    struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static ssize_t socket_stream_write(void *cookie, const char *buf, size_t len) {
    int fd = (int)(intptr_t)cookie;
    size_t done = 0;
    while (done < len) {
        ssize_t n = send(fd, buf + done, len - done, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            return done > 0 ? (ssize_t)done : -1;
        }
        done += (size_t)n;
    }
    return (ssize_t)done;
}

static int socket_stream_close(void *cookie) { (void)cookie; return 0; }

FILE *vs_socket_stream(int fd) {
    cookie_io_functions_t io = { .read = NULL, .write = socket_stream_write, .seek = NULL,
                                 .close = socket_stream_close };
    return fopencookie((void *)(intptr_t)fd, "w", io);
}

int vs_capture_wait(int efd, int peer, int timeout_ms) {
    struct pollfd p[2] = { { .fd = efd, .events = POLLIN }, { .fd = peer, .events = POLLIN | POLLRDHUP } };
    int n = poll(p, peer >= 0 ? 2 : 1, timeout_ms);
    if (n <= 0) return 0;
    if (peer >= 0 && p[1].revents) {
        if (p[1].revents & (POLLHUP | POLLERR | POLLRDHUP)) return 2;
        char c;
        ssize_t r = recv(peer, &c, 1, MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) return 2;
        // A client has nothing to say during a capture: stray bytes are discarded.
    }
    if (p[0].revents & POLLIN) { vs_eventfd_drain(efd); return 1; }
    return 0;
}
