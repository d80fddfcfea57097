// C++ allocation workload for the LD_PRELOAD integration test.
//
// Usage: cxx_newdelete LIBRARY_BASENAME
//
// The first line says whether a file named LIBRARY_BASENAME is mapped into
// the process; test_programs.sh expects "yes" only under LD_PRELOAD.  The
// rest is a digest that depends only on fixed seeds, so a run on any
// allocator prints the same text.
//
// Every operator new/delete form that ends in malloc/free is used: plain
// and array new, sized delete, std::align_val_t new for 64 and 4096 byte
// alignment, and the containers that drive them (vector growth, string,
// map, unordered_map rehash, make_shared).  Several threads run at once, and
// a hand-off queue makes each thread free objects another thread allocated.
// Every block is filled with a pattern and checked before it is freed, so
// an overlapping or clobbered block is reported; any failure exits with
// status 1.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kThreads = 4;
constexpr int kRounds = 6;

std::atomic<int> failures{0};

void fail(const char *what, int thread, int round) {
  std::fprintf(stderr, "cxx_newdelete: thread %d round %d: %s\n", thread, round, what);
  failures.fetch_add(1);
}

// FNV-1a, so the digest is the same on every platform and allocator.
struct Digest {
  uint64_t h = 1469598103934665603ull;
  void add(const void *p, size_t n) {
    const unsigned char *b = static_cast<const unsigned char *>(p);
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  }
  void add(uint64_t v) { add(&v, sizeof v); }
  void add(const std::string &s) { add(s.data(), s.size()); }
};

// xorshift64*: a deterministic stream of sizes and keys per thread.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }
};

unsigned char pattern(uint64_t tag, size_t i) {
  return static_cast<unsigned char>((tag * 131 + i * 7) ^ (tag >> 8));
}

void fill(unsigned char *p, size_t n, uint64_t tag) {
  for (size_t i = 0; i < n; i++) p[i] = pattern(tag, i);
}

bool intact(const unsigned char *p, size_t n, uint64_t tag) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != pattern(tag, i)) return false;
  return true;
}

// A block handed from one thread to another, which checks and frees it.
struct Parcel {
  unsigned char *data;
  size_t size;
  uint64_t tag;
  std::shared_ptr<std::string> shared;
};

class Mailbox {
 public:
  void put(Parcel p) {
    std::lock_guard<std::mutex> lock(mu_);
    q_.push_back(std::move(p));
    cv_.notify_one();
  }
  Parcel take() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !q_.empty(); });
    Parcel p = std::move(q_.front());
    q_.pop_front();
    return p;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Parcel> q_;
};

struct Node {
  uint64_t key;
  Node *next;
  char payload[40];
};

void plain_new_delete(int t, int round, Rng &rng, Digest &d) {
  // Linked nodes of one size class, freed in a different order than made.
  std::vector<Node *> nodes;
  Node *head = nullptr;
  for (int i = 0; i < 20000; i++) {
    Node *n = new Node;
    n->key = rng.next();
    n->next = head;
    std::memset(n->payload, static_cast<int>(n->key & 0x7f), sizeof n->payload);
    head = n;
    nodes.push_back(n);
  }
  for (size_t i = 0; i < nodes.size(); i += 2) {
    if (nodes[i]->payload[39] != static_cast<char>(nodes[i]->key & 0x7f)) fail("node payload", t, round);
    d.add(nodes[i]->key);
    delete nodes[i];
  }
  for (size_t i = 1; i < nodes.size(); i += 2) delete nodes[i];

  // Arrays of mixed sizes from 1 byte to 256 KiB, kept live in a window.
  std::vector<std::pair<unsigned char *, size_t>> live(256, {nullptr, 0});
  for (int i = 0; i < 30000; i++) {
    size_t slot = rng.below(live.size());
    if (live[slot].first) {
      uint64_t tag = slot * 1000003u + live[slot].second;
      if (!intact(live[slot].first, live[slot].second, tag)) fail("array contents", t, round);
      delete[] live[slot].first;
    }
    size_t n = (i % 97 == 0) ? 1 + rng.below(256 * 1024) : 1 + rng.below(i % 3 ? 128 : 4096);
    live[slot] = {new unsigned char[n], n};
    fill(live[slot].first, n, slot * 1000003u + n);
  }
  for (size_t slot = 0; slot < live.size(); slot++) {
    if (!live[slot].first) continue;
    d.add(live[slot].second);
    if (!intact(live[slot].first, live[slot].second, slot * 1000003u + live[slot].second))
      fail("array contents at end", t, round);
    delete[] live[slot].first;
  }
}

struct alignas(64) CacheLine {
  uint64_t words[8];
};

struct alignas(4096) Page {
  unsigned char bytes[4096];
};

