// GPU benchmarks: train step and forward tokens/s, sparse-apply bandwidth against the HBM roofline, cold/warm kernel compile.
//
// The bundle is $MOLT_BENCH_BUNDLE (scripts/gpu-check writes the d=768, ref:16 schedule with
// tests/fixtures/make_fixture.py); batch $MOLT_BENCH_BATCH (8192). The step, forward and apply
// benchmarks run at both precisions, /f32 and /bf16 (docs/bundle.md, "Precision"): a bundle
// without .cu files gets its wrappers written for either; a compiled one runs as compiled. Thresholds are set so about
// 33 of the 496 transforms fire per token (theta = 1.5 on unit-variance pre-activations), the
// same rule bench/peers_torch.py uses. The compile benchmarks need only NVRTC.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <unistd.h>

#include "executor_base.h"
#include "molt/backend.h"
#include "molt/config.h"
#include "molt/cost_model.h"
#include "molt/cuda.h"
#include "molt/plan.h"

namespace {

using namespace molt;
namespace fs = std::filesystem;

std::string bundleDir() { return config::benchBundle(); }
int64_t batchSize() { return config::benchBatch() > 0 ? config::benchBatch() : 8192; }

/// Peak HBM bandwidth in GB/s by device name (0: unknown, no roofline fraction reported).
double peakGBs(const std::string &device) {
  if (device.find("H200") != std::string::npos)
    return 4800;
  if (device.find("H100") != std::string::npos)
    return device.find("PCIe") != std::string::npos ? 2000 : 3350;
  if (device.find("A100") != std::string::npos)
    return 2039;
  return 0;
}

struct Gpu {
  std::unique_ptr<Backend> backend;
  Plan plan;
  std::string error;
};

Gpu &gpu() {
  static Gpu g = [] {
    Gpu g;
    auto b = createBackend("cuda");
    if (!b) {
      g.error = b.status().message();
      return g;
    }
    auto p = loadPlan(bundleDir());
    if (!p) {
      g.error = "MOLT_BENCH_BUNDLE: " + p.status().message();
      return g;
    }
    g.backend = std::move(*b);
    g.plan = std::move(*p);
    return g;
  }();
  return g;
}

/// Sets `plan` to the benchmark's plan at `precision`; false (and a skip) when the bundle's
/// compiled sources fix another (the wrappers, which carry the precision, come from them).
bool planAt(const std::string &precision, Plan &plan, benchmark::State &state) {
  plan = gpu().plan;
  if (plan.precision == precision)
    return true;
  for (const KernelDesc &k : plan.kernels)
    if (cuda::hasKernelSource(k, bundleDir())) {
      state.SkipWithError(("the bundle was compiled for " + plan.precision + "; compile one with "
                           "--precision " + precision + " for this variant").c_str());
      return false;
    }
  plan.precision = precision;
  return true;
}

/// An executor with the benchmark's parameters and data, and `stats` from one train step.
std::unique_ptr<Executor> prepared(const Plan &plan, benchmark::State &state) {
  auto ex = gpu().backend->prepare(plan, bundleDir(), batchSize());
  if (!ex) {
    state.SkipWithError(ex.status().message().c_str());
    return nullptr;
  }
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 1.f);
  const double d = double(plan.model.d_model);
  for (const ParamDesc &p : plan.params) {
    std::vector<float> v(size_t((*ex)->info(p.name)->numel()));
    const double std = p.name == "theta" ? 0.0 : p.name == "enc_w" ? 1.0 / std::sqrt(d) : p.init.value;
    for (float &x : v)
      x = p.name == "theta" ? 1.5f : p.init.kind == "normal" ? float(std) * normal(rng) : 0.f;
    (void)(*ex)->write(p.name, v.data(), v.size() * 4);
  }
  for (const char *n : {"x", "y"}) {
    std::vector<float> v(size_t((*ex)->info(n)->numel()));
    for (float &x : v)
      x = normal(rng);
    (void)(*ex)->write(n, v.data(), v.size() * 4);
  }
  const float sc[8] = {0.01f, 1e-4f, 0.9f, 0.999f, 1e-8f, 1.0f, 1.0f, 1.f / float(batchSize())};
  (void)(*ex)->write("scalars", sc, sizeof sc);
  return std::move(*ex);
}

