// TopK tc_encode on CUDA (or its host emulator, cuda-emu) against the CPU and a sort-based reference, ties included; skips where neither backend runs.
//
// Integer-valued x, enc_w and enc_b make every pre-activation an exact small integer on any
// backend, whatever the order of its sums: ties are everywhere (the k-th value is shared by
// several features in most tokens) and the lower-index rule decides them, so the pair lists
// must agree exactly, not within a tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

#include "molt/cuda_wrapper.h"
#include "molt/backend.h"
#include "molt/plan.h"

namespace molt {
namespace {

constexpr int64_t kFeatures = 300, kK = 5, kBatch = 48;

// The committed tiny top-k transcoder widened to kFeatures features and k = kK, with the
// default CUDA launch (several blocks, so the ticket barriers are exercised).
Plan widePlan() {
  auto loaded = loadPlan(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-transcoder-topk");
  EXPECT_TRUE(loaded.isOk()) << loaded.status().message();
  Plan plan = *loaded;
  const int64_t F0 = plan.model.features;
  plan.model.features = kFeatures;
  plan.model.gate.k = kK;
  auto widen = [&](int64_t v) { return v == F0 ? kFeatures : v == F0 + 1 ? kFeatures + 1 : v; };
  for (ParamDesc &p : plan.params)
    for (int64_t &s : p.shape)
      s = widen(s);
  for (BufferDesc &b : plan.buffers)
    for (Dim &d : b.shape)
      if (d.isStatic())
        d.value = widen(d.value);
  for (KernelDesc &k : plan.kernels) {
    if (k.attrs.count("F"))
      k.attrs["F"] = kFeatures;
    if (k.attrs.count("k"))
      k.attrs["k"] = kK;
    k.launch = cudaDefaultLaunch(k);
  }
  return plan;
}

std::vector<float> integers(std::mt19937 &rng, size_t n, int lo, int hi) {
  std::uniform_int_distribution<int> u(lo, hi);
  std::vector<float> v(n);
  for (float &x : v)
    x = float(u(rng));
  return v;
}

struct Lists {
  std::vector<int32_t> ptr, tok;
  std::vector<float> gate;
  float active = 0;
};

Lists forward(Backend &backend, const Plan &plan, const std::map<std::string, std::vector<float>> &in) {
  Lists out;
  auto exec = backend.prepare(plan, "", kBatch);
  EXPECT_TRUE(exec.isOk()) << exec.status().message();
  if (!exec.isOk())
    return out;
  for (const auto &[name, v] : in)
    EXPECT_TRUE((*exec)->write(name, v.data(), v.size() * 4).isOk()) << name;
  Status ran = (*exec)->run("forward");
  EXPECT_TRUE(ran.isOk()) << ran.message();
  EXPECT_TRUE((*exec)->synchronize().isOk());
  out.ptr.resize(kFeatures + 1);
  EXPECT_TRUE((*exec)->read("pair_ptr", out.ptr.data(), out.ptr.size() * 4).isOk());
  const size_t cap = size_t((*exec)->info("pair_tok")->numel());
  out.tok.resize(cap);
  out.gate.resize(cap);
  EXPECT_TRUE((*exec)->read("pair_tok", out.tok.data(), cap * 4).isOk());
  EXPECT_TRUE((*exec)->read("pair_gate", out.gate.data(), cap * 4).isOk());
  std::vector<float> stats(16);
  EXPECT_TRUE((*exec)->read("stats", stats.data(), 64).isOk());
  out.active = stats[3];
  const size_t used = size_t(out.ptr.back());
  out.tok.resize(used);
  out.gate.resize(used);
  return out;
}

TEST(CudaTopK, SelectionEqualsTheCpuAndASortWithTiesToTheLowerIndex) {
  const Plan plan = widePlan();
  const int64_t d = plan.model.d_model;
  std::mt19937 rng(3);
  std::map<std::string, std::vector<float>> in;
  in["x"] = integers(rng, size_t(kBatch * d), -2, 2);
  for (int64_t i = 0; i < kBatch; i += 6) // pre = enc_b <= 0 here: nothing is listed
    std::fill_n(in["x"].begin() + i * d, d, 0.f);
  in["enc_w"] = integers(rng, size_t(kFeatures * d), -1, 1);
  in["enc_b"] = integers(rng, kFeatures, -10, 0); // some tokens have fewer than k positives
  in["dec_w"] = integers(rng, size_t(kFeatures * d), -1, 1);
  in["dec_b"].assign(size_t(d), 0.f);

  // The reference: per token, indices sorted by (pre descending, index ascending), the first k
  // kept where pre > 0; then listed per feature, tokens ascending.
  std::vector<std::vector<int32_t>> perFeature(kFeatures);
  std::vector<std::vector<float>> gates(kFeatures);
  int64_t selected = 0, tiedAtK = 0;
  for (int64_t i = 0; i < kBatch; ++i) {
    std::vector<float> pre(kFeatures);
    for (int64_t f = 0; f < kFeatures; ++f) {
      float a = in["enc_b"][size_t(f)];
      for (int64_t j = 0; j < d; ++j)
        a += in["x"][size_t(i * d + j)] * in["enc_w"][size_t(f * d + j)];
      pre[size_t(f)] = a;
    }
    std::vector<int32_t> idx(kFeatures);
    std::iota(idx.begin(), idx.end(), 0);
    std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return pre[size_t(a)] > pre[size_t(b)]; });
    tiedAtK += pre[size_t(idx[kK - 1])] == pre[size_t(idx[kK])];
    for (int64_t j = 0; j < kK; ++j)
      if (pre[size_t(idx[size_t(j)])] > 0) {
        perFeature[size_t(idx[size_t(j)])].push_back(int32_t(i));
        gates[size_t(idx[size_t(j)])].push_back(pre[size_t(idx[size_t(j)])]);
        ++selected;
      }
  }
  Lists want;
  want.ptr.push_back(0);
  for (int64_t f = 0; f < kFeatures; ++f) {
    want.tok.insert(want.tok.end(), perFeature[size_t(f)].begin(), perFeature[size_t(f)].end());
    want.gate.insert(want.gate.end(), gates[size_t(f)].begin(), gates[size_t(f)].end());
    want.ptr.push_back(int32_t(want.tok.size()));
  }
  EXPECT_GT(tiedAtK, kBatch / 2) << "the inputs should tie at the k-th value in most tokens";
  EXPECT_LT(selected, kBatch * kK) << "some tokens should have fewer than k positives";

  auto cpu = createBackend("cpu");
  ASSERT_TRUE(cpu.isOk());
  Lists c = forward(**cpu, plan, in);
  EXPECT_EQ(c.ptr, want.ptr);
  EXPECT_EQ(c.tok, want.tok);
  EXPECT_EQ(c.gate, want.gate);
  EXPECT_EQ(c.active, float(selected));

  int ran = 0;
  for (const char *device : {"cuda", "cuda-emu"}) {
    auto backend = createBackend(device);
    if (!backend.isOk())
      continue;
    SCOPED_TRACE(device);
    Lists g = forward(**backend, plan, in);
    EXPECT_EQ(g.ptr, want.ptr);
    EXPECT_EQ(g.tok, want.tok);
    EXPECT_EQ(g.gate, want.gate);
    EXPECT_EQ(g.active, float(selected));
    std::printf("[topk] %s: %d pairs as the reference\n", device, g.ptr.back());
    ++ran;
  }
  if (!ran)
    GTEST_SKIP() << "neither cuda nor cuda-emu is available here (the CPU half ran)";
}

} // namespace
} // namespace molt
