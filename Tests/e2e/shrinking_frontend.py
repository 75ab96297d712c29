#!/usr/bin/env python3
"""A hostile vhost-user frontend for Tests/e2e/memory_shrink.sh (standard library only).

    shrinking_frontend.py SOCKET MEMFILE {tx|rx} [--hold SECONDS]

Connects to a switch port that listens on SOCKET (type vhostuser), hands it guest memory
that is a plain file MEMFILE (1 MiB, created here), sets up an RX and a TX split ring of
256 entries in it, and lets the rings start. Then it shrinks MEMFILE to 0 bytes under the
switch's mapping:
  tx  ... and kicks the TX ring: the switch's next read of that ring faults.
  rx  ... and does not kick: the switch faults when it next delivers a frame to the port.
It never touches the memory itself afterwards, and keeps the connection open (--hold,
default 30 s) so the switch, not a disconnect, must end the session. Prints "ready" when
the rings are set up, "shrunk" after the truncation, and "closed by the switch" if the
switch drops the connection while it holds it.
"""
import mmap
import os
import socket
import struct
import sys
import time

GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE = 1, 2, 3, 5
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_KICK, SET_VRING_CALL = 8, 9, 10, 12, 13
VERSION_1 = 1 << 32
SIZE = 1 << 20
QSIZE = 256
BASE = 0x1_0000_0000      # guest-physical and "user" address of the region (same here)


def send(sock, request, payload=b"", fds=()):
    header = struct.pack("<III", request, 0x1, len(payload))
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"<{len(fds)}i", *fds))] if fds else []
    sock.sendmsg([header + payload], anc)


def receive(sock):
    data = sock.recv(12)
    request, flags, size = struct.unpack("<III", data)
    return request, sock.recv(size) if size else b""


def main():
    path, memfile, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    hold = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--hold" else 30.0
    fd = os.open(memfile, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.ftruncate(fd, SIZE)
    mem = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(100):
        try:
            sock.connect(path)
            break
        except OSError:
            time.sleep(0.1)
    else:
        sys.exit(f"cannot connect to {path}")
    send(sock, GET_FEATURES)
    _, reply = receive(sock)
    offered = struct.unpack("<Q", reply)[0]
    send(sock, SET_OWNER)
    send(sock, SET_FEATURES, struct.pack("<Q", offered & VERSION_1))
    send(sock, SET_MEM_TABLE, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", BASE, SIZE, BASE, 0), [fd])
    # Queue q: descriptors at q * 64 KiB, avail at +16 KiB, used at +32 KiB; buffers from 512 KiB.
    kicks = []
    for q in (0, 1):
        ring = q * 0x10000
        if q == 0:   # RX: 256 writable 2 KiB buffers, all made available
            for i in range(QSIZE):
                struct.pack_into("<QIHH", mem, ring + 16 * i, BASE + 0x80000 + 2048 * (i % 128), 2048, 2, 0)
                struct.pack_into("<H", mem, ring + 0x4000 + 4 + 2 * i, i)
            struct.pack_into("<H", mem, ring + 0x4000 + 2, QSIZE)
        send(sock, SET_VRING_NUM, struct.pack("<II", q, QSIZE))
        send(sock, SET_VRING_BASE, struct.pack("<II", q, 0))
        send(sock, SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, BASE + ring, BASE + ring + 0x8000, BASE + ring + 0x4000, 0))
        kick = os.eventfd(0)
        call = os.eventfd(0)
        kicks.append(kick)
        send(sock, SET_VRING_CALL, struct.pack("<Q", q), [call])
        send(sock, SET_VRING_KICK, struct.pack("<Q", q), [kick])
    print("ready", flush=True)
    time.sleep(1.0)   # let the switch start the rings and poll them once
    mem.close()
    os.ftruncate(fd, 0)
    if mode == "tx":
        os.eventfd_write(kicks[1], 1)
    print("shrunk", flush=True)
    sock.settimeout(hold)
    try:
        if sock.recv(12) == b"":
            print("closed by the switch", flush=True)
    except (socket.timeout, OSError):
        pass


if __name__ == "__main__":
    main()
