#!/usr/bin/python3
"""Parse /metrics (stdin) with the Prometheus client library's own text
parser and check what the endpoint promises: Go's go_memstats_* names with
HELP and TYPE, spanmalloc_* gauges, per-class counters with a size label,
the RSS breakdown adding up to spanmalloc_rss_bytes.  Prints "ok" or the
first failure, and exits 1 on failure.  Usage: http_metrics_check.py
[--limit BYTES|none] < metrics.txt"""
import math
import os
import re
import sys

from prometheus_client.parser import text_string_to_metric_families

limit = sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--limit" else "none"
text = sys.stdin.read()
# go_memstats_alloc_bytes (a gauge) and go_memstats_alloc_bytes_total (a
# counter, whose family the parser names without _total) share a name: key
# the families by name and type.
fams = {}
for f in text_string_to_metric_families(text):
    fams.setdefault(f.name, {})[f.type] = f


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def fam(name):
    kinds = fams.get(name, {})
    return kinds.get("gauge") or kinds.get("counter")


def value(family, labels=None):
    for s in fam(family).samples:
        if labels is None or all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    fail("no sample %s %r" % (family, labels))


# The parser strips _total from counter family names, as the format says.
gauges = ["go_memstats_alloc_bytes", "go_memstats_sys_bytes", "go_memstats_heap_alloc_bytes",
          "go_memstats_heap_sys_bytes", "go_memstats_heap_idle_bytes",
          "go_memstats_heap_inuse_bytes", "go_memstats_heap_released_bytes",
          "go_memstats_heap_objects", "go_memstats_mspan_inuse_bytes",
          "go_memstats_mspan_sys_bytes", "go_memstats_mcache_inuse_bytes",
          "go_memstats_mcache_sys_bytes", "go_memstats_other_sys_bytes",
          "spanmalloc_rss_bytes", "spanmalloc_lazy_free_bytes",
          "spanmalloc_memory_limit_bytes", "spanmalloc_rss_breakdown_bytes"]
counters = ["go_memstats_alloc_bytes", "go_memstats_mallocs", "go_memstats_frees",
            "spanmalloc_size_class_mallocs", "spanmalloc_size_class_frees"]
for g in gauges:
    if "gauge" not in fams.get(g, {}) or not fams[g]["gauge"].documentation:
        fail("gauge %s missing, untyped or without HELP" % g)
for c in counters:
    if "counter" not in fams.get(c, {}) or not fams[c]["counter"].documentation:
        fail("counter %s_total missing or without HELP" % c)
if value("go_memstats_alloc_bytes") > fams["go_memstats_alloc_bytes"]["counter"].samples[0].value:
    fail("alloc_bytes > alloc_bytes_total")
if value("go_memstats_mallocs") < value("go_memstats_frees"):
    fail("mallocs < frees")
if value("go_memstats_heap_inuse_bytes") + value("go_memstats_heap_idle_bytes") \
        != value("go_memstats_heap_sys_bytes"):
    fail("heap_inuse + heap_idle != heap_sys")
lim = value("spanmalloc_memory_limit_bytes")
if limit == "none" and not (math.isinf(lim) and lim > 0):
    fail("memory limit %r, want +Inf" % lim)
if limit != "none" and lim != float(limit):
    fail("memory limit %r, want %s" % (lim, limit))
# As many size labels as the public header's by_size[] has entries.
header = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../include/spanmalloc.h")
nclasses = int(re.search(r"#define SM_MEMSTATS_NUM_BY_SIZE (\d+)", open(header).read()).group(1))
sizes = {s.labels["size"] for s in fam("spanmalloc_size_class_mallocs").samples}
if not {"16", "64", "32768", "large"} <= sizes or len(sizes) != nclasses:
    fail("size labels %r" % sorted(sizes))
if value("spanmalloc_size_class_mallocs", {"size": "1024"}) <= 0:
    fail("no mallocs counted in the 1024-byte class")
parts = {s.labels["part"]: s.value for s in fam("spanmalloc_rss_breakdown_bytes").samples}
if set(parts) != {"live", "span_free", "idle_dirty", "lazy_free", "outside_heap"}:
    fail("breakdown parts %r" % parts)
if any(v < 0 for v in parts.values()):
    fail("a negative part %r" % parts)
if sum(parts.values()) != value("spanmalloc_rss_bytes"):
    fail("parts %r do not add up to rss %r" % (parts, value("spanmalloc_rss_bytes")))
print("ok %d families" % len(fams))
