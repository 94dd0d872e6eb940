// CPU train-step throughput: our sparse plan against the dense formulation (every transform for
// every token, same BLAS, same math), and the cost of doubling the transforms at fixed L0.
//
//   build-cpu/bin/bench_cpu_train_step [--benchmark_filter=gpt2]
//   MOLT_PROFILE=1: per-kernel wall time of one sparse step; MOLT_BENCH_BATCH=N: other batch.
//
// Inputs are synthetic: x ~ N(0, I), unit-norm encoder rows (so pre ~ N(0, 1)) and every θ_t at
// the normal quantile that opens kTargetL0 of the T transforms per token on average.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>

#include <sys/resource.h>

#include "cpu/cpu_executor.h"
#include "kernels/cpu/frob_norm.h"
#include "kernels/cpu/gemm.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/penalty.h"
#include "molt/config.h"

namespace {

using namespace molt;
using cpu::Trans;

/// Tokens per step: 2048 (the target), or MOLT_BENCH_BATCH.
int64_t batchSize() {
  return config::benchBatch() > 0 ? int64_t(config::benchBatch()) : int64_t(2048);
}
constexpr double kTargetL0 = 24;

/// MOLT_BENCH_BUNDLES/<name> when that holds a manifest (compiler-made bundles), else ours.
std::string bundleDir(const std::string &name) {
  if (const std::string dir = config::benchBundles(); !dir.empty()) {
    std::string candidate = dir + "/" + name;
    if (std::filesystem::exists(candidate + "/manifest.json"))
      return candidate;
  }
  return std::string(MOLT_BENCH_BUNDLE_DIR) + "/" + name;
}

/// z with P(N(0,1) > z) = p, by bisection on erfc.
double upperQuantile(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 200; ++i) {
    double mid = (lo + hi) / 2;
    (0.5 * std::erfc(mid / std::sqrt(2.0)) > p ? lo : hi) = mid;
  }
  return (lo + hi) / 2;
}

std::unique_ptr<CpuExecutor<float>> prepare(const std::string &name, benchmark::State &state) {
  auto plan = loadPlan(bundleDir(name));
  if (!plan.isOk()) {
    state.SkipWithError(plan.status().message().c_str());
    return nullptr;
  }
  auto exec = CpuExecutor<float>::create(*plan, batchSize());
  if (!exec.isOk()) {
    state.SkipWithError(exec.status().message().c_str());
    return nullptr;
  }
  CpuExecutor<float> &e = **exec;
  const int64_t T = plan->model.numTransforms(), D = plan->model.d_model;
  std::mt19937_64 rng(42);
  std::normal_distribution<float> unit(0.f, 1.f);
  for (const ParamDesc &p : plan->params) {
    float *w = e.data(p.name);
    int64_t n = e.info(p.name)->numel();
    float std = p.init.kind == "normal" ? float(p.init.value) : 0.f;
    // Scale U so ‖U_tV_t‖_F is about 0.25: the tanh penalty stays off its flat tails and
    // frob_norm_bwd does real work, as in training.
    if (p.name[0] == 'u')
      std = float(0.25 / std::sqrt(double(p.shape[1]) * double(p.shape[2])));
    for (int64_t i = 0; i < n; ++i)
      w[i] = std * unit(rng);
  }
  float *enc = e.data("enc_w");
  for (int64_t t = 0; t < T; ++t) {
    double s = 0;
    for (int64_t j = 0; j < D; ++j)
      s += double(enc[t * D + j]) * enc[t * D + j];
    for (int64_t j = 0; j < D; ++j)
      enc[t * D + j] = float(enc[t * D + j] / std::sqrt(s));
  }
  if (float *theta = e.data("theta"))
    std::fill(theta, theta + T, float(upperQuantile(kTargetL0 / double(T))));
  for (const char *name : {"x", "y"}) {
    float *v = e.data(name);
    for (int64_t i = 0; i < batchSize() * D; ++i)
      v[i] = unit(rng);
  }
  // λ, lr, β1, β2, ε, clip, step, 1/B. A tiny lr keeps L0 where it was set for every iteration.
  const float scalars[8] = {0.01f, 1e-6f, 0.9f, 0.999f, 1e-8f, 1.0f, 1.0f, 1.0f / float(batchSize())};
  std::copy(scalars, scalars + 8, e.data("scalars"));
  return std::move(*exec);
}

