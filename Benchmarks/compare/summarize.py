#!/usr/bin/env python3
"""The summary of Benchmarks/compare/run (medians, ratios, RSS, idle test) from its results CSV.

    Benchmarks/compare/summarize.py results-DATE.csv [MORE.csv ...]
        [--systems vswitch,ovs,...] [--sizes 64,1518] [--idle-seconds N] [--idle-cpu-text TEXT]

Prints what `run` prints at the end of a session; `run` passes the options for its session.
For an older file they come from the file: systems and sizes in the order they first appear,
the idle test's length from its row's seconds, "< X" for an idle CPU of 0.00 (below the
resolution of /proc/PID/stat). A file `run` appended several sessions to is summarised as one.
Several files are summarised one after the other, each after a "==> FILE <==" line.
Numbers are read, compared and printed as the awk (mawk) that this replaces did.
"""

import argparse
import math
import os
import re
import sys

# system name (--systems) -> label (the CSV's system column)
LABELS = {"vswitch": "vswitch", "ovs": "ovs-dpdk", "testpmd": "testpmd-vhost",
          "vxlan": "vswitch-vxlan", "baseline": "vswitch-base"}
# (numerator, denominator) of the ratios, in the order printed; vxlan: tunnel / vhost-to-vhost
RATIOS = [("vswitch", "ovs-dpdk"), ("vswitch", "testpmd-vhost"),
          ("vswitch-vxlan", "vswitch"), ("vswitch", "vswitch-base")]
FOOTER = """
switch busy: vswitch = TSC cycles in forwarding passes that moved frames / cycles awake (dp-stats;
  busy cycles/pkt = TSC cycles of those passes per frame); ovs-dpdk =
  processing cycles share (pmd-stats-show); testpmd-vhost = busy cycles share (--record-core-cycles).
fwd cpu: CPU time of the forwarding thread / wall time. cycles/pkt: forwarding thread's cycles
  (CPU time x TSC, idle polling included) per packet forwarded, comparable across the systems.
gen busy: the generator's busy cycles share: near 100% = generator-bound. See Benchmarks/README.md.
"""

# --------------------------------------------------------------------------------------------
# awk's view of numbers

_NUM = re.compile(r"""[ \t\n\r\f\v]*([-+]?(?:
      0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][-+]?[0-9]+)?
    | (?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?
    | inf(?:inity)? | nan ))""", re.VERBOSE | re.IGNORECASE)


def _strtod(s):
    """(value, characters used) of the longest number at the start of s, as C's strtod."""
    m = _NUM.match(s)
    if not m:
        return 0.0, 0
    t = m.group(1)
    body = t.lstrip("+-")
    if body[:2].lower() == "0x":
        v = float.fromhex(body)
    else:
        v = float(body)
    return (-v if t.startswith("-") else v), m.end()


def num(s):
    """awk's s + 0: the number at the start of s, 0 when there is none."""
    return _strtod(s)[0]


def looks_numeric(s):
    """A field awk compares as a number (all of it, blanks aside, is a number)."""
    value, used = _strtod(s)
    return used > 0 and s[used:].strip(" \t\n\r\f\v") == ""


def greater_than_zero(field):
    """awk's FIELD > 0 for a field (None: an array element that was never set)."""
    if field is None:
        return False
    return num(field) > 0 if looks_numeric(field) else field > "0"


def awk_str(x):
    """A number as awk's %s prints it: an integer as such, else CONVFMT %.6g."""
    if math.isfinite(x) and x == int(x) and -2147483647 <= x <= 2147483647:
        return "%d" % x
    return "%.6g" % x


# --------------------------------------------------------------------------------------------
# statistics