bool ready(benchmark::State &state) {
  if (!gpu().error.empty()) {
    state.SkipWithError(gpu().error.c_str());
    return false;
  }
  return true;
}

/// Times `entry`; `setup` (when not empty) runs once first, e.g. forward to build pair lists.
void timeEntry(benchmark::State &state, const Plan &plan, const std::string &entry, double bytes,
               const std::string &setup = "") {
  auto ex = prepared(plan, state);
  if (!ex)
    return;
  if (!setup.empty())
    (void)ex->run(setup);
  if (Status s = ex->run(entry); !s.isOk() || !(s = ex->synchronize()).isOk()) {
    state.SkipWithError(s.message().c_str());
    return;
  }
  float stats[16];
  (void)ex->read("stats", stats, sizeof stats);
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    (void)ex->run(entry);
    (void)ex->synchronize();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  const int64_t B = batchSize();
  state.counters["tokens/s"] = benchmark::Counter(double(B), benchmark::Counter::kIsIterationInvariantRate);
  if (stats[3] > 0)
    state.counters["L0"] = stats[3] / double(B);
  if (bytes > 0) {
    state.counters["GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
    if (double peak = peakGBs(gpu().backend->deviceName()); peak > 0)
      state.counters["roofline"] =
          benchmark::Counter(bytes / 1e9 / peak, benchmark::Counter::kIsIterationInvariantRate);
  }
  state.SetLabel(gpu().backend->deviceName());
}

void BM_CudaTrainStep(benchmark::State &state, const char *precision) {
  Plan plan;
  if (ready(state) && planAt(precision, plan, state))
    timeEntry(state, plan, "train_step", 0);
}

void BM_CudaForward(benchmark::State &state, const char *precision) {
  Plan plan;
  if (ready(state) && planAt(precision, plan, state))
    timeEntry(state, plan, "forward", 0);
}

/// The bucket_apply launches of forward alone, after one forward built the pair lists. Bytes
/// it must move: every U_t, V_t once (all transforms are active at this batch), x read once
/// (both at 2 bytes an element in bf16), yhat read and written once, and each listed pair's
/// token and gate.
void BM_CudaSparseApply(benchmark::State &state, const char *precision) {
  Plan plan;
  if (!ready(state) || !planAt(precision, plan, state))
    return;
  const double elem = plan.precision == "bf16" ? 2 : 4;
  std::vector<Invocation> apply;
  for (const Invocation &inv : plan.entry_points.at("forward"))
    if (plan.findKernel(inv.kernel)->op == "bucket_apply")
      apply.push_back(inv);
  plan.entry_points["bench_apply"] = apply;
  const double D = double(plan.model.d_model), B = double(batchSize());
  double weights = 0;
  for (const Bucket &b : plan.model.buckets)
    weights += 2.0 * double(b.count) * D * double(b.rank) * elem;
  // Pairs: L0 per token, ~33 here; counted from the lists the forward pass leaves behind.
  auto ex = prepared(plan, state);
  if (!ex)
    return;
  (void)ex->run("forward");
  int32_t pairs = 0;
  (void)ex->read("pair_count", &pairs, 4);
  ex.reset();
  timeEntry(state, plan, "bench_apply", weights + B * D * (elem + 8) + double(pairs) * 8, "forward");
  state.counters["pairs"] = pairs;
}

/// Each train_step kernel's time against its floor from the cost model (molt/cost_model.h) on
/// the H200's peaks: the executor's profiling mode synchronises after every launch, so a
/// kernel's time includes its launch latency (a few microseconds). Prints one row per kernel;
/// the counters are the step's sums.
void BM_CudaKernelFloors(benchmark::State &state, const char *precision) {
  Plan plan;
  if (!ready(state) || !planAt(precision, plan, state))
    return;
  auto ex = prepared(plan, state);
  if (!ex)
    return;
  auto *base = dynamic_cast<ExecutorBase *>(ex.get());
  if (!base) {
    state.SkipWithError("the CUDA executor does not profile");
    return;
  }
  if (Status s = ex->run("train_step"); !s.isOk() || !(s = ex->synchronize()).isOk()) {
    state.SkipWithError(s.message().c_str());
    return;
  }
  StepCounts counts{batchSize(), std::vector<int32_t>(size_t(ex->info("pair_ptr")->numel()))};
  (void)ex->read("pair_ptr", counts.pairPtr.data(), counts.pairPtr.size() * 4);
  base->setProfiling(true);
  int64_t steps = 0;
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    (void)ex->run("train_step");
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    ++steps;
  }
  const DevicePeak peak = h200Peak(plan.precision);
  double time = 0, floor = 0;
  std::printf("%-26s %10s %10s %8s %9s  (%s, floor on %s)\n", "kernel", "us", "floor us", "x floor",
              "model GB/s", plan.precision.c_str(), peak.name.c_str());
  for (const Invocation &inv : plan.entry_points.at("train_step")) {
    auto cost = kernelCost(plan, inv, counts);
    auto it = base->profile().find(inv.kernel);
    if (!cost || it == base->profile().end() || steps == 0)
      continue;
    const double sec = it->second / double(steps), fl = floorSeconds(*cost, peak);
    time += sec;
    floor += fl;
    std::printf("%-26s %10.1f %10.1f %8.1f %9.0f\n", inv.kernel.c_str(), sec * 1e6, fl * 1e6,
                sec / fl, cost->totalBytes() / sec / 1e9);
  }
  std::printf("%-26s %10.1f %10.1f %8.1f\n", "train_step (sum)", time * 1e6, floor * 1e6, time / floor);
  state.counters["kernels_ms"] = time * 1e3;
  state.counters["floor_ms"] = floor * 1e3;
  state.counters["x_floor"] = floor > 0 ? time / floor : 0;
  state.SetLabel(gpu().backend->deviceName());
}

