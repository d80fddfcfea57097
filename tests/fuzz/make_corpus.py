#!/usr/bin/env python3
"""Write the seed corpus of tests/fuzz/fuzz_malloc.c into a directory.

Usage: make_corpus.py [DIR]   (default: the corpus/ directory beside this file)

Each seed is a short program in the target's input language (see the top
comment of fuzz_malloc.c): an opcode byte, a slot byte, then the operands.
The seeds start the fuzzer at the interesting places: every size class and
its neighbours, the 32 KiB edge, page multiples, realloc chains up and
down, each aligned call with good and bad alignments, calloc overflow,
release with live objects under each policy, a small memory limit, and the
profiler sampling objects that are then freed or reallocated.  The files
are checked in; run this again after changing the input language.
"""
import os
import struct
import sys

# Opcodes (op % 16 in the target).
MALLOC, CALLOC, MEMALIGN, POSIX_MEMALIGN, ALIGNED_ALLOC, VALLOC = 0, 2, 3, 4, 5, 6
PVALLOC = 6 + 16           # same case, (op >> 4) % 2 == 1
REALLOC, FREE, USABLE, STATS, FREE_OS, SETTING, PROFILE = 7, 9, 11, 12, 13, 14, 15

NUM_CLASSES = 70   # SM_NUM_SIZE_CLASSES in src/sizeclasses.h


def size_exact(n):
    """Size selector 12: any size up to 4 MiB, little-endian 32 bits."""
    assert 0 <= n <= 4 << 20
    return bytes([12]) + struct.pack("<I", n)


def size_class(cls, delta):
    """Size selector 2: class cls's size plus delta (-1, 0, +1)."""
    assert 1 <= cls < NUM_CLASSES and delta in (-1, 0, 1)
    return bytes([2, cls - 1, delta + 1])


def size_pages(k, delta):
    """Size selector 11: k pages of 8 KiB plus delta."""
    assert 1 <= k <= 512 and delta in (-1, 0, 1)
    return bytes([11]) + struct.pack("<H", k - 1) + bytes([delta + 1])


def size_small_edge(delta):
    """Size selector 8: 32 KiB plus delta."""
    return bytes([8, delta + 1])


def align_pow2(shift):
    """1 << (a % 25), for a byte a with a % 8 != 7 (7 selects any value)."""
    assert 0 <= shift <= 24
    a = next(a for a in range(shift, 256, 25) if a % 8 != 7)
    return bytes([a])


def align_any(a):
    return bytes([7]) + struct.pack("<H", a)


def op(code, slot, *operands):
    return bytes([code, slot]) + b"".join(operands)


def calloc(slot, size, count=1, overflow=False):
    return op(CALLOC, slot, size, bytes([15 if overflow else 0, count - 1]))


def setting_policy(policy):          # 0 dontneed, 1 free, 2 none
    return op(SETTING, 0, bytes([2 * policy + 1]))


def setting_limit(mib):              # mib = 0: no limit
    k = 0 if mib == 0 else 2 * mib
    assert k < 256 and (mib == 0 or (mib % 4) != 0)
    return op(SETTING, 0, bytes([k]))


def profile(rate_index):             # 0, 4096, 65536, 524288
    return op(PROFILE, 0, bytes([rate_index]))