def median(values):
    """The middle value, or the mean of the two middle ones; None for no values."""
    a = sorted(values)
    n = len(a)
    if n == 0:
        return None
    return a[(n - 1) // 2] if n % 2 else (a[n // 2 - 1] + a[n // 2]) / 2


def column_median(rows, column):
    """Median of a column over Rows, empty and "-" values left out."""
    return median([num(x) for x in (r.get(column) for r in rows) if x != "" and x != "-"])


def ratio(a, b):
    """a / b as "%.2f"; "-" when b is missing or not above 0, or a is missing."""
    if b is None or not b > 0 or a is None:
        return "-"
    return "%.2f" % (a / b)


def quotient(a, b):
    """a / b as " %.2f", and as mawk prints a division by 0 (a field that is no number)."""
    if b == 0:
        return " inf" if a > 0 else " -inf" if a < 0 else " -nan"
    return " %.2f" % (a / b)


def fmt(spec, x):
    return "-" if x is None else spec % x


# --------------------------------------------------------------------------------------------
# the CSV


class Row:
    def __init__(self, col, fields):
        self.col, self.fields = col, fields

    def get(self, column):
        i = self.col.get(column)
        return self.fields[i] if i is not None and i < len(self.fields) else ""


class Results:
    """The rows of one CSV as run writes them: a header line, then comma-separated values
    (run has already turned commas inside values into ';', so there is no quoting)."""

    def __init__(self, text):
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        self.col = {}
        for i, name in enumerate(lines[0].split(",") if lines else []):
            self.col[name] = i
        self.runs = {}  # (label, size) -> [Row] in file order
        self.by_round = {}  # (label, size, round) -> mpps (the last one)
        self.rounds = set()
        self.disturbed = {}
        self.problems = {}
        self.systems_seen, self.sizes_seen = [], []
        self.idle = None  # the last idle row
        for line in lines[1:]:
            row = Row(self.col, line.split(","))
            kind = row.get("kind")
            if kind == "idle":
                self.idle = row
            elif kind == "run":
                s, z = row.get("system"), row.get("size_bytes")
                self.runs.setdefault((s, z), []).append(row)
                if s not in self.systems_seen:
                    self.systems_seen.append(s)
                if z not in self.sizes_seen:
                    self.sizes_seen.append(z)
                if row.get("mpps") != "":
                    self.by_round[s, z, row.get("round")] = row.get("mpps")
                    self.rounds.add(row.get("round"))
                if row.get("disturbed") != "":
                    self.disturbed[s, z] = self.disturbed.get((s, z), 0) + 1
                if row.get("note") != "":
                    self.problems[s, z] = self.problems.get((s, z), 0) + 1

    def systems(self):
        """The --systems names of the labels in the file, in the order they first appear."""
        names = {label: name for name, label in LABELS.items()}
        return [names[s] for s in self.systems_seen if s in names]

    def idle_seconds(self):
        """--idle-seconds: the idle row's measured window is that plus a few milliseconds."""
        if self.idle is None:
            return ""
        v, used = _strtod(self.idle.get("seconds"))
        return "%d" % math.floor(v) if used and math.isfinite(v) else "-"

    def idle_cpu_text(self, idle_seconds):
        """run's text for an idle CPU of 0 ticks: "< the resolution"."""
        if self.idle is None or self.idle.get("idle_cpu_pct") != "0.00":
            return ""
        secs = num(idle_seconds)
        if secs <= 0:
            return ""
        return "< %.2f" % (100 / os.sysconf("SC_CLK_TCK") / secs)


def summarize(text, systems=None, sizes=None, idle_seconds=None, idle_cpu_text=None):
    """The summary run prints for a CSV's text; None: take it from the file."""
    res = Results(text)
    systems = res.systems() if systems is None else systems
    sizes = res.sizes_seen if sizes is None else sizes
    idle_seconds = res.idle_seconds() if idle_seconds is None else idle_seconds
    idle_cpu_text = res.idle_cpu_text(idle_seconds) if idle_cpu_text is None else idle_cpu_text

    out = ["", "== Medians (closed loop; Mpps = Rx-pps of both generator ports, summed)",
           "%-6s %-14s %7s %7s %12s %10s %11s %9s %5s" % (
               "size", "system", "Mpps", "Gbps", "switch busy", "fwd cpu", "cycles/pkt", "gen busy", "runs")]
    med_mpps = {}
    for z in sizes:
        for name in systems:
            s = LABELS.get(name, "")
            rows = res.runs.get((s, z))
            if not rows:
                continue
            m = med_mpps[s, z] = column_median(rows, "mpps")
            extra = ""
            if res.disturbed.get((s, z)):
                extra += " (%d disturbed)" % res.disturbed[s, z]
            if res.problems.get((s, z)):
                extra += " (%d with problems)" % res.problems[s, z]
            out.append("%-6s %-14s %7s %7s %11s%% %9s%% %11s %8s%% %5d%s" % (
                z + "B", s, fmt("%.2f", m), fmt("%.2f", column_median(rows, "gbps")),
                fmt("%.0f", column_median(rows, "switch_busy_pct")),
                fmt("%.0f", column_median(rows, "switch_cpu_pct")),
                fmt("%.0f", column_median(rows, "switch_cycles_per_pkt")),
                fmt("%.0f", column_median(rows, "gen_busy_pct")), len(rows), extra))

    out += ["", "== Ratios (ratio of the medians; per-round ratios in brackets)"]
    for z in sizes:
        for a, o in RATIOS:
            if not res.runs.get((a, z)) or not res.runs.get((o, z)):
                continue
            per = ""
            for r in map(str, range(1, 1001)):
                x, y = res.by_round.get((a, z, r), ""), res.by_round.get((o, z, r))
                if r in res.rounds and x != "" and greater_than_zero(y):
                    per += quotient(num(x), num(y))
            out.append("%-6s %s/%-14s %6s   [%s ]" % (
                z + "B", a, o, ratio(med_mpps.get((a, z)), med_mpps.get((o, z))), per))

    rss = [num(x) for z in sizes for x in (r.get("rss_kb") for r in res.runs.get(("vswitch", z), []))
           if x != ""]
    if rss:
        out += ["", "== vswitchd RSS at the end of its measured windows: median %s kB (%d runs)" % (
            awk_str(median(rss)), len(rss))]
    if res.idle is not None:
        icpu, irss = res.idle.get("idle_cpu_pct"), res.idle.get("rss_kb")
        if icpu != "" or irss != "":
            out.append("== vswitchd idle (2 connected testpmd ports, no traffic, %s s): "
                       "CPU %s%% of one CPU, RSS %s kB%s" % (
                           idle_seconds, idle_cpu_text or icpu or "-", irss or "-",
                           "  DISTURBED" if res.idle.get("disturbed") != "" else ""))
    return "\n".join(out) + "\n" + FOOTER


def _list(text):
    return [v for v in re.split(r"[,\s]+", text) if v]


def main(argv=None):
    p = argparse.ArgumentParser(description="Re-print the summary of Benchmarks/compare/run results CSVs.")
    p.add_argument("csv", nargs="+", help="results CSV written by run (--out)")
    p.add_argument("--systems", type=_list, help="systems in the order to print (default: as in the file)")
    p.add_argument("--sizes", type=_list, help="frame sizes in the order to print (default: as in the file)")
    p.add_argument("--idle-seconds", help="the idle test's length (default: from its row)")
    p.add_argument("--idle-cpu-text", help="the idle CPU figure to print instead of the CSV's")
    args = p.parse_args(argv)
    for path in args.csv:
        try:
            with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
                text = f.read()
        except OSError as e:
            print("error: %s" % e, file=sys.stderr)
            return 1
        if len(args.csv) > 1:
            sys.stdout.write("==> %s <==\n" % path)
        sys.stdout.write(summarize(text, args.systems, args.sizes, args.idle_seconds, args.idle_cpu_text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
