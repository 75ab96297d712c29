#!/usr/bin/env python3
"""Frontends that stall mid-message, and one that never reads its replies (issue 21, part 2).

    stalled_frontends.py CONTROL_SOCK SECONDS STALL_SOCK... [--deaf SOCK] [--until FILE]

For SECONDS (or until FILE exists), keeps one connection open on each STALL_SOCK (vhost-user ports of type
vhostuser: the switch listens) that has sent part of a message and then nothing: even
sockets get 5 of the 12 header bytes, odd ones a whole SET_FEATURES header and 3 of its 8
payload bytes. When the switch cuts one, it connects again at once and stalls again, so all
of them stay stalled all the time. With --deaf, one more frontend sends GET_FEATURES
requests without end and never reads a reply, until the switch closes it.

Meanwhile it sends `show` on the control socket every 100 ms and times the answer. Prints:
    cuts N                     connections the switch closed
    deaf closed-after BYTES    (with --deaf) requests sent before the switch closed it
    show samples N median MS worst MS
"""
import json
import os
import selectors
import socket
import struct
import sys
import time

SET_FEATURES, GET_FEATURES = 2, 1


def header(request, size):
    return struct.pack("<III", request, 1, size)


def stall(path, i):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    if i % 2 == 0:
        s.sendall(header(SET_FEATURES, 8)[:5])
    else:
        s.sendall(header(SET_FEATURES, 8) + b"\x01\x02\x03")
    s.setblocking(False)
    return s


def show_latency(control):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(10)
    t0 = time.monotonic()
    c.connect(control)
    c.sendall(b'{"command":"show"}\n')
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = c.recv(65536)
        if not chunk:
            break
        buf += chunk
    elapsed = time.monotonic() - t0
    c.close()
    if not json.loads(buf).get("ok"):
        raise SystemExit("show failed: %r" % buf[:200])
    return elapsed * 1000


def main():
    args = sys.argv[1:]
    def option(name):
        if name not in args:
            return None
        k = args.index(name)
        value = args[k + 1]
        del args[k:k + 2]
        return value
    deaf_path, until = option("--deaf"), option("--until")
    control, seconds, paths = args[0], float(args[1]), args[2:]
    sel = selectors.DefaultSelector()
    for i, p in enumerate(paths):
        sel.register(stall(p, i), selectors.EVENT_READ, (p, i))
    deaf, deaf_sent, deaf_closed = None, 0, None
    if deaf_path:
        deaf = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deaf.connect(deaf_path)
        deaf.setblocking(False)
        burst = header(GET_FEATURES, 0) * 256
    cuts, samples = 0, []
    end = time.monotonic() + seconds
    next_show = time.monotonic()
    while time.monotonic() < end and not (until and os.path.exists(until)):
        for key, _ in sel.select(timeout=0.02):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionError:
                data = b""
            if not data:   # the switch closed it: stall again on a new connection
                sel.unregister(s)
                s.close()
                cuts += 1
                p, i = key.data
                sel.register(stall(p, i), selectors.EVENT_READ, key.data)
        if deaf is not None and deaf_closed is None:
            try:
                deaf_sent += deaf.send(burst)
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                deaf_closed = deaf_sent
        if time.monotonic() >= next_show:
            samples.append(show_latency(control))
            next_show = time.monotonic() + 0.1
        sys.stdout.flush()
    print("cuts", cuts)
    if deaf_path:
        print("deaf closed-after", deaf_closed if deaf_closed is not None else "never")
    samples.sort()
    print("show samples %d median %.1f worst %.1f" % (len(samples), samples[len(samples) // 2], samples[-1]))


if __name__ == "__main__":
    main()
