// What the CUDA kernels move, counted on the host emulator, against the cost model; and the
// ragged shapes, NaN-poisoned outputs, write counts and schedule independence of their results.
//
// The bundle (tests/fixtures/make_fixture.py, d = 96, buckets 128x2, 32x4, 8x2) gets a crafted
// encoder: enc_w[t] = -e0, x[b][0] = b, enc_b[t] = 0.5 - n_t (pre = x enc_w^T - enc_b), so
// transform t lists exactly tokens
// 0 .. n_t-1 with n_t in {65, 130 | 0, 1, 63, 64 | 0, 0}: a transform with 0, 1, tile-1, tile,
// tile+1 and 2 tiles + 2 tokens (tile_m = 64), rank slices (R = 128 is two 64-rank slices) and an
// empty bucket. The other columns of x are random, so every product is non-trivial.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "emu/emu_module.h"
#include "molt/backend.h"
#include "molt/cost_model.h"
#include "molt/plan.h"

namespace molt {
namespace {

constexpr int64_t kBatch = 160;
const std::vector<int> kTokens = {65, 130, 0, 1, 63, 64, 0, 0}; // n_t per transform

/// The ragged bundle, written once per process by make_fixture.py.
const std::string &raggedBundle() {
  static const std::string dir = [] {
    const std::string out = testing::TempDir() + "/molt_traffic_" + std::to_string(getpid());
    const std::string cmd = "python3 " + std::string(MOLT_SOURCE_DIR) +
                            "/tests/fixtures/make_fixture.py molt --d 96 --buckets 128x2,32x4,8x2 -o " +
                            out + " >/dev/null";
    return std::system(cmd.c_str()) == 0 ? out : std::string();
  }();
  return dir;
}

StatusOr<Plan> raggedPlan(const std::string &precision) {
  if (raggedBundle().empty())
    return internalError("make_fixture.py failed");
  auto plan = loadPlan(raggedBundle());
  if (plan)
    plan->precision = precision;
  return plan;
}

/// Writes the crafted encoder, random weights and data (same on every executor for one seed).
void craft(Executor &e, const Plan &plan, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  const int64_t D = plan.model.d_model, T = plan.model.numTransforms();
  ASSERT_EQ(T, int64_t(kTokens.size()));
  for (const ParamDesc &p : plan.params) {
    std::vector<float> v(size_t(e.info(p.name)->numel()));
    for (float &x : v)
      x = 0.05f * normal(rng);
    if (p.name == "enc_w")
      for (int64_t t = 0; t < T; ++t)
        for (int64_t k = 0; k < D; ++k)
          v[size_t(t * D + k)] = k == 0 ? -1.f : 0.f;
    if (p.name == "enc_b")
      for (int64_t t = 0; t < T; ++t)
        v[size_t(t)] = 0.5f - float(kTokens[size_t(t)]); // a molt subtracts enc_b
    if (p.name == "theta")
      std::fill(v.begin(), v.end(), 0.1f);
    ASSERT_TRUE(e.write(p.name, v.data(), v.size() * 4).isOk()) << p.name;
  }
  for (const char *n : {"x", "y", "x_dot"}) {
    if (!e.info(n))
      continue;
    std::vector<float> v(size_t(e.info(n)->numel()));
    for (float &x : v)
      x = normal(rng);
    if (std::string(n) == "x")
      for (int64_t b = 0; b < kBatch; ++b)
        v[size_t(b * D)] = float(b);
    ASSERT_TRUE(e.write(n, v.data(), v.size() * 4).isOk());
  }
  const float scalars[8] = {0.05f, 1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f, 1.0f, 1.f / float(kBatch)};
  ASSERT_TRUE(e.write("scalars", scalars, sizeof scalars).isOk());
}

std::vector<float> readF(Executor &e, const std::string &name) {
  std::vector<float> v(size_t(e.info(name)->numel()));
  EXPECT_TRUE(e.read(name, v.data(), v.size() * 4).isOk()) << name;
  return v;
}

std::vector<int32_t> readI(Executor &e, const std::string &name) {
  std::vector<int32_t> v(size_t(e.info(name)->numel()));
  EXPECT_TRUE(e.read(name, v.data(), v.size() * 4).isOk()) << name;
  return v;
}

/// The plan with each train_step invocation also its own entry point "k<i>".
Plan splitSteps(Plan plan) {
  const std::vector<Invocation> steps = plan.entry_points.at("train_step");
  for (size_t i = 0; i < steps.size(); ++i)
    plan.entry_points["k" + std::to_string(i)] = {steps[i]};
  return plan;
}

/// An emulator executor whose module counts traffic (built while $MOLT_EMU_TRAFFIC is set).
StatusOr<std::unique_ptr<Executor>> countingExecutor(const Plan &plan) {
  auto emu = createBackend("cuda-emu");
  if (!emu)
    return emu.status();
  setenv("MOLT_EMU_TRAFFIC", "1", 1);
  auto ex = (*emu)->prepare(plan, raggedBundle(), kBatch);
  unsetenv("MOLT_EMU_TRAFFIC");
  return ex;
}

class Traffic : public testing::TestWithParam<const char *> {};

// "Moves" is the emulator's HBM estimate (emu::Traffic::hbm): loads distinct per launch, every
// store and atomic. The table also prints every requested byte and the L2 estimate (loads
// distinct per block), where re-streamed operands show (bucket_apply's x and V_t per rank slice
// and token chunk; the tiled products' operand re-reads).

TEST_P(Traffic, EveryKernelMovesAtMostOnePointOneTimesItsModel) {
  auto planOr = raggedPlan(GetParam());
  ASSERT_TRUE(planOr.isOk()) << planOr.status().message();
  const Plan plan = splitSteps(*planOr);
  auto exOr = countingExecutor(plan);
  if (!exOr && exOr.status().code() == Code::Unavailable)
    GTEST_SKIP() << exOr.status().message();
  ASSERT_TRUE(exOr.isOk()) << exOr.status().message();
  Executor &ex = **exOr;
  craft(ex, plan, 3);
  const std::vector<Invocation> &steps = plan.entry_points.at("train_step");
  StepCounts counts{kBatch, {}};
  std::set<std::string> seen;
  std::printf("[traffic %s] %-20s %10s %10s %10s %10s %10s | %10s %10s %10s | %6s %6s\n", GetParam(),
              "kernel", "load req", "load blk", "load uniq", "store", "atomic", "model ld", "model st",
              "model at", "HBM x", "L2 x");
  for (size_t i = 0; i < steps.size(); ++i) {
    const KernelDesc *k = plan.findKernel(steps[i].kernel);
    emu::resetTraffic();
    Status s = ex.run("k" + std::to_string(i));
    ASSERT_TRUE(s.isOk()) << k->name << ": " << s.message();
    if (k->op == "encode_gate")
      counts.pairPtr = readI(ex, "pair_ptr");
    const auto traffic = emu::trafficByEntry();
    ASSERT_EQ(traffic.count(k->entry), 1u) << k->name << " was not counted";
    const emu::Traffic &t = traffic.at(k->entry);
    auto model = kernelCost(plan, steps[i], counts);
    ASSERT_TRUE(model.isOk()) << model.status().message();
    const double ratio = double(t.hbm()) / model->totalBytes(), l2 = double(t.l2()) / model->totalBytes();
    std::printf("[traffic %s] %-20s %10llu %10llu %10llu %10llu %10llu | %10.0f %10.0f %10.0f | %6.3f %6.2f\n",
                GetParam(), k->name.c_str(), (unsigned long long)t.loadBytes,
                (unsigned long long)t.loadBlockBytes, (unsigned long long)t.loadLaunchBytes,
                (unsigned long long)t.storeBytes, (unsigned long long)t.atomicBytes, model->loadBytes,
                model->storeBytes, model->atomicBytes, ratio, l2);
    if (!seen.insert(k->name).second)
      continue;
    EXPECT_LE(ratio, 1.1) << k->name << " moves " << ratio << "x its cost model";
  }
  ASSERT_EQ(counts.pairPtr.size(), kTokens.size() + 1);
  for (size_t t = 0; t < kTokens.size(); ++t)
    EXPECT_EQ(counts.pairPtr[t + 1] - counts.pairPtr[t], kTokens[t]) << "transform " << t;
}

INSTANTIATE_TEST_SUITE_P(CudaEmu, Traffic, testing::Values("f32", "bf16"));

/// Inputs and state a train step reads before writing: everything else may hold garbage.
bool isInput(const Plan &plan, const std::string &name) {
  if (plan.findParam(name) || name == "x" || name == "y" || name == "scalars" || name == "x_dot")
    return true;
  return name.rfind("m_", 0) == 0 || name.rfind("v_", 0) == 0 ? plan.findParam(name.substr(2)) != nullptr
                                                                : false;
}

/// The tensors train_step's kernels name (jvp-only ones such as y_dot stay out of it).
std::set<std::string> trainStepTensors(const Plan &plan) {
  std::set<std::string> used;
  for (const Invocation &inv : plan.entry_points.at("train_step"))
    for (const auto &[arg, tensor] : inv.args)
      used.insert(tensor);
  for (const ParamDesc &p : plan.params)
    used.insert("d_" + p.name);
  return used;
}

void poison(Executor &e, const Plan &plan) {
  const std::set<std::string> used = trainStepTensors(plan);
  for (const std::string &n : e.names()) {
    if (isInput(plan, n) || !used.count(n) || e.info(n)->dtype == DType::I32)
      continue;
    std::vector<float> v(size_t(e.info(n)->numel()), std::nanf(""));
    ASSERT_TRUE(e.write(n, v.data(), v.size() * 4).isOk()) << n;
  }
}

class Ragged : public testing::TestWithParam<const char *> {
protected:
  void SetUp() override {
    auto emu = createBackend("cuda-emu");
    if (!emu)
      GTEST_SKIP() << emu.status().message();
    device = std::move(*emu);
    auto c = createBackend("cpu");
    ASSERT_TRUE(c.isOk());
    cpu = std::move(*c);
    auto plan = raggedPlan(GetParam());
    ASSERT_TRUE(plan.isOk()) << plan.status().message();
    plan_ = *plan;
  }
  std::unique_ptr<Backend> device, cpu;
  Plan plan_;
};

// A whole train step on the ragged lists (0, 1, tile-1, tile, tile+1 tokens, an empty bucket)
// with every output, scratch and gradient buffer filled with NaN first, on the emulator and on
// the CPU: every tensor must come out as the oracle's (pair arrays up to pair_count), so each
// kernel writes, or zeroes before it accumulates, everything it produces.
TEST_P(Ragged, ATrainStepFromNanPoisonedBuffersMatchesTheCpu) {
  auto c = cpu->prepare(plan_, raggedBundle(), kBatch);
  auto g = device->prepare(plan_, raggedBundle(), kBatch);
  ASSERT_TRUE(c.isOk()) << c.status().message();
  ASSERT_TRUE(g.isOk()) << g.status().message();
  for (Executor *e : {c->get(), g->get()}) {
    craft(*e, plan_, 4);
    poison(*e, plan_);
    Status s = e->run("train_step");
    ASSERT_TRUE(s.isOk()) << s.message();
  }
  const double rtol = std::string(GetParam()) == "bf16" ? 5e-2 : 2e-4;
  const int32_t pairs = readI(**c, "pair_count")[0];
  ASSERT_EQ(pairs, std::accumulate(kTokens.begin(), kTokens.end(), 0));
  ASSERT_EQ(readI(**g, "pair_count")[0], pairs);
  std::string bad;
  const std::set<std::string> used = trainStepTensors(plan_);
  for (const std::string &n : (*c)->names()) {
    if (!used.count(n))
      continue;
    std::vector<float> a = readF(**c, n), b = readF(**g, n);
    if (n.rfind("pair_", 0) == 0 && a.size() > size_t(pairs)) {
      a.resize(size_t(pairs));
      b.resize(size_t(pairs));
    }
    if ((*c)->info(n)->dtype == DType::I32) {
      if (std::memcmp(a.data(), b.data(), a.size() * 4) != 0)
        bad += "\n  " + n + " (int) differs";
      continue;
    }
    double scale = 1e-6, worst = 0;
    for (float v : a)
      scale = std::max(scale, double(std::fabs(v)));
    size_t nan = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double e = std::fabs(double(a[i]) - double(b[i]));
      nan += std::isnan(b[i]) && !std::isnan(a[i]);
      worst = std::max(worst, std::isnan(e) ? INFINITY : e / scale);
    }
    if (!(worst <= rtol))
      bad += "\n  " + n + ": rel " + std::to_string(worst) + " (" + std::to_string(nan) + " NaN left)";
  }
  EXPECT_TRUE(bad.empty()) << GetParam() << ":" << bad;
}

/// The backward's gradients, bitwise, after one train step's kernels up to adam under
/// $MOLT_EMU_SCHEDULE = `schedule`.
std::map<std::string, std::vector<uint32_t>> gradientsUnder(Backend &emu, const Plan &full,
                                                            const char *schedule) {
  Plan plan = full;
  std::vector<Invocation> bwd;
  for (const Invocation &inv : full.entry_points.at("train_step"))
    if (full.findKernel(inv.kernel)->op != "adam")
      bwd.push_back(inv);
  plan.entry_points["to_grads"] = bwd;
  setenv("MOLT_EMU_SCHEDULE", schedule, 1);
  std::map<std::string, std::vector<uint32_t>> out;
  auto e = emu.prepare(plan, raggedBundle(), kBatch);
  EXPECT_TRUE(e.isOk()) << e.status().message();
  if (e) {
    craft(**e, plan, 5);
    for (const ParamDesc &p : plan.params)
      EXPECT_TRUE((*e)->zero("d_" + p.name).isOk());
    Status s = (*e)->run("to_grads");
    EXPECT_TRUE(s.isOk()) << schedule << ": " << s.message();
    for (const ParamDesc &p : plan.params) {
      std::vector<uint32_t> v(size_t((*e)->info("d_" + p.name)->numel()));
      EXPECT_TRUE((*e)->read("d_" + p.name, v.data(), v.size() * 4).isOk());
      out["d_" + p.name] = v;
    }
  }
  unsetenv("MOLT_EMU_SCHEDULE");
  return out;
}

// Gradients must not depend on the order in which a block's threads run: the backward sums in
// one fixed order (one owner per d_u / d_v tile, one add per pair into pair_dgate). The emulator
// runs blocks one after another, so cross-block atomics would sum in block order here: bitwise
// agreement is evidence only because no gradient of bucket_apply_bwd takes an atomic any more.
TEST_P(Ragged, GradientsAreBitIdenticalAcrossEmulatorSchedules) {
  const auto base = gradientsUnder(*device, plan_, "forward");
  ASSERT_FALSE(base.empty());
  std::set<std::string> differing;
  for (const char *schedule : {"reverse", "random:1", "random:2"}) {
    const auto other = gradientsUnder(*device, plan_, schedule);
    for (const auto &[name, v] : base)
      if (other.at(name) != v)
        differing.insert(name);
  }
  std::string list;
  for (const std::string &n : differing)
    list += " " + n;
  std::printf("[schedules %s] gradients that differ bitwise across forward/reverse/random:1/random:2:%s\n",
              GetParam(), list.empty() ? " none" : list.c_str());
  for (const std::string &n : differing)
    ADD_FAILURE() << n << " depends on the thread order";
}

// Every element of a gradient written exactly once per step (one owner per output tile, the
// Gram term folded in, no memset): the emulator counts the stores and atomics per word of d_u0
// (bucket 0: R = 128, transforms of 65 and 130 tokens) over the step's kernels.
TEST_P(Ragged, WritesPerGradientElementAreCounted) {
  const Plan plan = splitSteps(plan_);
  auto exOr = countingExecutor(plan);
  ASSERT_TRUE(exOr.isOk()) << exOr.status().message();
  Executor &ex = **exOr;
  craft(ex, plan, 6);
  void *du = ex.storage("d_u0");
  ASSERT_NE(du, nullptr);
  const size_t words = size_t(ex.info("d_u0")->numel());
  std::vector<unsigned> counts(words, 0);
  emu::watchWrites(du, words * 4, counts.data());
  const std::vector<Invocation> &steps = plan.entry_points.at("train_step");
  for (size_t i = 0; i < steps.size(); ++i)
    if (plan.findKernel(steps[i].kernel)->op != "adam") {
      Status s = ex.run("k" + std::to_string(i));
      ASSERT_TRUE(s.isOk()) << s.message();
    }
  emu::watchWrites(nullptr, 0, nullptr);
  const auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
  std::printf("[writes] d_u0: %zu elements, writes per element min %u max %u\n", words, *lo, *hi);
  // bucket_apply_bwd stores each element once; frob_norm_bwd adds the Gram term with one
  // reduction (both transforms of bucket 0 have pairs, so both get it). Folding the Gram term
  // into the backward's epilogue makes this 1.
  EXPECT_EQ(*lo, 2u) << "one store and one Gram reduction per element";
  EXPECT_EQ(*hi, 2u) << "one store and one Gram reduction per element";
}

INSTANTIATE_TEST_SUITE_P(CudaEmu, Ragged, testing::Values("f32", "bf16"));

} // namespace
} // namespace molt
