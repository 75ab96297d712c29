#!/usr/bin/env python3
"""compare_memory.py A B: the 4 KiB pages in which two guest memory dumps (QMP pmemsave)
differ. Prints "pages N differing D" and the first differing page numbers; exit 0 if none."""
import sys

PAGE = 4096
a, b = open(sys.argv[1], "rb"), open(sys.argv[2], "rb")
n, diff = 0, []
while True:
    x, y = a.read(PAGE), b.read(PAGE)
    if not x and not y:
        break
    if x != y:
        diff.append(n)
    n += 1
print("pages %d differing %d" % (n, len(diff)))
if diff:
    print("first differing pages (guest-physical / 4096):", " ".join("0x%x" % p for p in diff[:40]))
sys.exit(1 if diff else 0)
