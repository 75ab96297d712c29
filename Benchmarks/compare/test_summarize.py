"""Tests of Benchmarks/compare/summarize.py:  python3 -m unittest Benchmarks/compare/test_summarize.py

testdata/results-smoke.csv is a real (short, DISTURBED) run of this machine; results-full.csv
and results-vxlan.csv are made up in the same format (several systems, sizes and rounds,
DISTURBED rows, failed and 0 Mpps runs). testdata/results-*.summary.txt were printed by
run's former awk summary (commit 0ca562d) with the options of those sessions:
  full:  --systems vswitch,ovs,testpmd,baseline --sizes 64,1518 --idle-seconds 10 (idle CPU "< 0.10")
  vxlan: --systems vswitch,vxlan --sizes 64,1518 --idle-seconds 3
  smoke: --systems vswitch,testpmd --sizes 64 --idle-seconds 2 (idle CPU "< 0.50")
"""

import io
import math
import os
import subprocess
import sys
import unittest
from contextlib import redirect_stdout

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import summarize  # noqa: E402

DATA = os.path.join(HERE, "testdata")
SESSIONS = {
    "full": ["--systems=vswitch,ovs,testpmd,baseline", "--sizes=64,1518", "--idle-seconds=10",
             "--idle-cpu-text=< 0.10"],
    "vxlan": ["--systems=vswitch,vxlan", "--sizes=64,1518", "--idle-seconds=3", "--idle-cpu-text="],
    "smoke": ["--systems=vswitch,testpmd", "--sizes=64", "--idle-seconds=2", "--idle-cpu-text=< 0.50"],
}


def read(name, mode="r"):
    with open(os.path.join(DATA, name), mode) as f:
        return f.read()


class Fixtures(unittest.TestCase):
    def test_old_file_alone(self):
        """Re-summarising a results file (options taken from it) prints the old summary."""
        for name in SESSIONS:
            with self.subTest(name):
                self.assertEqual(summarize.summarize(read("results-%s.csv" % name)),
                                 read("results-%s.summary.txt" % name))

    def test_as_run_calls_it(self):
        """The script, with the options run passes, prints the old summary byte for byte."""
        for name, opts in SESSIONS.items():
            with self.subTest(name):
                out = subprocess.run([sys.executable, os.path.join(HERE, "summarize.py"), *opts,
                                      os.path.join(DATA, "results-%s.csv" % name)],
                                     capture_output=True, check=True).stdout
                self.assertEqual(out, read("results-%s.summary.txt" % name, "rb"))

    def test_several_files(self):
        paths = [os.path.join(DATA, "results-%s.csv" % n) for n in SESSIONS]
        buf = io.StringIO()
        with redirect_stdout(buf):
            self.assertEqual(summarize.main(paths), 0)
        expected = "".join("==> %s <==\n%s" % (p, read("results-%s.summary.txt" % n))
                           for p, n in zip(paths, SESSIONS))
        self.assertEqual(buf.getvalue(), expected)

    def test_inferred_options(self):
        res = summarize.Results(read("results-full.csv"))
        self.assertEqual(res.systems(), ["vswitch", "ovs", "testpmd", "baseline"])
        self.assertEqual(res.sizes_seen, ["64", "1518"])
        self.assertEqual(res.idle_seconds(), "10")
        if os.sysconf("SC_CLK_TCK") == 100:
            self.assertEqual(res.idle_cpu_text("10"), "< 0.10")
        self.assertEqual(summarize.Results(read("results-vxlan.csv")).idle_cpu_text("3"), "")

    def test_header_only(self):
        text = read("results-full.csv").split("\n")[0] + "\n"
        out = summarize.summarize(text, ["vswitch"], ["64"], "10", "")
        self.assertNotIn("RSS", out)
        self.assertIn("== Ratios", out)


class Helpers(unittest.TestCase):
    def test_median(self):
        self.assertEqual(summarize.median([3.0, 1.0, 2.0]), 2.0)  # odd: the middle one
        self.assertEqual(summarize.median([4.0, 1.0, 3.0, 2.0]), 2.5)  # even: mean of the two
        self.assertEqual(summarize.median([7.5]), 7.5)
        self.assertIsNone(summarize.median([]))

    def test_column_median_skips_missing(self):
        col = {"mpps": 0}
        rows = [summarize.Row(col, [v]) for v in ["8.1", "", "-", "6.0", "7.0"]]
        self.assertEqual(summarize.column_median(rows, "mpps"), 7.0)
        self.assertEqual(summarize.column_median(rows[:3], "mpps"), 8.1)
        self.assertIsNone(summarize.column_median(rows[1:3], "mpps"))
        self.assertIsNone(summarize.column_median(rows, "no such column"))

    def test_ratio(self):
        self.assertEqual(summarize.ratio(8.4, 5.92), "1.42")
        self.assertEqual(summarize.ratio(0.0, 5.0), "0.00")
        self.assertEqual(summarize.ratio(8.4, 0.0), "-")
        self.assertEqual(summarize.ratio(8.4, None), "-")
        self.assertEqual(summarize.ratio(None, 5.0), "-")

    def test_per_round_quotient(self):
        self.assertEqual(summarize.quotient(7.0, 3.5), " 2.00")
        self.assertEqual(summarize.quotient(1.0, 0.0), " inf")

    def test_awk_numbers(self):
        self.assertEqual(summarize.num("7.624"), 7.624)
        self.assertEqual(summarize.num("5abc"), 5.0)
        self.assertEqual(summarize.num("x"), 0.0)
        self.assertTrue(summarize.looks_numeric(" 1e3"))
        self.assertFalse(summarize.looks_numeric("5abc"))
        self.assertTrue(summarize.greater_than_zero("0.001"))
        self.assertFalse(summarize.greater_than_zero("0.000"))
        self.assertFalse(summarize.greater_than_zero(None))
        self.assertEqual(summarize.awk_str(22583.0), "22583")
        self.assertEqual(summarize.awk_str(22592.5), "22592.5")
        self.assertEqual(summarize.awk_str(1234567.5), "1.23457e+06")
        self.assertEqual(summarize.awk_str(math.inf), "inf")


if __name__ == "__main__":
    unittest.main()
