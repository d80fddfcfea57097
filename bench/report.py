#!/usr/bin/env python3
"""report.py - turn bench/run.sh results into tables and a chart.

usage: report.py [--baseline NAME] [--time auto|real|cpu] [--doc] [--doc-dir DIR]
                 [--no-plot] RESULTS_DIR

Reads RESULTS_DIR/raw/<allocator>/<case>.<rep>.{json,rss,fail} and
RESULTS_DIR/meta.txt as written by run.sh, and writes into RESULTS_DIR:
  report.md       the tables below, also printed on stdout
  summary.csv     one row per (case, allocator): medians, spreads, ratios
  chart.dat, chart.gp, benchmarks.png   the chart and what made it
With --doc it also writes DOC_DIR/benchmarks.md and DOC_DIR/benchmarks.png
(DOC_DIR defaults to doc/ next to bench/).

How the numbers are made:
- time per op of one run = time per iteration divided by the operations one
  iteration performed (the ops_per_iter counter), so cases with different
  amounts of work compare in ns/op.  The time is the process's CPU time for
  cases that run on the calling thread alone and wall time for those that
  start threads (workload_threads > 0; --time auto, the default): on a shared machine CPU time leaves out the time other processes
  held the core, while for threads only wall time shows waiting and
  contention.  --time real or --time cpu uses one of them for every case;
- for each (case, allocator), the median over repetitions of time per op and
  of peak RSS; failed runs are left out and counted;
- ratio = median of the allocator / median of the baseline (jemalloc) for the
  same case; for time and for RSS, > 1 means worse than the baseline;
- each allocator's summary is the geometric mean of its ratios over the cases
  where both it and the baseline have a result (the geometric mean is the
  only mean for which "2x slower" and "2x faster" cancel);
- the spread of a (case, allocator) is the interquartile range over the
  median of its repetitions (the full range when there are fewer than 4);
  it says how far to trust a ratio on a noisy machine.
Standard library only.
"""

import argparse
import csv
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys

KNOWN_ORDER = ["spanmalloc", "jemalloc", "glibc", "tcmalloc", "mimalloc"]
COLOURS = {
    "spanmalloc": "#d62728",
    "jemalloc": "#ff7f0e",
    "glibc": "#7f7f7f",
    "tcmalloc": "#1f77b4",
    "mimalloc": "#2ca02c",
}
SPARE_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
NS_PER_UNIT = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
RUN_FILE = re.compile(r"^(?P<case>.+)\.(?P<rep>\d+)\.(?P<kind>json|rss|fail)$")


def warn(msg):
    print("report.py: " + msg, file=sys.stderr)


def read_meta(path):
    meta = {}
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep:
                    meta[key] = value
    except OSError:
        warn("no %s; machine details will be missing" % path)
    return meta


