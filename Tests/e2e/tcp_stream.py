#!/usr/bin/env python3
"""One bulk TCP transfer for the e2e tests, timed on this side (the host; no nc needed).

  tcp_stream.py recv PORT BYTES OUT      listen on PORT, accept one connection, read BYTES
                                         bytes (or until EOF) into OUT, then close
  tcp_stream.py send HOST PORT FILE      connect (retrying for 120 s while refused), send FILE,
                                         half-close, wait for the peer to close

Prints one line: "bytes=N md5=HEX seconds=S" (recv: first to last byte; send: connect to the
peer's close, so the time includes the receiver draining everything).
recv listens on IPv6 (any address) when TCP_STREAM_V6=1; send connects over IPv6 to a HOST
with a colon.
"""
import hashlib
import os
import socket
import sys
import time


def recv(port, expected, out):
    v6 = os.environ.get("TCP_STREAM_V6") == "1"
    srv = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::" if v6 else "0.0.0.0", port))
    srv.listen(1)
    srv.settimeout(300)
    conn, _ = srv.accept()
    conn.settimeout(120)
    md5 = hashlib.md5()
    n = 0
    first = last = None
    with open(out, "wb") as f:
        while n < expected:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            if first is None:
                first = time.monotonic()
            last = time.monotonic()
            n += len(chunk)
            md5.update(chunk)
            f.write(chunk)
    conn.close()
    srv.close()
    secs = (last - first) if first is not None else 0.0
    print(f"bytes={n} md5={md5.hexdigest()} seconds={secs:.3f}", flush=True)


def send(host, port, path):
    data = open(path, "rb").read()
    deadline = time.monotonic() + 120
    while True:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect((host, port))
            break
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    s.settimeout(120)
    t0 = time.monotonic()
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    secs = time.monotonic() - t0
    s.close()
    print(f"bytes={len(data)} md5={hashlib.md5(data).hexdigest()} seconds={secs:.3f}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "recv":
        recv(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 5 and sys.argv[1] == "send":
        send(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(__doc__)
