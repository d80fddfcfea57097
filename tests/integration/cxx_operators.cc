// C++'s operator new and delete under the library, for test_cxx_operators.sh.
//
// Usage: cxx_operators LIBRARY_BASENAME
//
// Prints, for each replaceable operator new and delete (their mangled
// names), whether the definition the program's calls bind to is in the
// file LIBRARY_BASENAME ("ours") or elsewhere (the C++ runtime); then what
// each form does when memory cannot be had: plain, array and aligned new
// throw std::bad_alloc, after calling the new_handler once (it removes
// itself), the nothrow forms return a null pointer.  That part must read
// the same with any allocator.  Then it allocates and frees through every
// form, checking alignment and that blocks do not overlap; any failure
// exits with status 1.

#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>

namespace {

const char *const kOperators[] = {
    "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
    "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
    "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t", "_ZdlPvSt11align_val_tRKSt9nothrow_t",
    "_ZdaPvSt11align_val_tRKSt9nothrow_t",
};

int failures = 0;
int handler_calls = 0;

void fail(const char *what) {
  std::printf("FAIL: %s\n", what);
  failures++;
}

void handler() {
  handler_calls++;
  std::set_new_handler(nullptr);
}

// The size, hidden from the compiler, which may otherwise drop a new whose
// result is unused or fold a size it knows to be impossible.
volatile size_t huge = static_cast<size_t>(1) << 62;

template <typename F> void expect_bad_alloc(const char *what, F f) {
  handler_calls = 0;
  std::set_new_handler(handler);
  try {
    void *p = f();
    std::printf("%s: returned %s\n", what, p ? "a pointer" : "null");
  } catch (const std::bad_alloc &) {
    std::printf("%s: std::bad_alloc after %d new_handler call(s)\n", what, handler_calls);
  }
  std::set_new_handler(nullptr);
}

template <typename F> void expect_null(const char *what, F f) {
  handler_calls = 0;
  std::set_new_handler(handler);
  void *p = f();
  std::printf("%s: %s after %d new_handler call(s)\n", what, p ? "a pointer" : "null",
              handler_calls);
  std::set_new_handler(nullptr);
}

void fill_check(unsigned char *p, size_t n, size_t align, unsigned char tag, const char *what) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0) fail(what);
  std::memset(p, tag, n);
}

bool intact(const unsigned char *p, size_t n, unsigned char tag) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != tag) return false;
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s LIBRARY_BASENAME\n", argv[0]);
    return 2;
  }
  for (const char *name : kOperators) {
    void *fn = dlsym(RTLD_DEFAULT, name);
    Dl_info info;
    const char *where = "missing";
    if (fn != nullptr && dladdr(fn, &info) != 0 && info.dli_fname != nullptr) {
      const char *base = std::strrchr(info.dli_fname, '/');
      base = base ? base + 1 : info.dli_fname;
      where = std::strcmp(base, argv[1]) == 0 ? "ours" : "runtime";
    }
    std::printf("%s %s\n", name, where);
  }

  expect_bad_alloc("new", [] { return ::operator new(huge); });
  expect_bad_alloc("new[]", [] { return ::operator new[](huge); });
  expect_bad_alloc("new aligned", [] { return ::operator new(huge, std::align_val_t(64)); });
  expect_bad_alloc("new[] aligned", [] { return ::operator new[](huge, std::align_val_t(4096)); });
  expect_null("new nothrow", [] { return ::operator new(huge, std::nothrow); });
  expect_null("new[] nothrow", [] { return ::operator new[](huge, std::nothrow); });
  expect_null("new aligned nothrow",
              [] { return ::operator new(huge, std::align_val_t(64), std::nothrow); });
  expect_null("new[] aligned nothrow",
              [] { return ::operator new[](huge, std::align_val_t(4096), std::nothrow); });

  // Every form, many sizes, all live at once, then freed by the matching
  // delete (sized where the size is known).
  const size_t sizes[] = {0, 1, 16, 100, 1000, 5000, 40000, 300000};
  const size_t aligns[] = {32, 64, 4096, 65536};
  struct Block {
    unsigned char *p;
    size_t n, align;
    int form;
  };
  Block blocks[8 * 8 * 4];
  size_t nb = 0;
  unsigned char tag = 1;
  for (size_t n : sizes) {
    for (int form = 0; form < 8; form++) {
      for (size_t align : aligns) {
        void *p = nullptr;
        size_t a = form >= 4 ? align : alignof(std::max_align_t);
        switch (form) {
        case 0: p = ::operator new(n); break;
        case 1: p = ::operator new[](n); break;
        case 2: p = ::operator new(n, std::nothrow); break;
        case 3: p = ::operator new[](n, std::nothrow); break;
        case 4: p = ::operator new(n, std::align_val_t(a)); break;
        case 5: p = ::operator new[](n, std::align_val_t(a)); break;
        case 6: p = ::operator new(n, std::align_val_t(a), std::nothrow); break;
        case 7: p = ::operator new[](n, std::align_val_t(a), std::nothrow); break;
        }
        if (p == nullptr) {
          fail("a small new returned null");
          continue;
        }
        fill_check(static_cast<unsigned char *>(p), n, a, tag, "misaligned block");
        blocks[nb++] = Block{static_cast<unsigned char *>(p), n, a, form};
        tag = static_cast<unsigned char>(tag % 250 + 1);
        if (form < 4) break;   // the alignment does not apply
      }
    }
  }
  tag = 1;
  for (size_t i = 0; i < nb; i++) {
    Block &b = blocks[i];
    if (!intact(b.p, b.n, tag)) fail("a block was overwritten");
    tag = static_cast<unsigned char>(tag % 250 + 1);
    std::align_val_t al = static_cast<std::align_val_t>(b.align);
    switch (b.form) {
    case 0: ::operator delete(b.p, b.n); break;
    case 1: ::operator delete[](b.p); break;
    case 2: ::operator delete(b.p, std::nothrow); break;
    case 3: ::operator delete[](b.p, b.n); break;
    case 4: ::operator delete(b.p, b.n, al); break;
    case 5: ::operator delete[](b.p, al); break;
    case 6: ::operator delete(b.p, al, std::nothrow); break;
    case 7: ::operator delete[](b.p, b.n, al); break;
    }
  }
  ::operator delete(nullptr);
  ::operator delete[](nullptr, std::align_val_t(64));
  std::printf("blocks: %zu\n", nb);
  return failures ? 1 : 0;
}
