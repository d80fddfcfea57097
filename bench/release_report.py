#!/usr/bin/env python3
"""release_report.py - table and chart from bench/release_run.sh results.

usage: release_report.py [--doc] [--doc-dir DIR] [--no-plot] RESULTS_DIR

Reads RESULTS_DIR/meta.txt and RESULTS_DIR/raw/<allocator>.<rep>.csv (lines
allocator,phase,seconds,rss_bytes,lazyfree_bytes written by release_bench)
and writes into RESULTS_DIR:
  release.md                    the table, also printed on stdout
  release.csv                   medians per (allocator, phase)
  timeline.dat, timeline.gp, release.png   RSS over time and what made it
With --doc it also writes DOC_DIR/release.md and DOC_DIR/release.png
(DOC_DIR defaults to doc/ next to bench/).

Every number is the median over the repetitions of an allocator (failed runs
are left out).  For the chart, the samples taken every 100 ms after the free
are grouped by their tick and the median of each tick is drawn.
Standard library only.
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys

MIB = 1048576.0
ORDER = ["spanmalloc", "jemalloc", "glibc", "tcmalloc", "mimalloc"]


def warn(msg):
    print("release_report.py: " + msg, file=sys.stderr)


def read_meta(d):
    meta = {}
    try:
        with open(os.path.join(d, "meta.txt")) as f:
            for line in f:
                k, sep, v = line.rstrip("\n").partition("=")
                if sep:
                    meta[k] = v
    except OSError:
        pass
    return meta


def read_runs(d):
    """{allocator: [run, ...]}, run = list of (phase, seconds, rss, lazy)."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(d, "raw", "*.csv"))):
        stem = path[:-4]
        if os.path.exists(stem + ".fail"):
            continue
        alloc = os.path.basename(stem).rsplit(".", 1)[0]
        rows = []
        with open(path) as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                parts = line.strip().split(",")
                if len(parts) != 5:
                    continue
                rows.append((parts[1], float(parts[2]), int(parts[3]), int(parts[4])))
        if any(r[0] == "release" for r in rows):
            runs.setdefault(alloc, []).append(rows)
    return runs


def ordered(names):
    return [a for a in ORDER if a in names] + sorted(a for a in names if a not in ORDER)


def fmt_s(s):
    return ("%g" % s)


def columns(runs):
    """Phases of the table, in order: (key, heading)."""
    waits = set()
    for rs in runs.values():
        for rows in rs:
            for ph, sec, _, _ in rows:
                if ph == "wait":
                    waits.add(sec)
    cols = [(("peak", None), "peak"), (("freed", None), "after free")]
    cols += [(("wait", w), fmt_s(w) + " s") for w in sorted(waits)]
    cols.append((("release", None), "after release call"))
    return cols


def value(rows, key, idx):
    ph, sec = key
    for r in rows:
        if r[0] == ph and (sec is None or abs(r[1] - sec) < 1e-6):
            return r[idx]
    return None


def medians(runs, cols):
    """{allocator: {key: (rss median, lazyfree median)}}"""
    res = {}
    for a, rs in runs.items():
        res[a] = {}
        for key, _ in cols:
            rss = [v for v in (value(rows, key, 2) for rows in rs) if v is not None]
            lazy = [v for v in (value(rows, key, 3) for rows in rs) if v is not None]
            res[a][key] = (statistics.median(rss) if rss else None,
                           statistics.median(lazy) if lazy else None)
    return res


def mib(v):
    return "-" if v is None else "%.1f" % (v / MIB)