class Results:
    """Every run of every (case, allocator), as lists over repetitions."""

    def __init__(self, outdir, metric):
        self.meta = read_meta(os.path.join(outdir, "meta.txt"))
        self.runs = {}  # (case, alloc) -> [(wall ns per op, cpu ns per op)]
        self.threads = {}  # case -> threads the workload runs
        self.times = {}  # (case, alloc) -> [ns per op in the chosen metric]
        self.metric = {}  # case -> "wall" or "cpu"
        self.rss = {}  # (case, alloc) -> [KiB]
        self.fails = {}  # (case, alloc) -> number of failed runs
        self.cases = []
        self.allocs = []
        raw = os.path.join(outdir, "raw")
        if not os.path.isdir(raw):
            sys.exit("report.py: %s has no raw/ directory; is it a run.sh output directory?" % outdir)
        for alloc in sorted(os.listdir(raw)):
            adir = os.path.join(raw, alloc)
            if not os.path.isdir(adir):
                continue
            failed = set()
            for name in sorted(os.listdir(adir)):
                m = RUN_FILE.match(name)
                if m and m.group("kind") == "fail":
                    failed.add((m.group("case"), m.group("rep")))
                    key = (m.group("case"), alloc)
                    self.fails[key] = self.fails.get(key, 0) + 1
                    self._add_case(m.group("case"), alloc)
            for name in sorted(os.listdir(adir)):
                m = RUN_FILE.match(name)
                if not m or m.group("kind") == "fail":
                    continue
                case, rep = m.group("case"), m.group("rep")
                if (case, rep) in failed:
                    continue
                path = os.path.join(adir, name)
                if m.group("kind") == "json":
                    value = self._ns_per_op(path, alloc, case)
                    store = self.runs
                else:
                    value = self._kib(path)
                    store = self.rss
                if value is not None:
                    store.setdefault((case, alloc), []).append(value)
                    self._add_case(case, alloc)
        listed = [c.split("/")[0] for c in self.meta.get("cases", "").split()]
        self.cases.sort(key=lambda c: (listed.index(c) if c in listed else len(listed), c))
        order = self.meta.get("allocators", "").split() or KNOWN_ORDER
        self.allocs.sort(key=lambda a: (order.index(a) if a in order else len(order), a))
        for case in self.cases:
            threaded = self.threads.get(case, 0) > 0
            use_cpu = metric == "cpu" or (metric == "auto" and not threaded)
            self.metric[case] = "cpu" if use_cpu else "wall"
            for a in self.allocs:
                if (case, a) in self.runs:
                    self.times[(case, a)] = [r[1] if use_cpu else r[0] for r in self.runs[(case, a)]]

    def _add_case(self, case, alloc):
        if case not in self.cases:
            self.cases.append(case)
        if alloc not in self.allocs:
            self.allocs.append(alloc)

    def _ns_per_op(self, path, alloc, case):
        try:
            with open(path) as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            warn("%s: unreadable (%s)" % (path, e))
            return None
        expected = self.meta.get("malloc." + alloc)
        got = data.get("context", {}).get("malloc_library")
        if expected and got and os.path.realpath(got) != os.path.realpath(expected):
            warn("%s: malloc came from %s, expected %s; run left out" % (path, got, expected))
            return None
        for b in data.get("benchmarks", []):
            if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
                continue
            ops = b.get("ops_per_iter")
            unit = NS_PER_UNIT.get(b.get("time_unit", "ns"))
            if not ops or unit is None:
                warn("%s: no ops_per_iter or unknown time unit" % path)
                return None
            self.threads[case] = int(b.get("workload_threads", 0))
            return (b["real_time"] * unit / ops, b["cpu_time"] * unit / ops)
        warn("%s: no benchmark result" % path)
        return None

    @staticmethod
    def _kib(path):
        try:
            with open(path) as f:
                return float(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def median(values):
    return statistics.median(values) if values else None


def spread(values):
    """Interquartile range over the median; the full range below 4 values."""
    if not values or len(values) < 2:
        return None
    m = statistics.median(values)
    if m <= 0:
        return None
    if len(values) < 4:
        return (max(values) - min(values)) / m
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return (q3 - q1) / m


def geomean(values):
    values = [v for v in values if v is not None and v > 0]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def fmt_ns(v):
    if v is None:
        return "-"
    if v < 10:
        return "%.2f" % v
    if v < 100:
        return "%.1f" % v
    return "%.0f" % v


def fmt_mib(kib):
    if kib is None:
        return "-"
    mib = kib / 1024.0
    return "%.1f" % mib if mib < 100 else "%.0f" % mib


def fmt_ratio(r):
    return "-" if r is None else "%.2f" % r


class Summary:
    """Medians and ratios against the baseline."""

    def __init__(self, res, baseline):
        self.res = res
        self.baseline = baseline
        self.t = {k: median(v) for k, v in res.times.items()}
        self.m = {k: median(v) for k, v in res.rss.items()}
        self.t_ratio = {}
        self.m_ratio = {}
        for case in res.cases:
            bt = self.t.get((case, baseline))
            bm = self.m.get((case, baseline))
            for a in res.allocs:
                t = self.t.get((case, a))
                m = self.m.get((case, a))
                if t is not None and bt:
                    self.t_ratio[(case, a)] = t / bt
                if m is not None and bm:
                    self.m_ratio[(case, a)] = m / bm
        self.t_geo = {a: geomean([self.t_ratio.get((c, a)) for c in res.cases]) for a in res.allocs}
        self.m_geo = {a: geomean([self.m_ratio.get((c, a)) for c in res.cases]) for a in res.allocs}
        self.n_ratio = {a: sum(1 for c in res.cases if (c, a) in self.t_ratio) for a in res.allocs}


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def machine_line(meta):
    parts = [meta.get("cpu", "unknown CPU")]
    if meta.get("cores"):
        parts.append("%s cores" % meta["cores"])
    if meta.get("kernel"):
        parts.append(meta["kernel"])
    if meta.get("date"):
        parts.append(meta["date"])
    return ", ".join(parts)


def markdown(s, outdir, chart):
    res, meta, base = s.res, s.res.meta, s.baseline
    allocs = res.allocs
    reps = meta.get("reps", "?")
    out = []
    out.append("# Allocator benchmarks")
    out.append("")
    out.append("Machine: %s. Load average %s at the start, %s at the end." % (
        machine_line(meta), meta.get("loadavg_start", "?"), meta.get("loadavg_end", "?")))
    if meta.get("spanmalloc_rev") and "spanmalloc" in allocs:
        out.append("spanmalloc revision %s." % meta["spanmalloc_rev"])
    out.append("")
    out.append(
        "Each cell is the median of %s runs; every run is a separate process running one case "
        "under one allocator (`LD_PRELOAD`), and runs are interleaved across allocators. "
        "Time per operation is time per iteration (google-benchmark, min_time %s s) divided "
        "by the allocations the iteration made; the clock column says whether that time is "
        "the process's CPU time (cases that run on the calling thread alone: steadier on a shared "
        "machine) or wall time (cases that start threads: it includes waiting). "
        "Ratios are against %s for the same case: "
        "above 1 is slower (or bigger) than %s. The summary row is the geometric mean of the ratios. "
        "Made by `bench/run.sh` and `bench/report.py`; `bench/README.md` describes the cases."
        % (reps, meta.get("min_time", "?"), base, base))
    out.append("")

    header = ["case", "clock"] + allocs
    rows = []
    for c in res.cases:
        row = [c, res.metric.get(c, "?")]
        for a in allocs:
            t = s.t.get((c, a))
            if t is None:
                row.append("fail" if res.fails.get((c, a)) else "-")
            elif a == base:
                row.append(fmt_ns(t))
            else:
                row.append("%s (%s)" % (fmt_ns(t), fmt_ratio(s.t_ratio.get((c, a)))))
        rows.append(row)
    rows.append(["**geometric mean of ratios**", ""] + ["**%s**" % fmt_ratio(s.t_geo[a]) for a in allocs])
    out.append("## Time per operation (ns; ratio to %s)" % base)
    out.append("")
    out.append(table(header, rows))
    out.append("")

    header = ["case"] + allocs
    rows = []
    for c in res.cases:
        row = [c]
        for a in allocs:
            m = s.m.get((c, a))
            if m is None:
                row.append("fail" if res.fails.get((c, a)) else "-")
            elif a == base:
                row.append(fmt_mib(m))
            else:
                row.append("%s (%s)" % (fmt_mib(m), fmt_ratio(s.m_ratio.get((c, a)))))
        rows.append(row)
    rows.append(["**geometric mean of ratios**"] + ["**%s**" % fmt_ratio(s.m_geo[a]) for a in allocs])
    out.append("## Peak RSS of the process (MiB; ratio to %s)" % base)
    out.append("")
    out.append("Peak resident set of the whole benchmark process (`ru_maxrss`), "
               "including the program itself (a few MiB).")
    out.append("")
    out.append(table(header, rows))
    out.append("")

    spreads = {a: [(spread(res.times.get((c, a))), c) for c in res.cases] for a in allocs}
    spreads = {a: [x for x in v if x[0] is not None] for a, v in spreads.items()}
    if any(spreads.values()):
        rows = [["median"] + ["%.0f%%" % (100 * statistics.median([x[0] for x in spreads[a]]))
                              if spreads[a] else "-" for a in allocs],
                ["largest"] + ["%.0f%% (%s)" % (100 * max(spreads[a])[0], max(spreads[a])[1])
                               if spreads[a] else "-" for a in allocs]]
        out.append("## Run-to-run spread of time per operation")
        out.append("")
        out.append("Interquartile range / median over the repetitions of a case "
                   "(max - min when fewer than 4); ratios closer to 1 than this are noise.")
        out.append("")
        out.append(table(["over cases"] + allocs, rows))
        out.append("")

    cg = os.path.join(outdir, "callgrind.md")
    if os.path.exists(cg):
        with open(cg) as f:
            out.append(f.read().strip())
        out.append("")

    notes = []
    for a in allocs:
        lib = meta.get("lib." + a)
        if lib:
            notes.append("- %s: %s" % (a, "no preload (the C library's malloc)" if lib == "none" else "`%s`" % lib))
    for k in sorted(meta):
        if k.startswith("skipped."):
            notes.append("- %s: not run: %s" % (k[len("skipped."):], meta[k]))
    nfail = sum(res.fails.values())
    if nfail:
        notes.append("- %d failed runs (left out): %s" % (nfail, ", ".join(
            "%s under %s x%d" % (c, a, n) for (c, a), n in sorted(res.fails.items()))))
    if notes:
        out.append("## Libraries")
        out.append("")
        out.extend(notes)
        out.append("")
    if chart:
        out.append("![time per operation and peak RSS relative to %s](benchmarks.png)" % base)
        out.append("")
    return "\n".join(out)


def write_csv(s, path):
    res = s.res
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["case", "allocator", "clock", "runs", "ns_per_op_median", "ns_per_op_min", "ns_per_op_max",
                    "time_ratio", "peak_rss_kib_median", "rss_ratio", "failed_runs",
                    "wall_ns_per_op_median", "cpu_ns_per_op_median"])
        for c in res.cases:
            for a in res.allocs:
                t = res.times.get((c, a), [])
                runs = res.runs.get((c, a), [])
                wall = median([r[0] for r in runs])
                cpu = median([r[1] for r in runs])
                w.writerow([c, a, res.metric.get(c, ""), len(t),
                            "%.4g" % s.t[(c, a)] if t else "",
                            "%.4g" % min(t) if t else "", "%.4g" % max(t) if t else "",
                            "%.4f" % s.t_ratio[(c, a)] if (c, a) in s.t_ratio else "",
                            "%.0f" % s.m[(c, a)] if (c, a) in s.m else "",
                            "%.4f" % s.m_ratio[(c, a)] if (c, a) in s.m_ratio else "",
                            res.fails.get((c, a), 0),
                            "%.4g" % wall if wall is not None else "",
                            "%.4g" % cpu if cpu is not None else ""])