void aligned_new(int t, int round, Rng &rng, Digest &d) {
  std::vector<CacheLine *> lines;
  std::vector<Page *> pages;
  for (int i = 0; i < 3000; i++) {
    CacheLine *c = new CacheLine;  // operator new(size_t, std::align_val_t)
    if (reinterpret_cast<uintptr_t>(c) % 64) fail("CacheLine not 64-aligned", t, round);
    for (int w = 0; w < 8; w++) c->words[w] = rng.next();
    lines.push_back(c);
    if (i % 30 == 0) {
      Page *p = new Page;
      if (reinterpret_cast<uintptr_t>(p) % 4096) fail("Page not 4096-aligned", t, round);
      fill(p->bytes, sizeof p->bytes, i);
      pages.push_back(p);
    }
  }
  // Explicit aligned operator new/delete, array form included.
  for (int i = 0; i < 2000; i++) {
    size_t n = 1 + rng.below(2048);
    void *raw = ::operator new(n, std::align_val_t(64));
    if (reinterpret_cast<uintptr_t>(raw) % 64) fail("align_val_t(64) block misaligned", t, round);
    std::memset(raw, 0xA5, n);
    ::operator delete(raw, n, std::align_val_t(64));
    uint64_t *arr = new (std::align_val_t(64)) uint64_t[n];
    if (reinterpret_cast<uintptr_t>(arr) % 64) fail("aligned new[] misaligned", t, round);
    arr[n - 1] = n;
    d.add(arr[n - 1]);
    ::operator delete[](arr, std::align_val_t(64));
  }
  for (CacheLine *c : lines) {
    d.add(c->words[3]);
    delete c;
  }
  for (size_t i = 0; i < pages.size(); i++) {
    if (!intact(pages[i]->bytes, sizeof pages[i]->bytes, i * 30)) fail("Page contents", t, round);
    delete pages[i];
  }
}

void containers(int t, int round, Rng &rng, Digest &d) {
  std::vector<std::string> words;
  for (int i = 0; i < 20000; i++) {
    std::string s(1 + rng.below(i % 10 ? 24 : 600), 'a' + static_cast<char>(i % 26));
    s += std::to_string(i);
    words.push_back(std::move(s));  // growth by doubling moves every string
  }
  std::map<std::string, size_t> ordered;
  std::unordered_map<uint64_t, std::vector<uint32_t>> hashed;
  for (size_t i = 0; i < words.size(); i++) {
    ordered[words[i]] += i;
    std::vector<uint32_t> &v = hashed[rng.below(5000)];
    v.push_back(static_cast<uint32_t>(i));
  }
  for (auto it = ordered.begin(); it != ordered.end();) {
    if (it->second % 3 == 0)
      it = ordered.erase(it);
    else
      ++it;
  }
  hashed.rehash(1 << 15);
  size_t total = 0;
  for (uint64_t k = 0; k < 5000; k++) {
    auto it = hashed.find(k);
    if (it == hashed.end()) continue;
    total += it->second.size();
    d.add(k);
    d.add(it->second.size());
  }
  if (total != words.size()) fail("unordered_map lost elements", t, round);
  for (const auto &kv : ordered) {
    d.add(kv.first);
    d.add(kv.second);
  }
  std::string joined;
  for (size_t i = 0; i < words.size(); i += 7) joined += words[i];
  d.add(joined);
}

void producer_consumer(int t, int round, Rng &rng, Digest &d, Mailbox &to_next, Mailbox &mine) {
  // Send blocks to the next thread and free the ones the previous thread
  // sent: every one of these frees is remote.
  constexpr int kParcels = 4000;
  for (int i = 0; i < kParcels; i++) {
    size_t n = 1 + rng.below(i % 50 ? 512 : 65536);
    uint64_t tag = (static_cast<uint64_t>(t) << 32) | static_cast<uint64_t>(round) << 20 | i;
    Parcel p{new unsigned char[n], n, tag, std::make_shared<std::string>(n % 100, 'x')};
    fill(p.data, n, tag);
    to_next.put(std::move(p));
    if (i % 4 == 3) {
      for (int k = 0; k < 4; k++) {
        Parcel got = mine.take();
        if (!intact(got.data, got.size, got.tag)) fail("remote block contents", t, round);
        if (got.shared->size() != got.size % 100) fail("shared string size", t, round);
        d.add(got.size);
        delete[] got.data;
      }
    }
  }
}

struct Barrier {
  std::mutex mu;
  std::condition_variable cv;
  int waiting = 0;
  int generation = 0;
  void wait() {
    std::unique_lock<std::mutex> lock(mu);
    int gen = generation;
    if (++waiting == kThreads) {
      waiting = 0;
      generation++;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return gen != generation; });
    }
  }
};

bool library_mapped(const char *basename) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    size_t slash = line.rfind('/');
    if (slash != std::string::npos && line.compare(slash + 1, std::string::npos, basename) == 0)
      return true;
  }
  return false;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s LIBRARY_BASENAME\n", argv[0]);
    return 2;
  }
  std::printf("library mapped: %s\n", library_mapped(argv[1]) ? "yes" : "no");
  std::fflush(stdout);  // kept even if a later crash loses buffered output

  std::vector<Mailbox> mail(kThreads);
  std::vector<Digest> digests(kThreads);
  Barrier barrier;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; t++) {
    threads.emplace_back([&, t] {
      Rng rng(t + 1);
      Digest &d = digests[t];
      for (int round = 0; round < kRounds; round++) {
        plain_new_delete(t, round, rng, d);
        aligned_new(t, round, rng, d);
        containers(t, round, rng, d);
        producer_consumer(t, round, rng, d, mail[(t + 1) % kThreads], mail[t]);
        // Every thread has sent and received the same number of parcels;
        // wait so the next round starts with empty mailboxes.
        barrier.wait();
      }
    });
  }
  for (auto &th : threads) th.join();

  Digest all;
  for (int t = 0; t < kThreads; t++) {
    std::printf("thread %d %016llx\n", t, static_cast<unsigned long long>(digests[t].h));
    all.add(digests[t].h);
  }
  std::printf("digest %016llx\n", static_cast<unsigned long long>(all.h));
  if (failures.load()) {
    std::fprintf(stderr, "cxx_newdelete: %d check(s) failed\n", failures.load());
    return 1;
  }
  return 0;
}
