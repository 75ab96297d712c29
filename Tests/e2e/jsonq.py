#!/usr/bin/env python3
"""Small queries on `vswitch ... --format json` output (read from stdin) for the e2e tests.

The queries search the whole document for objects of the right shape, so they work whether
the CLI prints the daemon's `result`, the whole response, or a bare list:

  jsonq.py fdb            one line per FDB entry:   <mac lower-case> <port> <vlan>
  jsonq.py stats          one line per port:        <port> <rxPackets> <txPackets> <rxBytes> <txBytes>
  jsonq.py ports          one line per port:        <name> <type> <state> <link>
  jsonq.py check          exit 0 if stdin is valid JSON
Both camelCase (rxPackets) and snake_case (rx_packets) keys are accepted.
"""
import json
import sys


def walk(o):
    if isinstance(o, dict):
        yield o
        for v in o.values():
            yield from walk(v)
    elif isinstance(o, list):
        for v in o:
            yield from walk(v)


def get(d, *names, default=None):
    for n in names:
        if n in d:
            return d[n]
    return default


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    what = sys.argv[1]
    text = sys.stdin.read()
    try:
        doc = json.loads(text)
    except ValueError as e:
        print(f"jsonq: not JSON ({e}): {text[:200]!r}", file=sys.stderr)
        return 1
    if what == "check":
        return 0
    for d in walk(doc):
        if what == "fdb" and "mac" in d:
            print(str(d["mac"]).lower(), get(d, "port", "portName", "port_name", default="?"),
                  get(d, "vlan", default=0))
        elif what == "stats" and "port" in d and any(k in d for k in ("rxPackets", "rx_packets")):
            print(d["port"], get(d, "rxPackets", "rx_packets", default=0), get(d, "txPackets", "tx_packets", default=0),
                  get(d, "rxBytes", "rx_bytes", default=0), get(d, "txBytes", "tx_bytes", default=0))
        elif what == "ports" and "name" in d and "state" in d:
            print(d["name"], get(d, "type", default="?"), d["state"], get(d, "link", default="?"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