def table(runs, cols, med):
    lines = ["| allocator | " + " | ".join(h for _, h in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for a in ordered(runs):
        lines.append("| %s | " % a + " | ".join(mib(med[a][k][0]) for k, _ in cols) + " |")
    lazy_any = any(med[a][k][1] for a in runs for k, _ in cols)
    if lazy_any:
        lines += ["", "LazyFree (MiB, part of the RSS above that the kernel may reclaim at will):", "",
                  "| allocator | " + " | ".join(h for _, h in cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for a in ordered(runs):
            lines.append("| %s | " % a + " | ".join(mib(med[a][k][1]) for k, _ in cols) + " |")
    return "\n".join(lines)


def timeline(runs):
    """{allocator: [(seconds, rss median), ...]} from freed, samples, release."""
    tl = {}
    for a, rs in runs.items():
        ticks = {}
        rel_t, rel_v = [], []
        for rows in rs:
            for ph, sec, rss, _ in rows:
                if ph == "freed":
                    ticks.setdefault(0, []).append((0.0, rss))
                elif ph == "sample":
                    pass
                elif ph == "release":
                    rel_t.append(sec)
                    rel_v.append(rss)
            # every sample but the last one (which repeats the release)
            samples = [r for r in rows if r[0] == "sample"]
            if samples and any(r[0] == "release" for r in rows):
                samples = samples[:-1]
            for ph, sec, rss, _ in samples:
                ticks.setdefault(int(round(sec * 10)), []).append((sec, rss))
        pts = []
        for k in sorted(ticks):
            v = ticks[k]
            pts.append((k / 10.0, statistics.median(x[1] for x in v)))
        if rel_t:
            pts.append((statistics.median(rel_t), statistics.median(rel_v)))
        tl[a] = pts
    return tl


def gnuplot_terminal():
    try:
        r = subprocess.run(["gnuplot", "-e", "set terminal pngcairo"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return "pngcairo" if r.returncode == 0 else "png"


def plot(outdir, runs, tl, meta):
    if not shutil.which("gnuplot"):
        warn("gnuplot not found; no chart")
        return None
    term = gnuplot_terminal()
    names = ordered(runs)
    with open(os.path.join(outdir, "timeline.dat"), "w") as f:
        for a in names:
            f.write("# %s: seconds after the free, RSS MiB (median)\n" % a)
            for t, v in tl[a]:
                f.write("%.3f %.3f\n" % (t, v / MIB))
            f.write("\n\n")
    title = "RSS after freeing a %s MiB burst; last point: after the explicit release call" % meta.get("mib", "256")
    sub = "%s, %s cores, %s; median of %s runs" % (meta.get("cpu", "?"), meta.get("cores", "?"),
                                                   meta.get("date", "?")[:10], meta.get("reps", "?"))
    gp = [
        "set terminal %s size 1000,560 noenhanced" % term,
        "set output 'release.png'",
        "set title \"%s\\n%s\"" % (title, sub),
        "set xlabel 'seconds since free() of the whole burst'",
        "set ylabel 'RSS (MiB)'",
        "set yrange [0:*]",
        "set grid",
        "set key outside right top",
    ]
    series = []
    for i, a in enumerate(names):
        series.append("'timeline.dat' index %d using 1:2 with linespoints pointinterval 10 lw 2 title '%s'" % (i, a))
    gp.append("plot " + ", \\\n     ".join(series))
    with open(os.path.join(outdir, "timeline.gp"), "w") as f:
        f.write("\n".join(gp) + "\n")
    r = subprocess.run(["gnuplot", "timeline.gp"], cwd=outdir, capture_output=True, text=True)
    if r.returncode != 0:
        warn("gnuplot failed:\n" + r.stderr)
        return None
    return os.path.join(outdir, "release.png")


HAND_MARKER = "<!-- Written by hand from here on; release_report.py --doc keeps it. -->"


RELEASE_CALLS = {
    "spanmalloc": "`sm_free_os_memory()`",
    "jemalloc": "`mallctl(\"arena.4096.purge\", NULL, NULL, NULL, 0)`",
    "glibc": "`malloc_trim(0)`",
    "tcmalloc": "`MallocExtension_ReleaseFreeMemory()`",
    "mimalloc": "`mi_collect(true)`",
}


def doc_text(table_md, meta, runs):
    waits = meta.get("waits", "1,5,15").replace(",", ", ")
    calls = "; ".join("%s %s" % (a, RELEASE_CALLS.get(a, "?")) for a in ordered(runs))
    nruns = ", ".join("%s %d" % (a, len(runs[a])) for a in ordered(runs))
    return """# Returning memory to the OS

How much of a freed burst of memory each allocator still holds (resident set
size of the process) right after `free`, after a few idle seconds, and after
its own explicit release call.

Machine: {cpu}, {cores} cores, {memory} RAM, {kernel}; transparent huge pages
`{thp}`. Date: {date}. Load average {load0} at the start, {load1} at the end.
spanmalloc revision {rev}, release policy {policy}.

![RSS over time](release.png)

RSS in MiB, median of the runs ({nruns}):

{table}

## The workload

`bench/release_bench.c`, one plain C program (not linked to any allocator),
run with each allocator's library in `LD_PRELOAD` (glibc: none):

1. allocate a burst of {mib} MiB, half of it in small objects of 16 B-4 KiB
   and half in large ones of 64 KiB-1 MiB, interleaved; every page is written;
2. free every object, in a fixed random order, on the same thread;
3. sleep, reading `Rss` and `LazyFree` from `/proc/self/smaps_rollup` every
   100 ms and at {waits} s after the free;
4. call the allocator's explicit release function, found with
   `dlsym(RTLD_DEFAULT, ...)` after `dladdr` on `malloc` says which library
   serves it: {calls}; and read RSS once more.

The program allocates nothing between the free and the release call (its
sampling uses `open`/`read`/`write`), so an allocator that returns memory
only from inside `malloc` or `free` gets no chance to do so while the program
sleeps: the idle columns show what happens in an idle process, such as a
server between bursts. "peak" includes the program itself and the libraries,
about 1-7 MiB depending on the allocator (its RSS before the burst).
`LazyFree` is memory returned with `MADV_FREE` that the kernel has not yet
reclaimed: it still counts in RSS but goes away under memory pressure.

## Reproducing

From the top of the build tree:

```sh
make                                       # src/.libs/libspanmalloc.so
$srcdir/bench/release_run.sh --doc          # about 16 s per run; 5 allocators x 3 runs
$srcdir/bench/release_run.sh --quick --reps 1   # waits of 0.5, 1, 2 s, for testing
$srcdir/bench/release_report.py bench/results/release-<date>   # tables again
```

`release_run.sh --help` lists the options (`--allocators`, `--reps`,
`--waits`, `--mib`, `--lib NAME=PATH`, `--out`). Raw output is in
`bench/results/release-<date>/raw/<allocator>.<rep>.csv`, one line per sample:
`allocator,phase,seconds,rss_bytes,lazyfree_bytes`.
""".format(cpu=meta.get("cpu", "?"), cores=meta.get("cores", "?"), memory=meta.get("memory", "?"),
           kernel=meta.get("kernel", "?"), thp=meta.get("thp", "?"), date=meta.get("date", "?"),
           load0=meta.get("loadavg_start", "?"), load1=meta.get("loadavg_end", "?"),
           rev=meta.get("spanmalloc_rev", "?"),
           policy=("default" if meta.get("spanmalloc_release_env", "default") == "default"
                   else "SPANMALLOC_RELEASE=" + meta["spanmalloc_release_env"]),
           nruns=nruns, table=table_md, mib=meta.get("mib", "256"), waits=waits, calls=calls)


def main():
    ap = argparse.ArgumentParser(description="table and chart from release_run.sh results")
    ap.add_argument("results", help="results directory written by release_run.sh")
    ap.add_argument("--doc", action="store_true", help="also write DOC_DIR/release.md and release.png")
    ap.add_argument("--doc-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "doc"))
    ap.add_argument("--no-plot", action="store_true", help="do not run gnuplot")
    args = ap.parse_args()

    meta = read_meta(args.results)
    runs = read_runs(args.results)
    if not runs:
        warn("no complete runs in %s/raw" % args.results)
        return 2
    cols = columns(runs)
    med = medians(runs, cols)
    table_md = table(runs, cols, med)

    with open(os.path.join(args.results, "release.csv"), "w") as f:
        f.write("allocator,phase,seconds,rss_bytes_median,lazyfree_bytes_median,runs\n")
        for a in ordered(runs):
            for (ph, sec), _ in cols:
                rss, lazy = med[a][(ph, sec)]
                f.write("%s,%s,%s,%s,%s,%d\n" % (a, ph, "" if sec is None else fmt_s(sec),
                                                 "" if rss is None else int(rss),
                                                 "" if lazy is None else int(lazy), len(runs[a])))
    header = "RSS in MiB, median of %s (%s)\n\n" % (
        ", ".join("%d %s" % (len(runs[a]), a) for a in ordered(runs)), meta.get("date", "?"))
    with open(os.path.join(args.results, "release.md"), "w") as f:
        f.write(header + table_md + "\n")
    print(header + table_md)

    png = None
    if not args.no_plot:
        png = plot(args.results, runs, timeline(runs), meta)
    if args.doc:
        os.makedirs(args.doc_dir, exist_ok=True)
        # What follows the marker in the old file was written by hand (the
        # release at free, the memory limit): kept.
        path = os.path.join(args.doc_dir, "release.md")
        kept = ""
        if os.path.exists(path):
            with open(path) as f:
                old = f.read()
            if HAND_MARKER in old:
                kept = "\n" + old[old.index(HAND_MARKER):]
        with open(path, "w") as f:
            f.write(doc_text(table_md, meta, runs) + kept)
        if png:
            shutil.copyfile(png, os.path.join(args.doc_dir, "release.png"))
        print("release_report.py: wrote %s" % os.path.normpath(os.path.join(args.doc_dir, "release.md")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
