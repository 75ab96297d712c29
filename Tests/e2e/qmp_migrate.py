#!/usr/bin/env python3
"""The migration test's QMP client (QEMU serves one QMP client at a time, so one session
starts, watches and, if asked, cancels a migration).

    qmp_migrate.py SOCK cmd NAME [JSON-ARGUMENTS]   run one command, print its "return" as JSON
    qmp_migrate.py SOCK migrate URI [--bandwidth BYTES_PER_S] [--timeout S] [--cancel-after S]
        start a precopy migration and wait for it to end (with --cancel-after, send
        migrate_cancel after S seconds); prints "status completed total-time MS downtime MS"
        (or failed/cancelled) and exits 0 only when it completed
    qmp_migrate.py SOCK status                      print query-migrate's status ("none" if never)
"""
import json
import socket
import sys
import time


class QMP:
    def __init__(self, path, timeout=10):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.buf = b""
        self.read()  # greeting
        self.cmd("qmp_capabilities")

    def read(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise SystemExit("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, args=None):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.s.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self.read()
            if "return" in r:
                return r["return"]
            if "error" in r:
                raise SystemExit("QMP %s: %s" % (name, r["error"].get("desc", r["error"])))
            # an event: ignore


def main():
    path, what = sys.argv[1], sys.argv[2]
    q = QMP(path)
    if what == "cmd":
        args = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
        print(json.dumps(q.cmd(sys.argv[3], args)))
    elif what == "status":
        print(q.cmd("query-migrate").get("status", "none"))
    elif what == "migrate":
        uri = sys.argv[3]
        rest = sys.argv[4:]
        bandwidth = int(rest[rest.index("--bandwidth") + 1]) if "--bandwidth" in rest else 1 << 30
        timeout = float(rest[rest.index("--timeout") + 1]) if "--timeout" in rest else 300
        cancel_at = time.monotonic() + float(rest[rest.index("--cancel-after") + 1]) if "--cancel-after" in rest else None
        q.cmd("migrate-set-parameters", {"max-bandwidth": bandwidth})
        q.cmd("migrate", {"uri": uri})
        deadline = time.monotonic() + timeout
        while True:
            if cancel_at is not None and time.monotonic() >= cancel_at:
                q.cmd("migrate_cancel")
                cancel_at = None
            info = q.cmd("query-migrate")
            status = info.get("status")
            if status in ("completed", "failed", "cancelled"):
                print("status %s total-time %s downtime %s" % (status, info.get("total-time", "?"), info.get("downtime", "?")))
                if status == "failed" and "error-desc" in info:
                    print("error", info["error-desc"])
                sys.exit(0 if status == "completed" else 1)
            if time.monotonic() > deadline:
                print("status timeout")
                sys.exit(1)
            time.sleep(0.1)
    else:
        raise SystemExit("unknown action " + what)


if __name__ == "__main__":
    main()