/// prepare() with a warm kernel cache: cache lookups, module loads and allocation.
void BM_CudaWarmStart(benchmark::State &state) {
  if (!ready(state))
    return;
  (void)gpu().backend->prepare(gpu().plan, bundleDir(), batchSize()); // warms cache and pool
  for (auto _ : state) {
    auto t0 = std::chrono::steady_clock::now();
    auto ex = gpu().backend->prepare(gpu().plan, bundleDir(), batchSize());
    if (!ex) {
      state.SkipWithError(ex.status().message().c_str());
      return;
    }
    (*ex)->synchronize().isOk();
    state.SetIterationTime(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
}

/// NVRTC only: every kernel of the bundle into an empty cache (cold), then again (warm).
void compileBench(benchmark::State &state, bool warm) {
  auto plan = loadPlan(bundleDir());
  if (!plan) {
    state.SkipWithError(("MOLT_BENCH_BUNDLE: " + plan.status().message()).c_str());
    return;
  }
  const std::string arch = config::benchArch();
  const fs::path dir = fs::temp_directory_path() / ("molt-bench-cache-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  if (warm)
    (void)cuda::compilePlan(*plan, bundleDir(), arch.empty() ? "sm_90" : arch, dir.string());
  for (auto _ : state) {
    if (!warm) {
      state.PauseTiming();
      fs::remove_all(dir);
      state.ResumeTiming();
    }
    auto images = cuda::compilePlan(*plan, bundleDir(), arch.empty() ? "sm_90" : arch, dir.string());
    if (!images) {
      state.SkipWithError(images.status().message().c_str());
      break;
    }
  }
  fs::remove_all(dir);
  state.counters["kernels"] = double(plan->kernels.size());
}
void BM_NvrtcColdCompile(benchmark::State &state) { compileBench(state, false); }
void BM_NvrtcWarmCache(benchmark::State &state) { compileBench(state, true); }

BENCHMARK(BM_NvrtcColdCompile)->Unit(benchmark::kMillisecond)->Iterations(2);
BENCHMARK(BM_NvrtcWarmCache)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_CudaWarmStart)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(5);
BENCHMARK_CAPTURE(BM_CudaSparseApply, f32, "f32")->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_CudaSparseApply, bf16, "bf16")->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_CudaForward, f32, "f32")->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_CudaForward, bf16, "bf16")->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_CudaTrainStep, f32, "f32")->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_CudaTrainStep, bf16, "bf16")->Unit(benchmark::kMillisecond)->UseManualTime();
BENCHMARK_CAPTURE(BM_CudaKernelFloors, f32, "f32")->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(20);
BENCHMARK_CAPTURE(BM_CudaKernelFloors, bf16, "bf16")->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(20);

} // namespace

BENCHMARK_MAIN();
