// The cost model (molt/cost_model.h) at the reference step against the floor table of
// ../shared/GPU-KERNELS.md, section 1, and its pair-count arithmetic on a hand-made CSR.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <unistd.h>

#include "molt/cost_model.h"
#include "molt/plan.h"

namespace molt {
namespace {

StatusOr<Plan> fixture(const std::string &name, const std::string &buckets, int d) {
  const std::string out = testing::TempDir() + "/molt_cost_" + name + "_" + std::to_string(getpid());
  const std::string cmd = "python3 " + std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/make_fixture.py molt --d " +
                          std::to_string(d) + " --buckets " + buckets + " -o " + out + " >/dev/null";
  if (std::system(cmd.c_str()) != 0)
    return internalError("make_fixture.py failed");
  return loadPlan(out);
}

/// Every transform listing `tokens` pairs.
StepCounts uniform(const Plan &plan, int64_t batch, int tokens) {
  StepCounts c{batch, {0}};
  for (int64_t t = 0; t < plan.model.numTransforms(); ++t)
    c.pairPtr.push_back(c.pairPtr.back() + tokens);
  return c;
}

// S1 of GPU-KERNELS.md: d = 768, ref:16 (496 transforms), batch 8192, 547 tokens per transform.
// The forward's two grouped GEMMs are 34 + 34 GFLOP; the backward's z, dV and dU 36 + 49 + 49
// (with Gram terms and h recomputed here: 8 P R d); Adam moves about 30 bytes a parameter in bf16.
// The sum of the per-kernel floors is 1.44 ms, above the page's 0.85 ms: that one fuses what
// today's op contract keeps apart (d enc_w from the backward's staged x instead of gate_bwd's
// 0.83 GB gather, the Gram terms in the epilogues) and leaves out the forward's 0.83 GB of
// reductions into yhat, which the model counts.
TEST(CostModel, TheReferenceStepMatchesTheFloorTable) {
  auto plan = fixture("ref16", "ref:16", 768);
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  plan->precision = "bf16";
  const StepCounts counts = uniform(*plan, 8192, 547);
  std::map<std::string, KernelCost> byOp;
  double floor = 0;
  for (const Invocation &inv : plan->entry_points.at("train_step")) {
    auto c = kernelCost(*plan, inv, counts);
    ASSERT_TRUE(c.isOk()) << inv.kernel << ": " << c.status().message();
    KernelCost &sum = byOp[plan->findKernel(inv.kernel)->op];
    sum.flops += c->flops;
    sum.loadBytes += c->loadBytes;
    sum.storeBytes += c->storeBytes;
    sum.atomicBytes += c->atomicBytes;
    sum.gatherBytes += c->gatherBytes;
    sum.reductionBytes += c->reductionBytes;
    floor += floorSeconds(*c, h200Peak("bf16"));
  }
  for (const auto &[op, c] : byOp)
    std::printf("[cost ref:16 bf16] %-18s %8.2f GFLOP %9.1f MB (gather %7.1f, reduction %7.1f)\n", op.c_str(),
                c.flops / 1e9, c.totalBytes() / 1e6, c.gatherBytes / 1e6, c.reductionBytes / 1e6);
  std::printf("[cost ref:16 bf16] train_step floor %.3f ms (sum of per-kernel floors)\n", floor * 1e3);
  const double pairs = 496.0 * 547;
  EXPECT_NEAR(byOp["bucket_apply"].flops / 1e9, 68.0, 2.0);
  EXPECT_NEAR(byOp["bucket_apply_bwd"].flops / 1e9, 137.5, 3.0);
  EXPECT_DOUBLE_EQ(byOp["bucket_apply"].reductionBytes, 4 * pairs * 768);
  // 63.3 M parameters at 16 + 12 + 2 bytes, plus the 48-byte table rows.
  EXPECT_NEAR(byOp["adam"].totalBytes() / 1e6, 1899, 25);
  EXPECT_GT(floor, 0.5e-3);
  // 1.50 ms: bucket_apply_bwd's one-owner tiles round-trip h and z per pair in fp32 (~0.36 GB
  // here); bf16 storage of them would take half of that off.
  EXPECT_LT(floor, 1.6e-3);
}

// A bucket's cost counts only its own lists: pairs, and weights of transforms with a pair.
TEST(CostModel, ABucketCountsItsOwnListsAndActiveTransforms) {
  auto plan = fixture("small", "16x2,8x3", 32);
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  StepCounts c{64, {0, 5, 5, 9, 9, 9}}; // bucket 0: 5 and 0 pairs; bucket 1: 4, 0 and 0
  const Invocation *apply1 = nullptr;
  for (const Invocation &inv : plan->entry_points.at("forward"))
    if (inv.kernel == "bucket_apply_1")
      apply1 = &inv;
  ASSERT_NE(apply1, nullptr);
  auto m = kernelCost(*plan, *apply1, c);
  ASSERT_TRUE(m.isOk()) << m.status().message();
  // Bucket 1 = transforms 2, 3, 4 (OFF 2): pairs 4 + 0 + 0 = 4, one active transform.
  EXPECT_DOUBLE_EQ(m->flops, 4.0 * 4 * 8 * 32);
  EXPECT_DOUBLE_EQ(m->gatherBytes, 4.0 * 32 * 4);
  EXPECT_DOUBLE_EQ(m->loadBytes, 4.0 * 32 * 4 + 2.0 * 1 * 8 * 32 * 4 + 8 * 4 + 4 * 4);
  EXPECT_DOUBLE_EQ(m->atomicBytes, 4.0 * 4 * 32);
  Invocation unknown = *apply1;
  unknown.kernel = "no_such_kernel";
  EXPECT_FALSE(kernelCost(*plan, unknown, c).isOk());
}

} // namespace
} // namespace molt
