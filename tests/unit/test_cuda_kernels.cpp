// Every CUDA kernel against the CPU backend (the oracle) on identical inputs, on the GPU and on the host emulator.
//
// Each suite runs twice: CudaKernels/ on the GPU (skips without one; scripts/gpu-check) and
// CudaEmuKernels/ on the host SIMT emulator (backend cuda-emu, kernels/cuda/emu), which runs in CI.
// Each invocation of train_step (then of jvp) becomes its own entry point. Before each one the CPU state is
// copied to the GPU, both run it, and every tensor is compared: max abs / rel error against a
// per-tensor scale, ints exactly. Then a few whole train steps run side by side. Fixture bundles
// always; $MOLT_CUDA_TEST_BUNDLES (colon-separated) adds larger ones on the GPU
// (scripts/gpu-check), $MOLT_EMU_TEST_BUNDLES on the emulator (small ones: it is slow; batch 32).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "molt/backend.h"
#include "molt/config.h"
#include "molt/plan.h"

namespace molt {
namespace {

struct Bundle {
  std::string dir;
  int64_t batch;
  std::string precision = ""; // set: run the plan at this precision (fixtures have no .cu files)
};

/// The bundle's plan, at the precision the Bundle asks for.
StatusOr<Plan> loadBundle(const Bundle &b) {
  StatusOr<Plan> plan = loadPlan(b.dir);
  if (plan && !b.precision.empty())
    plan->precision = b.precision;
  return plan;
}

std::vector<Bundle> bundles(const std::string &device) {
  std::vector<Bundle> out;
  for (const char *f : {"tiny-molt", "tiny-molt-relu-l1", "tiny-transcoder", "tiny-transcoder-jumprelu",
                        "tiny-transcoder-topk"})
    out.push_back({std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/" + f, 64});
  // The bf16 path (bf16 tensor-core tiles, bf16 copies of x and the weights): the fixtures have
  // no .cu files, so the executor writes their wrappers for the plan's precision.
  for (const char *f : {"tiny-molt", "tiny-transcoder"})
    out.push_back({std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/" + f, 64, "bf16"});
  const bool emu = device == "cuda-emu";
  std::string dirs = emu ? config::emuTestBundles() : config::cudaTestBundles();
  const long batch = emu ? config::emuTestBatch() : config::cudaTestBatch();
#ifdef MOLT_EMU_SPEC_BUNDLES
  // What molt-compile makes of examples/specs/small.mlir (tests/unit/CMakeLists.txt): the
  // emulator checks compiled bundles too, not only the fixtures' generated wrappers.
  if (emu)
    dirs += std::string(":") + MOLT_EMU_SPEC_BUNDLES;
#endif
  std::stringstream ss(dirs);
  for (std::string dir; std::getline(ss, dir, ':');)
    if (!dir.empty())
      out.push_back({dir, batch > 0 ? int64_t(batch) : emu ? 32 : 512});
  return out;
}

std::vector<float> readF(Executor &e, const std::string &name) {
  const BufferInfo *bi = e.info(name);
  std::vector<float> v(size_t(bi->numel()));
  EXPECT_TRUE(e.read(name, v.data(), bi->bytes()).isOk());
  return v;
}

/// Copies every tensor of `from` into `to` (same plan, same batch).
void copyAll(Executor &from, Executor &to) {
  for (const std::string &n : from.names()) {
    std::vector<float> v = readF(from, n); // i32 tensors travel as raw 4-byte words
    ASSERT_TRUE(to.write(n, v.data(), v.size() * 4).isOk()) << n;
  }
}

void randomise(Executor &e, const Plan &plan, std::mt19937 &rng) {
  std::normal_distribution<float> normal(0.f, 1.f);
  for (const ParamDesc &p : plan.params) {
    std::vector<float> v(size_t(e.info(p.name)->numel()));
    const double scale = p.init.kind == "normal" || p.init.kind == "uniform" ? p.init.value : 0.05;
    for (float &x : v)
      x = p.init.kind == "const" ? float(p.init.value) : float(scale) * normal(rng);
    ASSERT_TRUE(e.write(p.name, v.data(), v.size() * 4).isOk());
  }
  for (const char *n : {"x", "y", "x_dot"}) {
    if (!e.info(n))
      continue; // a bundle without a jvp entry has no x_dot
    std::vector<float> v(size_t(e.info(n)->numel()));
    for (float &x : v)
      x = normal(rng);
    ASSERT_TRUE(e.write(n, v.data(), v.size() * 4).isOk());
  }
  const float scalars[8] = {0.05f, 1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f, 1.0f, 1.f / float(e.batch())};
  ASSERT_TRUE(e.write("scalars", scalars, sizeof scalars).isOk());
}

struct Diff {
  double maxAbs = 0, maxRel = 0;
  size_t bad = 0;
};

/// Elementwise |g - c| against rtol * (tensor scale): atomics reorder fp32 sums, so a value
/// near zero in a tensor of large entries is judged against the tensor, not itself.
Diff compare(const std::vector<float> &c, const std::vector<float> &g, double rtol) {
  Diff d;
  double scale = 1e-6;
  for (float v : c)
    scale = std::max(scale, double(std::fabs(v)));
  for (size_t i = 0; i < c.size(); ++i) {
    const double e = std::fabs(double(g[i]) - double(c[i]));
    if (!(e <= rtol * scale)) // NaN counts as bad
      ++d.bad;
    d.maxAbs = std::max(d.maxAbs, std::isnan(e) ? INFINITY : e);
    d.maxRel = std::max(d.maxRel, e / scale);
  }
  return d;
}

bool isIntTensor(Executor &e, const std::string &n) { return e.info(n)->dtype == DType::I32; }

/// Per precision: fp32 2e-4 for the exact-order kernels (scripts/gpu-check loosens it for the
/// TF32 mode); bf16 5e-2, since x, the weights and every tile operand are rounded to 8 bits of
/// mantissa (2^-9 relative each) before fp32 accumulation.
double rtol(const Plan &plan) {
  const bool bf16 = plan.precision == "bf16";
  const std::string r = bf16 ? config::cudaTestRtolBf16() : config::cudaTestRtol();
  return !r.empty() ? std::atof(r.c_str()) : bf16 ? 5e-2 : 2e-4;
}


std::string shortName(const std::string &dir) { return dir.substr(dir.rfind('/') + 1); }

/// Runs each invocation of train_step (then of jvp) alone on `dev` and on the CPU from the same
/// state, and lists every disagreement ("kernel: tensor max abs ... max rel ..."); empty when
/// every kernel matches the oracle.
std::vector<std::string> kernelMismatches(Backend &cpuBackend, Backend &dev, const Bundle &b) {
  std::vector<std::string> bad;
  auto loaded = loadBundle(b);
  if (!loaded)
    return {"loading the plan: " + loaded.status().message()};
  Plan plan = *loaded;
  std::vector<Invocation> steps = plan.entry_points.at("train_step");
  // Then the caller-seeded gradients: input_grad and vjp hold every input-gradient kernel.
  for (const char *entry : {"jvp", "input_grad", "vjp"})
    if (auto e = plan.entry_points.find(entry); e != plan.entry_points.end())
      steps.insert(steps.end(), e->second.begin(), e->second.end());
  for (size_t i = 0; i < steps.size(); ++i)
    plan.entry_points["k" + std::to_string(i)] = {steps[i]};
  auto cpu = cpuBackend.prepare(plan, b.dir, b.batch);
  if (!cpu)
    return {"cpu prepare: " + cpu.status().message()};
  auto gpu = dev.prepare(plan, b.dir, b.batch);
  if (!gpu)
    return {dev.name() + " prepare: " + gpu.status().message()};
  std::mt19937 rng(11);
  randomise(**cpu, plan, rng);

  for (size_t i = 0; i < steps.size(); ++i) {
    const std::string entry = "k" + std::to_string(i);
    const KernelDesc *k = plan.findKernel(steps[i].kernel);
    copyAll(**cpu, **gpu);
    if (Status s = (*cpu)->run(entry); !s)
      return {k->name + " on the cpu: " + s.message()};
    Status s = (*gpu)->run(entry);
    if (s)
      s = (*gpu)->synchronize();
    if (!s)
      return {k->name + ": " + s.message()};

    // A pre value within rounding of a threshold may be listed on one side only; tolerate a
    // handful and then skip the pair arrays, whose positions shift.
    bool pairsComparable = true;
    if (k->op == "encode_gate" || k->op == "tc_encode") {
      const float cc = readF(**cpu, "pair_count")[0], gc = readF(**gpu, "pair_count")[0];
      const int ci = *reinterpret_cast<const int *>(&cc), gi = *reinterpret_cast<const int *>(&gc);
      if (std::abs(ci - gi) > std::max(2, int(ci * rtol(plan))))
        bad.push_back(k->name + ": pair_count " + std::to_string(gi) + ", cpu " + std::to_string(ci));
      pairsComparable = ci == gi;
    }
    std::string worst;
    double worstRel = 0;
    for (const std::string &n : (*cpu)->names()) {
      if (!pairsComparable && n.rfind("pair_", 0) == 0)
        continue;
      std::vector<float> c = readF(**cpu, n), g = readF(**gpu, n);
      if (isIntTensor(**cpu, n)) {
        size_t diff = 0;
        for (size_t j = 0; j < c.size(); ++j)
          diff += std::memcmp(&c[j], &g[j], 4) != 0;
        if (diff)
          bad.push_back(k->name + ": int tensor " + n + " differs in " + std::to_string(diff) + " places");
        continue;
      }
      Diff d = compare(c, g, rtol(plan));
      if (n == "pair_gate" && (k->op == "encode_gate" || k->op == "tc_encode")) {
        // g jumps from 0 to theta at the threshold: a pre within rounding of it is gated on
        // one side only. Allow as many such flips as the tolerance allows pairs.
        size_t flips = 0;
        for (size_t j = 0; j < c.size(); ++j)
          flips += (c[j] == 0.f) != (g[j] == 0.f);
        if (flips <= size_t(std::max(2.0, rtol(plan) * double(c.size()))))
          d.bad = d.bad > flips ? d.bad - flips : 0;
      }
      if (d.bad) {
        std::ostringstream msg;
        msg << k->name << ": " << n << " max abs " << d.maxAbs << " max rel " << d.maxRel << " ("
            << d.bad << " bad)";
        bad.push_back(msg.str());
      }
      if (d.maxRel >= worstRel) {
        worstRel = d.maxRel;
        worst = n;
      }
    }
    std::printf("[%s-vs-cpu] %-28s %-4s %-18s worst %-14s rel %.3g\n", dev.name().c_str(),
                shortName(b.dir).c_str(), plan.precision.c_str(), k->name.c_str(), worst.c_str(),
                worstRel);
  }
  return bad;
}

/// Parameterised by the backend that runs the CUDA kernels: "cuda" or "cuda-emu".
class DeviceKernels : public testing::TestWithParam<const char *> {
protected:
  void SetUp() override {
    auto dev = createBackend(GetParam());
    if (!dev)
      GTEST_SKIP() << dev.status().message();
    device = std::move(*dev);
    auto c = createBackend("cpu");
    ASSERT_TRUE(c.isOk());
    cpu = std::move(*c);
  }
  std::unique_ptr<Backend> device, cpu;
};

TEST_P(DeviceKernels, EveryTrainStepKernelMatchesTheCpuOracle) {
  for (const Bundle &b : bundles(GetParam())) {
    SCOPED_TRACE(b.dir);
    std::string all;
    for (const std::string &m : kernelMismatches(*cpu, *device, b))
      all += "\n  " + m;
    EXPECT_TRUE(all.empty()) << shortName(b.dir) << ":" << all;
  }
}

TEST_P(DeviceKernels, TrainStepsTrackTheCpuLossCurve) {
  for (const Bundle &b : bundles(GetParam())) {
    SCOPED_TRACE(b.dir + " " + b.precision);
    auto plan = loadBundle(b);
    ASSERT_TRUE(plan.isOk());
    auto c = cpu->prepare(*plan, b.dir, b.batch);
    auto g = device->prepare(*plan, b.dir, b.batch);
    ASSERT_TRUE(c.isOk()) << c.status().message();
    ASSERT_TRUE(g.isOk()) << g.status().message();
    std::mt19937 rng(5);
    randomise(**c, *plan, rng);
    copyAll(**c, **g);
    for (int step = 1; step <= 5; ++step) {
      const float sc[8] = {0.05f, 1e-3f, 0.9f, 0.999f, 1e-8f, 1.0f, float(step), 1.f / float(b.batch)};
      ASSERT_TRUE((*c)->write("scalars", sc, sizeof sc).isOk());
      ASSERT_TRUE((*g)->write("scalars", sc, sizeof sc).isOk());
      ASSERT_TRUE((*c)->run("train_step").isOk());
      Status s = (*g)->run("train_step");
      ASSERT_TRUE(s.isOk()) << s.message();
      std::vector<float> cs = readF(**c, "stats"), gs = readF(**g, "stats");
      const double lc = cs[0] / b.batch + sc[0] * cs[2] / b.batch, lg = gs[0] / b.batch + sc[0] * gs[2] / b.batch;
      std::printf("[%s-vs-cpu] %-28s step %d loss cpu %.6g %s %.6g active %g/%g\n",
                  device->name().c_str(), shortName(b.dir).c_str(), step, lc, device->name().c_str(),
                  lg, cs[3], gs[3]);
      EXPECT_NEAR(lg, lc, (plan->precision == "bf16" ? 1 : 5) * rtol(*plan) * std::fabs(lc) + 1e-6)
          << "step " << step;
    }
  }
}

/// The bf16 copies of the weights follow the optimiser: adam alone, from the same random
/// gradients on both sides (so the fp32 masters agree to fp32), moves every weight by about lr,
/// far beyond bf16 rounding; the next forward must see the moved weights, i.e. adam rewrote
/// the copies. A stale copy would miss the whole update.
TEST_P(DeviceKernels, Bf16CopiesFollowTheOptimizer) {
  Bundle b{std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt", 64, "bf16"};
  auto loaded = loadBundle(b);
  ASSERT_TRUE(loaded.isOk()) << loaded.status().message();
  Plan plan = *loaded;
  for (const Invocation &inv : plan.entry_points.at("train_step"))
    if (plan.findKernel(inv.kernel)->op == "adam")
      plan.entry_points["adam_only"] = {inv};
  ASSERT_TRUE(plan.entry_points.count("adam_only"));
  auto c = cpu->prepare(plan, b.dir, b.batch);
  auto g = device->prepare(plan, b.dir, b.batch);
  ASSERT_TRUE(c.isOk() && g.isOk());
  std::mt19937 rng(9);
  randomise(**c, plan, rng);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (const ParamDesc &p : plan.params) {
    std::vector<float> grad(size_t((*c)->info(p.name)->numel()));
    for (float &v : grad)
      v = normal(rng);
    ASSERT_TRUE((*c)->write("d_" + p.name, grad.data(), grad.size() * 4).isOk());
  }
  copyAll(**c, **g);
  const float sc[8] = {0.05f, 0.05f, 0.9f, 0.999f, 1e-8f, 0.f, 1.f, 1.f / float(b.batch)};
  std::vector<float> yBefore;
  for (Executor *e : {c->get(), g->get()}) {
    ASSERT_TRUE(e->write("scalars", sc, sizeof sc).isOk());
    if (e == c->get()) {
      ASSERT_TRUE(e->run("forward").isOk());
      yBefore = readF(*e, "yhat");
    }
    ASSERT_TRUE(e->run("adam_only").isOk());
    ASSERT_TRUE(e->run("forward").isOk());
    ASSERT_TRUE(e->synchronize().isOk());
  }
  const std::vector<float> yc = readF(**c, "yhat");
  const Diff moved = compare(yBefore, yc, rtol(plan));
  EXPECT_GT(moved.bad, 0u) << "the update should move yhat far beyond the bf16 tolerance";
  const Diff d = compare(yc, readF(**g, "yhat"), rtol(plan));
  std::printf("[%s-vs-cpu] tiny-molt bf16 forward after adam: yhat rel %.3g (the update moved "
              "it by rel %.3g)\n", device->name().c_str(), d.maxRel, moved.maxRel);
  EXPECT_EQ(d.bad, 0u) << "yhat after the update: max rel " << d.maxRel;
}

/// In a bf16 plan, x and every param have a bf16 copy that write() and adam refresh; caller
/// memory bound in their place would be read by nothing that refreshes the copy, so bind() and
/// storage() refuse them, and only them (the fp32 plan and the other buffers are unaffected).
TEST_P(DeviceKernels, Bf16PlansRefuseCallerMemoryOnlyForTensorsWithACopy) {
  for (const char *precision : {"", "bf16"}) {
    SCOPED_TRACE(precision);
    Bundle b{std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt", 64, precision};
    auto plan = loadBundle(b);
    ASSERT_TRUE(plan.isOk()) << plan.status().message();
    auto g = device->prepare(*plan, b.dir, b.batch);
    ASSERT_TRUE(g.isOk()) << g.status().message();
    const bool copies = std::string(precision) == "bf16";
    for (const std::string name : {"x", "u0", "enc_w"}) {
      EXPECT_EQ((*g)->storage(name) == nullptr, copies) << name;
      // Device memory to offer: the tensor's own (fp32), or any buffer's (refused anyway).
      void *mine = copies ? (*g)->storage("yhat") : (*g)->storage(name);
      ASSERT_NE(mine, nullptr);
      const Status s = (*g)->bind(name, mine);
      EXPECT_EQ(s.isOk(), !copies) << name << ": " << s.message();
      if (copies)
        EXPECT_NE(s.message().find("bf16 copy"), std::string::npos) << s.message();
      else
        ASSERT_TRUE((*g)->bind(name, nullptr).isOk()); // back to the executor's own memory
    }
    EXPECT_NE((*g)->storage("yhat"), nullptr);
    EXPECT_FALSE((*g)->bind("no_such_tensor", nullptr).isOk());
  }
}

// scripts/gpu-check selects the GPU runs with --gtest_filter='CudaKernels*'.
INSTANTIATE_TEST_SUITE_P(CudaKernels, DeviceKernels, testing::Values("cuda"));
INSTANTIATE_TEST_SUITE_P(CudaEmuKernels, DeviceKernels, testing::Values("cuda-emu"));

// The harness can fail: tiny-molt with one kernel template broken by an off-by-one index
// (add_bias reads the next column's bias) must be reported, naming that kernel and tensor.
TEST(CudaEmuHarness, AnIndexingBugInAKernelIsCaught) {
  auto emuOr = createBackend("cuda-emu");
  if (!emuOr)
    GTEST_SKIP() << emuOr.status().message();
  auto cpuOr = createBackend("cpu");
  ASSERT_TRUE(cpuOr.isOk());
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(testing::TempDir()) / "molt_emu_bug" / "tiny-molt";
  fs::remove_all(dir);
  fs::create_directories(dir / "molt_kernels");
  fs::copy_file(fs::path(MOLT_SOURCE_DIR) / "tests/fixtures/tiny-molt/manifest.json", dir / "manifest.json");
  // A bundle that carries molt_kernels/ is compiled against those headers, not the tree's.
  for (const auto &e : fs::directory_iterator(fs::path(MOLT_SOURCE_DIR) / "kernels/cuda"))
    if (e.path().extension() == ".cuh")
      fs::copy_file(e.path(), dir / "molt_kernels" / e.path().filename());
  std::ifstream in(dir / "molt_kernels/loss.cuh");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string good = "yhat[i] += bias[i % D];";
  const size_t at = text.find(good);
  ASSERT_NE(at, std::string::npos) << "loss.cuh changed: update the injected bug";
  text.replace(at, good.size(), "yhat[i] += bias[(i + 1) % D];");
  std::ofstream(dir / "molt_kernels/loss.cuh") << text;

  const std::vector<std::string> bad = kernelMismatches(**cpuOr, **emuOr, {dir.string(), 64});
  ASSERT_FALSE(bad.empty()) << "an off-by-one bias index went unnoticed";
  EXPECT_EQ(bad[0].rfind("add_bias: yhat", 0), 0u) << bad[0];
}

} // namespace
} // namespace molt
