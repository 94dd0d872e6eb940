// jacobian_cosine cost at MiniLM's shape (d=384, teacher h=1536): identities vs dense d×d vs probes.
//
// The MOLT is the reference schedule at N=2 (62 transforms, ranks 512..32) with thresholds set
// per transform so that each opens on 20/62 of the tokens (L0 ≈ 20). Items are tokens, so
// items_per_second compares methods directly; Exact includes its one-off tables, so its
// marginal per-token cost is the difference between its two token counts.
// Run: OMP_NUM_THREADS=1 build/bench/bench_jacobian --benchmark_min_time=0.01
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "molt/jacobian.h"

namespace {

constexpr int64_t kD = 384, kH = 1536, kN = 2;
constexpr double kL0 = 20.0;

struct Setup {
  molt::ModelDesc desc;
  molt::HostTensors params;
  molt::TeacherMlp teacher;
  std::vector<float> x; // [kMaxTokens, d]
};

constexpr int64_t kMaxTokens = 1024;

std::vector<float> normal(std::mt19937_64 &rng, size_t n, double sd) {
  std::normal_distribution<double> N(0.0, sd);
  std::vector<float> v(n);
  for (float &e : v)
    e = float(N(rng));
  return v;
}

const Setup &setup() {
  static const Setup s = [] {
    Setup s;
    std::mt19937_64 rng(1);
    s.desc.kind = "molt";
    s.desc.d_model = kD;
    s.desc.gate.kind = "jumprelu";
    int64_t T = 0;
    for (int64_t k = 0, rank = 512, count = kN; k < 5; ++k, rank /= 2, count *= 2) {
      s.desc.buckets.push_back({rank, count});
      s.params["u" + std::to_string(k)] = normal(rng, size_t(count * kD * rank), 0.05);
      s.params["v" + std::to_string(k)] = normal(rng, size_t(count * rank * kD), 0.05);
      T += count;
    }
    s.params["enc_w"] = normal(rng, size_t(T * kD), 1.0 / std::sqrt(double(kD)));
    s.params["enc_b"] = std::vector<float>(size_t(T), 0.f);
    s.params["dec_b"] = std::vector<float>(size_t(kD), 0.f);
    s.x = normal(rng, size_t(kMaxTokens * kD), 1.0);
    // θ_t = the (1 − L0/T) quantile of transform t's pre-activation over the tokens.
    std::vector<float> theta(static_cast<size_t>(T));
    std::vector<double> pre(static_cast<size_t>(kMaxTokens));
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t i = 0; i < kMaxTokens; ++i) {
        double a = 0;
        for (int64_t j = 0; j < kD; ++j)
          a += double(s.params["enc_w"][size_t(t * kD + j)]) * s.x[size_t(i * kD + j)];
        pre[size_t(i)] = a;
      }
      auto q = pre.begin() + int64_t((1.0 - kL0 / double(T)) * double(kMaxTokens));
      std::nth_element(pre.begin(), q, pre.end());
      theta[size_t(t)] = float(*q);
    }
    s.params["theta"] = theta;
    s.teacher.d = kD;
    s.teacher.h = kH;
    auto dbl = [&](size_t n, double sd) {
      auto f = normal(rng, n, sd);
      return std::vector<double>(f.begin(), f.end());
    };
    s.teacher.w_in = dbl(size_t(kH * kD), 1.0 / std::sqrt(double(kD)));
    s.teacher.b_in = dbl(size_t(kH), 0.1);
    s.teacher.w_out = dbl(size_t(kD * kH), 1.0 / std::sqrt(double(kH)));
    s.teacher.b_out = dbl(size_t(kD), 0.0);
    return s;
  }();
  return s;
}

void run(benchmark::State &state, molt::JacobianMethod method) {
  const Setup &s = setup();
  const int64_t n = state.range(0);
  molt::JacobianOptions opt;
  opt.method = method;
  opt.probes = 64;
  auto layer = molt::makeReplacement(s.desc, s.params);
  if (!layer) {
    state.SkipWithError(layer.status().message().c_str());
    return;
  }
  double mean = 0;
  for (auto _ : state) {
    auto r = molt::jacobianCosine(*layer, s.teacher, s.x.data(), n, opt);
    if (!r) {
      state.SkipWithError(r.status().message().c_str());
      return;
    }
    mean = r->mean;
  }
  std::vector<molt::ActiveUnit> act;
  double l0 = 0;
  std::vector<double> xd(static_cast<size_t>(kD));
  for (int64_t i = 0; i < n; ++i) {
    std::copy(s.x.begin() + i * kD, s.x.begin() + (i + 1) * kD, xd.begin());
    molt::activeUnits(*layer, xd.data(), act);
    l0 += double(act.size());
  }
  state.counters["L0"] = l0 / double(n);
  state.counters["cosine"] = mean;
  state.SetItemsProcessed(state.iterations() * n);
}

void BM_JacobianCosineExact(benchmark::State &s) { run(s, molt::JacobianMethod::Exact); }
void BM_JacobianCosineDense(benchmark::State &s) { run(s, molt::JacobianMethod::Dense); }
void BM_JacobianCosineRandom64(benchmark::State &s) { run(s, molt::JacobianMethod::Random); }

// Process CPU time (all threads): the machine these run on is often shared, and CPU seconds
// are what the identities save.
BENCHMARK(BM_JacobianCosineExact)->Arg(64)->Arg(1024)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
BENCHMARK(BM_JacobianCosineDense)->Arg(16)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();
BENCHMARK(BM_JacobianCosineRandom64)->Arg(64)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

} // namespace

BENCHMARK_MAIN();