/// The dense formulation of the same train step on the same storage: every transform is applied
/// to every token (masked by the gate), with the same GEMMs, loss, norms and optimiser kernels.
void denseTrainStep(CpuExecutor<float> &e) {
  const ModelDesc &m = e.plan().model;
  const int64_t B = batchSize(), D = m.d_model, T = m.numTransforms();
  const float eps = float(m.gate.bandwidth), lamOverB = e.data("scalars")[0] / float(B);
  const cpu::PenaltyParams pen{m.penalty.kind == "l1" ? cpu::PenaltyKind::L1 : cpu::PenaltyKind::Tanh,
                               m.penalty.c};
  float *x = e.data("x"), *pre = e.data("pre"), *yhat = e.data("yhat"), *dy = e.data("d_yhat");
  float *stats = e.data("stats"), *norm = e.data("norm"), *dNorm = e.data("d_norm");
  const float *theta = e.data("theta");
  std::fill(stats, stats + 16, 0.f);
  for (const ParamDesc &p : e.plan().params)
    std::fill(e.data("d_" + p.name), e.data("d_" + p.name) + e.info(p.name)->numel(), 0.f);

  // Encoder and gate, dense [B,T].
  cpu::gemmParallel(Trans::No, Trans::Yes, B, T, D, 1.f, x, D, e.data("enc_w"), D, 0.f, pre, T);
  std::vector<float> gate(size_t(B * T)), dGate(size_t(B * T), 0.f);
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) {
      float a = pre[i * T + t] -= e.data("enc_b")[t];
      gate[size_t(i * T + t)] = a > theta[t] ? a : 0.f;
      stats[3] += a > theta[t] && a > 0;
    }

  auto forEachTransform = [&](auto &&fn) {
    for (size_t k = 0; k < m.buckets.size(); ++k)
      for (int64_t n = 0; n < m.buckets[k].count; ++n)
        fn(k, n, m.bucketOffset(k) + n, m.buckets[k].rank);
  };
  auto bucketParam = [&](const char *p, size_t k) { return e.data(p + std::to_string(k)); };
  std::vector<float> h(size_t(B * 512)), z(size_t(B * 512));
  auto gatherGateColumn = [&](int64_t t, float *rows, int64_t R) {
    for (int64_t i = 0; i < B; ++i)
      for (int64_t r = 0; r < R; ++r)
        rows[i * R + r] *= gate[size_t(i * T + t)];
  };

  for (size_t k = 0; k < m.buckets.size(); ++k)
    cpu::frobNorm(D, m.buckets[k].rank, m.buckets[k].count, bucketParam("u", k),
                  bucketParam("v", k), norm + m.bucketOffset(k), bucketParam("gram_u", k),
                  bucketParam("gram_v", k));
  std::fill(yhat, yhat + B * D, 0.f);
  forEachTransform([&](size_t k, int64_t n, int64_t t, int64_t R) {
    const float *u = bucketParam("u", k) + n * D * R, *v = bucketParam("v", k) + n * R * D;
    cpu::gemmParallel(Trans::No, Trans::Yes, B, R, D, 1.f, x, D, v, D, 0.f, h.data(), R);
    gatherGateColumn(t, h.data(), R);
    cpu::gemmParallel(Trans::No, Trans::Yes, B, D, R, 1.f, h.data(), R, u, R, 1.f, yhat, D);
  });
  cpu::addBias(B, D, e.data("dec_b"), yhat);
  cpu::mseLoss(B, D, yhat, e.data("y"), dy, stats);

  // Penalty over every (token, transform), then the backward of every transform.
  std::fill(dNorm, dNorm + T, 0.f);
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) {
      float g = gate[size_t(i * T + t)], p = g * norm[t], sl = pen.slope(p);
      stats[2] += pen.value(p);
      dGate[size_t(i * T + t)] = lamOverB * sl * norm[t];
      dNorm[t] += lamOverB * sl * g;
    }
  forEachTransform([&](size_t k, int64_t n, int64_t t, int64_t R) {
    const float *u = bucketParam("u", k) + n * D * R, *v = bucketParam("v", k) + n * R * D;
    cpu::gemmParallel(Trans::No, Trans::Yes, B, R, D, 1.f, x, D, v, D, 0.f, h.data(), R);
    cpu::gemmParallel(Trans::No, Trans::No, B, R, D, 1.f, dy, D, u, R, 0.f, z.data(), R);
    for (int64_t i = 0; i < B; ++i) {
      float dot = 0;
      for (int64_t r = 0; r < R; ++r)
        dot += h[size_t(i * R + r)] * z[size_t(i * R + r)];
      dGate[size_t(i * T + t)] += dot;
    }
    gatherGateColumn(t, h.data(), R);
    gatherGateColumn(t, z.data(), R);
    cpu::gemmParallel(Trans::Yes, Trans::No, D, R, B, 1.f, dy, D, h.data(), R, 1.f,
                      bucketParam("d_u", k) + n * D * R, R);
    cpu::gemmParallel(Trans::Yes, Trans::No, R, D, B, 1.f, z.data(), R, x, D, 1.f,
                      bucketParam("d_v", k) + n * R * D, D);
  });
  for (size_t k = 0; k < m.buckets.size(); ++k)
    cpu::frobNormBwd(D, m.buckets[k].rank, m.buckets[k].count, dNorm + m.bucketOffset(k),
                     norm + m.bucketOffset(k), bucketParam("u", k), bucketParam("v", k),
                     bucketParam("gram_u", k), bucketParam("gram_v", k), bucketParam("d_u", k),
                     bucketParam("d_v", k));

  // Encoder backward, dense: da [B,T] then one GEMM.
  std::vector<float> da(size_t(B * T));
  float *dTheta = e.data("d_theta"), *dEncB = e.data("d_enc_b");
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) {
      float a = pre[i * T + t], dg = dGate[size_t(i * T + t)];
      da[size_t(i * T + t)] = a > theta[t] ? dg : 0.f;
      dEncB[t] -= da[size_t(i * T + t)];
      if (std::abs(a - theta[t]) < eps / 2)
        dTheta[t] += dg * (-theta[t] / eps);
    }
  cpu::gemmParallel(Trans::Yes, Trans::No, T, D, B, 1.f, da.data(), T, x, D, 0.f,
                    e.data("d_enc_w"), D);
  cpu::biasGrad(B, D, dy, e.data("d_dec_b"));
  std::vector<cpu::ParamSlot<float>> slots;
  for (const ParamDesc &p : e.plan().params)
    slots.push_back({e.data(p.name), e.data("d_" + p.name), e.data("m_" + p.name),
                     e.data("v_" + p.name), e.info(p.name)->numel()});
  cpu::gradNorm(slots, stats);
  cpu::adam(slots, e.data("scalars"), stats);
}