def seeds():
    s = {}
    # Every class at its size and either side, a few classes per seed.
    for first in range(1, NUM_CLASSES, 6):
        body = b""
        for i, cls in enumerate(range(first, min(first + 6, NUM_CLASSES))):
            for d in (-1, 0, 1):
                body += op(MALLOC, (3 * i + d + 1) % 64, size_class(cls, d))
        body += op(STATS, 0)
        for slot in range(18):
            body += op(FREE, slot)
        s["classes-%02d" % first] = body
    # The largest small class and the first large sizes.
    s["small-edge"] = b"".join(op(MALLOC, d + 1, size_small_edge(d)) for d in (-1, 0, 1)) + \
        op(REALLOC, 0, size_small_edge(1)) + op(REALLOC, 1, size_small_edge(-1)) + op(STATS, 0)
    s["pages"] = b"".join(op(MALLOC, k % 64, size_pages(k, (k % 3) - 1))
                          for k in (1, 2, 3, 4, 5, 8, 16, 64, 128, 129, 512)) + op(STATS, 0)
    # realloc chains: from NULL up to 4 MiB, down to a byte, to 0.
    up = [1, 15, 16, 17, 100, 1000, 4096, 32767, 32769, 100000, 1 << 20, 4 << 20]
    s["realloc-up"] = b"".join(op(REALLOC, 5, size_exact(n)) for n in up) + op(STATS, 0)
    s["realloc-down"] = op(MALLOC, 5, size_exact(4 << 20)) + \
        b"".join(op(REALLOC, 5, size_exact(n)) for n in reversed(up)) + op(REALLOC, 5, size_exact(0))
    s["realloc-large-shrink"] = op(MALLOC, 7, size_pages(100, 0)) + \
        op(REALLOC, 7, size_pages(60, 0)) + op(REALLOC, 7, size_pages(40, 1)) + \
        op(REALLOC, 7, size_pages(20, -1)) + op(USABLE, 7) + op(STATS, 0)
    s["realloc-zero"] = op(REALLOC, 3, size_exact(0)) + op(REALLOC, 3, size_exact(0)) + \
        op(MALLOC, 4, size_exact(0)) + op(REALLOC, 4, size_exact(0))
    # calloc: zeroes, reused memory, overflow.
    s["calloc"] = op(MALLOC, 1, size_exact(200000)) + op(FREE, 1) + \
        calloc(1, size_exact(200000)) + calloc(2, size_exact(100), 3) + \
        calloc(3, size_pages(300, 0), 2) + calloc(4, size_exact(1 << 20), overflow=True) + \
        calloc(5, size_exact(0), overflow=True) + op(STATS, 0)
    # Aligned calls: every power of two, and alignments that are not.
    for name, code in (("memalign", MEMALIGN), ("posix-memalign", POSIX_MEMALIGN),
                       ("aligned-alloc", ALIGNED_ALLOC)):
        body = b""
        for sh in range(0, 25, 2):
            body += op(code, sh % 64, size_exact(100 + sh * 999), align_pow2(sh))
        for a in (0, 3, 24, 48, 100, 4097, 65535):
            body += op(code, 40, size_exact(77), align_any(a))
        s["align-" + name] = body + op(STATS, 0)
    s["align-large"] = op(MEMALIGN, 1, size_pages(300, 1), align_pow2(21)) + \
        op(POSIX_MEMALIGN, 2, size_exact(100000), align_pow2(16)) + \
        op(ALIGNED_ALLOC, 3, size_exact(1), align_pow2(24)) + op(STATS, 0)
    s["valloc-pvalloc"] = op(VALLOC, 1, size_exact(0)) + op(VALLOC, 2, size_exact(5000)) + \
        op(PVALLOC, 3, size_exact(0)) + op(PVALLOC, 4, size_exact(4097)) + \
        op(PVALLOC, 5, size_pages(9, 1)) + op(STATS, 0)
    # Releasing memory with live objects around, under each policy.
    for policy in (0, 1, 2):
        body = setting_policy(policy)
        for i in range(20):
            body += op(MALLOC, i, size_exact(3000 * i + 1))
        for i in range(0, 20, 2):
            body += op(FREE, i)
        body += op(FREE_OS, 0) + calloc(0, size_exact(50000)) + calloc(2, size_pages(64, 0))
        body += op(FREE_OS, 0) + op(STATS, 0)
        s["release-policy-%d" % policy] = body
    # A soft limit far below what the input allocates.
    s["memlimit"] = setting_limit(1) + b"".join(
        op(MALLOC, i, size_pages(40 + i, 0)) for i in range(12)) + \
        b"".join(op(FREE, i) for i in range(0, 12, 3)) + \
        b"".join(op(MALLOC, 20 + i, size_pages(30, 0)) for i in range(6)) + \
        op(STATS, 0) + setting_limit(0)
    # The profiler: sampled small and large objects, freed, reallocated.
    for rate in (1, 2, 3):
        body = profile(rate)
        for i in range(30):
            body += op(MALLOC, i, size_exact(137 * i * i + 1))
        body += op(MALLOC, 31, size_pages(200, 0))
        for i in range(0, 30, 2):
            body += op(REALLOC, i, size_exact(9000 + i))
        for i in range(1, 30, 2):
            body += op(FREE, i)
        body += op(STATS, 0) + profile(0) + op(FREE, 31)
        s["profile-rate-%d" % rate] = body
    # Slot reuse: malloc into a full slot frees the old object first.
    s["slot-reuse"] = b"".join(op(MALLOC, 9, size_exact(n)) for n in (10, 10000, 40000, 10, 0))
    # Many small objects in one class: several spans, then frees.
    s["one-class"] = b"".join(op(MALLOC, i, size_class(5, 0)) for i in range(64)) + \
        b"".join(op(FREE, i) for i in range(0, 64, 3)) + op(STATS, 0) + op(FREE_OS, 0) + \
        b"".join(op(MALLOC, i, size_class(5, 1)) for i in range(0, 64, 3))
    s["empty"] = b""
    s["stats-only"] = op(STATS, 0) + op(FREE_OS, 0) + op(USABLE, 0)
    return s


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    os.makedirs(out, exist_ok=True)
    for name, body in sorted(seeds().items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(body)
    print("%d seeds in %s" % (len(seeds()), out))


if __name__ == "__main__":
    main()
