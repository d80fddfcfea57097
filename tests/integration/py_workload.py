#!/usr/bin/env python3
"""Allocation-heavy Python workload for the LD_PRELOAD integration test.

Usage: py_workload.py LIBRARY_BASENAME

The first line of output says whether a file named LIBRARY_BASENAME is
mapped into this process; test_programs.sh expects "yes" only under
LD_PRELOAD.  Every later line depends only on the fixed seeds below, so a
run on any allocator must print exactly the same text.

Each round builds tens of MB of dicts, lists, strings and growing
bytearrays, drops a random half to leave holes, refills them, then frees
everything.  CPython serves requests above 512 bytes (big strings, the item
arrays of big lists and dicts, bytearray growth by realloc) from malloc;
smaller ones come from its own arenas.  A last round has worker threads
build objects that the main thread frees, so those frees are remote.
"""

import gc
import hashlib
import os
import queue
import random
import sys
import threading

ROUNDS = 3
ITEMS = 100_000
THREADS = 4


def library_mapped(basename):
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(None, 5)
            if len(fields) == 6 and os.path.basename(fields[5].strip()) == basename:
                return True
    return False


# Object contents are slices of one fixed string and sizes come from a
# multiplicative hash, so the time goes into allocating, not into the
# random number generator.
BASE = "".join("%08x" % random.Random(7).getrandbits(32) for _ in range(1024)) * 2


def size(n, limit):
    return (n * 2654435761 >> 7) % limit


def text(n, length):
    start = n % 8192
    return BASE[start:start + length]


def build_round(r, rng, digest):
    seed = r * ITEMS
    table = {}
    for i in range(ITEMS):
        n = seed + i
        key = "k%d-%s" % (i, text(n, 4 + size(n, 36)))
        table[key] = [i, text(n + 1, (16, 64, 300, 700)[n & 3]), (i, n)]
    strings = [text(seed + i, 1 + size(seed + i, 400)) for i in range(ITEMS)]

    # Drop a random half, then refill, so new objects land in freed holes.
    keys = list(table)
    rng.shuffle(keys)
    for key in keys[: len(keys) // 2]:
        del table[key]
    for i in range(0, len(strings), 2):
        strings[i] = None
    for i in range(ITEMS // 4):
        table["r%d" % i] = text(i, 200 + size(seed - i, 800))
    for i in range(0, len(strings), 2):
        strings[i] = text(i + r, 1 + size(seed + 3 * i, 400))

    # Large blocks and repeated realloc: a multi-MB join and bytearrays
    # grown piece by piece.
    big = "".join(strings)
    grown = [bytearray() for _ in range(64)]
    for i in range(40_000):
        grown[i % 64] += strings[i].encode()
    lists = [[j] * (j % 200) for j in range(20_000)]

    digest.update(("%d %d %d\n" % (len(table), len(big), sum(map(len, lists)))).encode())
    for key in sorted(table)[::997]:
        digest.update(key.encode())
        digest.update(repr(table[key]).encode())
    digest.update(hashlib.sha256(big.encode()).digest())
    for block in grown:
        digest.update(hashlib.sha256(block).digest())
    return len(table), len(big)


def worker(seed, out):
    batches = []
    for b in range(20):
        batch = {("t%d-%d-%d" % (seed, b, i)): text(seed + i, 8 + size(seed * b + i, 2000))
                 for i in range(2_000)}
        batches.append(batch)
        if b % 4 == 3:
            out.put((seed, batches))
            batches = []
    out.put((seed, batches))
    out.put((seed, None))


def threaded_round(digest):
    # The main thread consumes and frees what the workers allocated.
    out = queue.Queue(maxsize=8)
    threads = [threading.Thread(target=worker, args=(1000 + t, out)) for t in range(THREADS)]
    for thread in threads:
        thread.start()
    finished = 0
    per_thread = {}
    while finished < THREADS:
        seed, batches = out.get()
        if batches is None:
            finished += 1
            continue
        h = per_thread.setdefault(seed, hashlib.sha256())
        for batch in batches:
            for key in sorted(batch):
                h.update(key.encode())
                h.update(batch[key].encode())
        del batches
    for thread in threads:
        thread.join()
    for seed in sorted(per_thread):
        digest.update(per_thread[seed].digest())
        print("thread %d %s" % (seed, per_thread[seed].hexdigest()[:16]))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: py_workload.py LIBRARY_BASENAME")
    mapped = "yes" if library_mapped(sys.argv[1]) else "no"
    print("library mapped: %s" % mapped, flush=True)  # kept even if a later crash loses the rest

    digest = hashlib.sha256()
    rng = random.Random(20240601)
    for r in range(ROUNDS):
        entries, joined = build_round(r, rng, digest)
        gc.collect()
        print("round %d entries %d joined %d" % (r, entries, joined))
    threaded_round(digest)
    print("digest %s" % digest.hexdigest())


if __name__ == "__main__":
    main()