/// Seconds per step, wall and process CPU (all threads): on a shared machine the wall clock
/// measures the neighbours as much as us, CPU time measures our work.
struct StepTime {
  double wall = 0, cpu = 0;
};
std::map<std::string, StepTime> &secondsPerStep() {
  static std::map<std::string, StepTime> table;
  return table;
}

double processCpuSeconds() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return double(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         1e-6 * double(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

void trainStep(benchmark::State &state, const std::string &bundle, bool dense) {
  auto exec = prepare(bundle, state);
  if (!exec)
    return;
  double seconds = 0;
  const double cpuStart = processCpuSeconds();
  for (auto _ : state) {
    auto start = std::chrono::steady_clock::now();
    if (dense)
      denseTrainStep(*exec);
    else if (Status s = exec->run("train_step"); !s.isOk()) {
      state.SkipWithError(s.message().c_str());
      return;
    }
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  const double cpuSeconds = processCpuSeconds() - cpuStart;
  if (config::profile() && !dense) {
    // Per-kernel wall time of one more step, for finding where the sparse step goes.
    exec->setProfiling(true);
    (void)exec->run("train_step");
    for (const auto &[kernel, sec] : exec->profile())
      std::fprintf(stderr, "  %-24s %8.2f ms\n", kernel.c_str(), sec * 1e3);
  }
  const float *stats = exec->data("stats");
  state.counters["L0"] = stats[3] / double(batchSize());
  state.counters["T"] = double(exec->plan().model.numTransforms());
  state.counters["tokens/s"] = benchmark::Counter(double(batchSize()) * double(state.iterations()),
                                                  benchmark::Counter::kIsRate);
  const double steps = double(state.iterations());
  state.counters["cpu_s/step"] = cpuSeconds / steps;
  secondsPerStep()[bundle + (dense ? "/dense" : "/sparse")] = {seconds / steps, cpuSeconds / steps};
}

void registerAll() {
  struct Case {
    const char *bundle;
    bool dense;
    int iterations;
  };
  for (Case c : {Case{"minilm-n2", false, 10}, Case{"minilm-n2", true, 3},
                 Case{"gpt2-n8", false, 5}, Case{"gpt2-n8", true, 2},
                 Case{"gpt2-n16", false, 5}}) {
    std::string name = std::string("train_step/") + c.bundle + (c.dense ? "/dense" : "/sparse");
    benchmark::RegisterBenchmark(name.c_str(), [c](benchmark::State &s) {
      trainStep(s, c.bundle, c.dense);
    })->Iterations(c.iterations)->Unit(benchmark::kMillisecond)->UseRealTime();
  }
}

void printRatios() {
  auto &t = secondsPerStep();
  auto ratio = [&](const std::string &a, const std::string &b, const char *what) {
    if (t.count(a) && t.count(b))
      std::printf("%-64s wall %6.2fx   cpu %6.2fx\n", what, t[a].wall / t[b].wall,
                  t[a].cpu / t[b].cpu);
  };
  std::printf("\nthreads: %d\n", cpu::threadCount());
  ratio("minilm-n2/dense", "minilm-n2/sparse", "d=384 N=2: dense / sparse step time");
  ratio("gpt2-n8/dense", "gpt2-n8/sparse", "d=768 N=8: dense / sparse step time (target >= 5)");
  ratio("gpt2-n16/sparse", "gpt2-n8/sparse",
        "d=768: N=16 / N=8 sparse step time at fixed L0 (target < 1.3)");
}

} // namespace

int main(int argc, char **argv) {
  registerAll();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  printRatios();
  return 0;
}
