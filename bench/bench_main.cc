// bench_main.cc - registers every workload of workloads.c with google-benchmark.
//
// The binary uses whatever malloc the process has: bench/run.sh runs it once
// per allocator with LD_PRELOAD.  Each case BM_<name> calls one workload per
// iteration and reports, besides google-benchmark's times:
//   ops_per_iter      allocations per call (the workload's return value)
//   workload_threads  threads the workload runs on (0: the calling thread alone)
//   items_per_second  allocations per second of wall time
//   time_per_op       wall time per allocation (seconds; shown with SI prefix)
// Iterations are sized by wall time (UseRealTime), since several workloads
// run threads, and "cpu_time" is the CPU time of the whole process
// (MeasureProcessCPUTime), so it counts every thread.  On a shared machine
// the CPU time of a single-threaded case is the steadier of the two, as it
// leaves out the time other processes held the core; report.py uses it for
// cases with workload_threads 0 and wall time for the others.
//
// Extra flag, handled before google-benchmark sees the command line:
//   --malloc_library  print the path of the shared object that defines malloc
//                     and exit (run.sh checks that LD_PRELOAD took effect).
// The same path is recorded in the JSON context as "malloc_library".

#include <benchmark/benchmark.h>

#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "workloads.h"

namespace {

std::string MallocLibrary() {
  void *sym = dlsym(RTLD_DEFAULT, "malloc");
  Dl_info info;
  if (sym == nullptr || dladdr(sym, &info) == 0 || info.dli_fname == nullptr)
    return "unknown";
  return info.dli_fname;
}

void RunCase(benchmark::State &state, const wl_case *c) {
  uint64_t ops = 0;
  for (auto _ : state) {
    ops += c->run(&c->params);
  }
  state.SetItemsProcessed(static_cast<int64_t>(ops));
  state.counters["ops_per_iter"] =
      benchmark::Counter(static_cast<double>(ops) / static_cast<double>(state.iterations()));
  state.counters["workload_threads"] = benchmark::Counter(c->params.threads);
  state.counters["time_per_op"] = benchmark::Counter(
      static_cast<double>(ops), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

}  // namespace

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--malloc_library") == 0) {
      std::printf("%s\n", MallocLibrary().c_str());
      return 0;
    }
  }
  for (size_t i = 0; i < wl_ncases; i++) {
    const wl_case *c = &wl_cases[i];
    std::string name = std::string("BM_") + c->name;
    benchmark::RegisterBenchmark(name.c_str(), RunCase, c)
        ->UseRealTime()
        ->MeasureProcessCPUTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::AddCustomContext("malloc_library", MallocLibrary());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
