#!/usr/bin/env python3
"""One QMP command to a QEMU started with -qmp unix:SOCK,server=on,wait=off.

  qmp.py SOCK COMMAND [JSON-ARGUMENTS] [--wait-event EVENT [SECONDS]]

Prints the command's "return" as JSON and exits 0, or prints the error and exits 1. With
--wait-event, then waits for that event (default 30 s) and prints it; exit 3 on timeout.
Events that arrive before the command's reply are kept, so a quick event is not missed.
"""
import json
import socket
import sys
import time


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        self.events = []
        self.read()                                   # greeting
        self.call("qmp_capabilities")

    def read(self, timeout=30.0):
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("QEMU closed the QMP socket")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, command, arguments=None):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self.read()
            if "event" in r:
                self.events.append(r)
                continue
            return r

    def wait_event(self, name, seconds):
        deadline = time.time() + seconds
        while True:
            for e in self.events:
                if e.get("event") == name:
                    return e
            left = deadline - time.time()
            if left <= 0:
                return None
            try:
                self.events.append(self.read(left))
            except socket.timeout:
                return None


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    path, command, rest = argv[1], argv[2], argv[3:]
    args = None
    if rest and not rest[0].startswith("--"):
        args = json.loads(rest.pop(0))
    event, seconds = None, 30.0
    if rest and rest[0] == "--wait-event":
        event = rest[1]
        if len(rest) > 2:
            seconds = float(rest[2])
    q = Qmp(path)
    r = q.call(command, args)
    if "error" in r:
        print(json.dumps(r["error"]))
        return 1
    print(json.dumps(r.get("return")))
    if event:
        e = q.wait_event(event, seconds)
        if e is None:
            print(f"no {event} event within {seconds:.0f} s")
            return 3
        print(json.dumps(e))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