def gnuplot_terminal():
    try:
        r = subprocess.run(["gnuplot", "-e", "set terminal pngcairo"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return "pngcairo" if r.returncode == 0 and not r.stderr.strip() else "png"


def gp_string(text):
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def log2_axis(ratios):
    """A log2 y range that shows 1/2..2 at least, and its tics as fractions."""
    lo = min(ratios + [0.5]) / 1.15
    hi = max(ratios + [2.0]) * 1.15
    tics = []
    e = math.floor(math.log2(lo))
    while 2.0 ** e <= hi:
        v = 2.0 ** e
        tics.append('"%s" %g' % ("%g" % v if v >= 1 else "1/%g" % (1 / v), v))
        e += 1
    return lo, hi, ", ".join(tics)


def chart(s, outdir):
    """Bars from 1 to each ratio, one group per case: up is worse than the baseline."""
    term = gnuplot_terminal()
    if term is None:
        warn("gnuplot not found; no chart")
        return False
    res, base = s.res, s.baseline
    others = [a for a in res.allocs if a != base]
    if not others or not res.cases:
        warn("nothing to compare with %s; no chart" % base)
        return False
    cases = res.cases
    k = len(others)
    width = 0.8 / k
    blocks = []
    ranges = []
    for panel, ratio in (("time", s.t_ratio), ("rss", s.m_ratio)):
        ratios = []
        for j, a in enumerate(others):
            lines = ["# %s %s" % (panel, a)]
            for i, c in enumerate(cases):
                r = ratio.get((c, a))
                if r is None or r <= 0:
                    continue
                ratios.append(r)
                x = i - 0.4 + width * (j + 0.5)
                lines.append("%g 1 %g %g %g %g" % (x, x - width / 2, x + width / 2, min(1.0, r), max(1.0, r)))
            if len(lines) == 1:
                lines.append("? ? ? ? ? ?")
            blocks.append("\n".join(lines))
        ranges.append(log2_axis(ratios))
    with open(os.path.join(outdir, "chart.dat"), "w") as f:
        f.write("\n\n\n".join(blocks) + "\n")

    meta = res.meta
    title = ("Time per operation and peak RSS relative to %s (median of %s runs; below 1 is better)\\n%s"
             % (base, meta.get("reps", "?"), machine_line(meta)))
    xtics = ", ".join("%s %d" % (gp_string(c[3:] if c.startswith("BM_") else c), i) for i, c in enumerate(cases))
    spare = iter(SPARE_COLOURS * 4)
    colour = {a: COLOURS.get(a) or next(spare) for a in others}
    height = 1150 + 8 * max(0, len(cases) - 24)
    gp = []
    gp.append("set terminal %s noenhanced size %d,%d font 'sans,10'" % (term, max(1200, 60 * len(cases)), height))
    gp.append("set output 'benchmarks.png'")
    gp.append("set datafile missing '?'")
    gp.append("set multiplot layout 2,1 title \"%s\" font 'sans,12'" % title)
    gp.append("set logscale y 2")
    gp.append("set xrange [-0.6:%g]" % (len(cases) - 0.4))
    gp.append("set xtics (%s) rotate by 40 right nomirror" % xtics)
    gp.append("set grid ytics")
    gp.append("set key outside top center horizontal reverse Left")
    gp.append("set style fill solid 0.85 border -1")
    gp.append("set bmargin 9")
    gp.append("set arrow 1 from graph 0, first 1 to graph 1, first 1 nohead lw 1.5 lc rgb 'black'")
    for p, label in enumerate(("time per operation / %s" % base, "peak RSS / %s" % base)):
        gp.append("set ylabel %s" % gp_string(label))
        gp.append("set yrange [%g:%g]" % ranges[p][:2])
        gp.append("set ytics (%s)" % ranges[p][2])
        plots = []
        for j, a in enumerate(others):
            idx = p * k + j
            plots.append("'chart.dat' index %d using 1:2:3:4:5:6 with boxxyerror lc rgb '%s' title %s"
                         % (idx, colour[a], gp_string(a)))
        gp.append("plot " + ", \\\n     ".join(plots))
    gp.append("unset multiplot")
    with open(os.path.join(outdir, "chart.gp"), "w") as f:
        f.write("\n".join(gp) + "\n")
    png = os.path.join(outdir, "benchmarks.png")
    if os.path.exists(png):
        os.remove(png)
    r = subprocess.run(["gnuplot", "chart.gp"], cwd=outdir, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(png):
        warn("gnuplot failed:\n" + r.stderr)
        return False
    if r.stderr.strip():
        warn("gnuplot: " + r.stderr.strip())
    return True


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description="Summarize bench/run.sh results.")
    ap.add_argument("results", help="output directory of bench/run.sh")
    ap.add_argument("--baseline", default="jemalloc", help="allocator the ratios are against (default: jemalloc)")
    ap.add_argument("--doc", action="store_true", help="also write DOC_DIR/benchmarks.md and benchmarks.png")
    ap.add_argument("--doc-dir", default=os.path.join(os.path.dirname(here), "doc"),
                    help="where --doc writes (default: doc/ of the source tree)")
    ap.add_argument("--time", choices=["auto", "real", "cpu"], default="auto",
                    help="clock for time per op: auto = CPU time for cases that run on the "
                         "calling thread alone, wall time for those that start threads (default)")
    ap.add_argument("--no-plot", action="store_true", help="do not run gnuplot")
    args = ap.parse_args()

    res = Results(args.results, args.time)
    if not res.allocs or not res.cases:
        sys.exit("report.py: no results in %s" % args.results)
    baseline = args.baseline
    if baseline not in res.allocs:
        fallback = next((a for a in KNOWN_ORDER if a in res.allocs), res.allocs[0])
        warn("no results for baseline %s; using %s" % (baseline, fallback))
        baseline = fallback
    s = Summary(res, baseline)

    have_chart = False
    if not args.no_plot:
        have_chart = chart(s, args.results)
    text = markdown(s, args.results, have_chart)
    with open(os.path.join(args.results, "report.md"), "w") as f:
        f.write(text + "\n")
    write_csv(s, os.path.join(args.results, "summary.csv"))
    print(text)

    if args.doc:
        os.makedirs(args.doc_dir, exist_ok=True)
        with open(os.path.join(args.doc_dir, "benchmarks.md"), "w") as f:
            f.write(text + "\n")
        if have_chart:
            shutil.copyfile(os.path.join(args.results, "benchmarks.png"),
                            os.path.join(args.doc_dir, "benchmarks.png"))
        warn("wrote %s" % os.path.join(args.doc_dir, "benchmarks.md"))


if __name__ == "__main__":
    main()
