// mprof_leak.cc - mprof_leak.c's leak, churn and bounded cache written
// with new and delete, for test_mprof_pprof.sh to profile through
// LD_PRELOAD: the program knows nothing of spanmalloc.  Its profiles come
// from SPANMALLOC_PROFILE_SIGNAL while it waits between phases.
//
// Usage: mprof_leak_cxx.  Phase a fills the cache, leaks and churns,
// prints its truth lines and "phase a", and waits for a line on stdin;
// phase b leaks and churns more, replaces a quarter of the cache, prints
// and waits again; then it exits.  Truth lines are as in mprof_leak.c, in
// bytes asked for.
//
// It instantiates no template out of line: Go 1.19's pprof finds no line
// for any address of a compile unit whose line table does not start at its
// lowest address, and GCC puts the sequences of such functions first.
#include <cstdint>
#include <cstdio>
#include <cstring>

#define NOINLINE __attribute__((noinline))

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

std::uint64_t rng = 0x853c49e6748fea9bull;

std::uint64_t next_random()
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

struct Counts {
    std::size_t inuse = 0, alloc = 0;
};

struct Ctx {
    Ctx *parent;
    std::size_t len;
    char *data;
};

Ctx *chain;
Counts leak, churn, cached;
volatile unsigned char sink;

constexpr std::size_t cache_entries = 64;
constexpr std::size_t cache_entry = 1 * MiB;
char *cache[cache_entries];
std::size_t cache_bytes[cache_entries];
std::size_t cache_next;

} // namespace

NOINLINE void leak_context_chain(std::size_t bytes)
{
    std::size_t done = 0;
    while (done < bytes) {
        std::size_t len = 64 + next_random() % 2000;
        Ctx *c = new Ctx;
        c->parent = chain;
        c->len = len;
        c->data = new char[len];
        std::memset(c->data, 'c', len);
        chain = c;
        std::size_t b = sizeof *c + len;
        done += b;
        leak.inuse += b;
        leak.alloc += b;
    }
}

NOINLINE void churn_buffers(std::size_t bytes)
{
    std::size_t done = 0;
    while (done < bytes) {
        std::size_t len = 1024 + next_random() % (256 * 1024);
        unsigned char *buf = new unsigned char[len];
        buf[0] = 1;
        buf[len - 1] = 2;
        sink = static_cast<unsigned char>(buf[0] + buf[len - 1]);
        std::size_t b = len;
        done += b;
        churn.alloc += b;
        delete[] buf;
    }
}

NOINLINE void cache_store(std::size_t entries)
{
    for (std::size_t i = 0; i < entries; i++) {
        std::size_t slot = cache_next++ % cache_entries;
        if (cache[slot] != nullptr) {
            delete[] cache[slot];
            cached.inuse -= cache_bytes[slot];
        }
        std::size_t len = cache_entry - 4096 + next_random() % 4096;
        cache[slot] = new char[len];
        std::memset(cache[slot], 'e', len);
        cache_bytes[slot] = len;
        cached.inuse += cache_bytes[slot];
        cached.alloc += cache_bytes[slot];
    }
}

static void phase_done(const char *phase)
{
    std::printf("truth %s leak_context_chain %zu %zu\n", phase, leak.inuse, leak.alloc);
    std::printf("truth %s churn_buffers %zu %zu\n", phase, churn.inuse, churn.alloc);
    std::printf("truth %s cache_store %zu %zu\n", phase, cached.inuse, cached.alloc);
    std::printf("phase %s\n", phase);
    std::fflush(stdout);
    char line[64];
    if (std::fgets(line, sizeof line, stdin) == nullptr)
        std::fputs("stdin closed\n", stderr);
}

int main()
{
    cache_store(cache_entries);
    leak_context_chain(48 * MiB);
    churn_buffers(160 * MiB);
    phase_done("a");

    leak_context_chain(160 * MiB);
    churn_buffers(160 * MiB);
    cache_store(cache_entries / 4);
    phase_done("b");
    return 0;
}
