#!/usr/bin/env python3
"""Tests/e2e/pcapng_blocks.py FILE: the blocks of a pcapng file, one line each, checked.

    SHB
    IDB vm1 vhostuserclient /tmp/vm1.sock
    EPB 0 in        (interface id, direction)
    ISB 0 recv=12 drop=0 accept=12

Exits 1 on a malformed file (lengths that differ, misalignment, bytes after the last block).
Little-endian files only (what vswitch writes on x86).
"""
import struct
import sys


def options(body, at):
    out = {}
    while at + 4 <= len(body):
        code, length = struct.unpack_from("<HH", body, at)
        if code == 0:
            return out
        out.setdefault(code, []).append(body[at + 4:at + 4 + length])
        at += 4 + ((length + 3) & ~3)
    raise SystemExit("options without opt_endofopt")


def main(path):
    data = open(path, "rb").read()
    i = 0
    while i < len(data):
        btype, total = struct.unpack_from("<II", data, i)
        if total % 4 or total < 12 or i + total > len(data):
            raise SystemExit(f"bad block length {total} at {i}")
        if struct.unpack_from("<I", data, i + total - 4)[0] != total:
            raise SystemExit(f"trailing length differs at {i}")
        body = data[i + 8:i + total - 4]
        if btype == 0x0A0D0D0A:
            if struct.unpack_from("<I", body, 0)[0] != 0x1A2B3C4D:
                raise SystemExit("bad byte-order magic")
            print("SHB")
        elif btype == 1:
            o = options(body, 8)
            name = o.get(2, [b"?"])[0].decode()
            desc = o.get(3, [b""])[0].decode()
            print(f"IDB {name} {desc}".rstrip())
        elif btype == 6:
            iface = struct.unpack_from("<I", body, 0)[0]
            caplen = struct.unpack_from("<I", body, 12)[0]
            o = options(body, 20 + ((caplen + 3) & ~3))
            flags = struct.unpack("<I", o[2][0])[0] if 2 in o else 0
            print(f"EPB {iface} {['none', 'in', 'out', '?'][flags & 3]}")
        elif btype == 5:
            iface = struct.unpack_from("<I", body, 0)[0]
            o = options(body, 12)
            v = {c: struct.unpack("<Q", o[c][0])[0] for c in (4, 5, 6) if c in o}
            print(f"ISB {iface} recv={v.get(4)} drop={v.get(5)} accept={v.get(6)}")
        else:
            print(f"block {btype:#x}")
        i += total


if __name__ == "__main__":
    main(sys.argv[1])
