// One extra row of the op table (extra_ops.def, through molt/ops.def's MOLT_OPS_EXTRA hook)
// reaches every consumer without other edits: the typed table, the plan loader, the
// executor's shape inference and accumulator zeroing, the CPU dispatch, and the CUDA emitter's
// header, scratch and default launch. Built as its own binary because the row changes OpId.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cpu/cpu_executor.h"
#include "molt/cuda_wrapper.h"
#include "molt/ops.h"
#include "molt/plan.h"

namespace molt {
namespace {

std::string fixtureManifest() {
  std::ifstream f(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt/manifest.json");
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// tiny-molt with a dummy_scale kernel and an entry point `extra` = dummy_scale(x -> yhat_arg).
StatusOr<Plan> planWithDummy(const std::string &yhatArg) {
  nlohmann::json m = nlohmann::json::parse(fixtureManifest());
  m["kernels"].push_back({{"name", "dummy_scale"},
                          {"op", "dummy_scale"},
                          {"attrs", {{"D", m["model"]["d_model"]}}},
                          {"source", "dummy_scale.cu"},
                          {"entry", "molt_dummy_scale"}});
  m["entry_points"]["extra"] = {
      {{"kernel", "dummy_scale"}, {"args", {{"x", "x"}, {"yhat", yhatArg}}}}};
  return parsePlan(m.dump());
}

TEST(OpsExtra, RowIsInTheTypedTable) {
  const OpSignature *sig = findOp("dummy_scale");
  ASSERT_NE(sig, nullptr);
  EXPECT_EQ(sig->id, OpId::dummy_scale);
  EXPECT_EQ(size_t(OpId::dummy_scale), opSignatures().size() - 1);
  EXPECT_EQ(sig->kind, OpKind::Shared);
  ASSERT_EQ(sig->args.size(), 2u);
  EXPECT_STREQ(sig->args[1], "yhat");
  EXPECT_EQ(sig->arguments[1].role, ArgRole::Acc);
  EXPECT_EQ(sig->attrs, std::vector<std::string>{"D"});
}

TEST(OpsExtra, PlanLoaderChecksTheRowsArguments) {
  EXPECT_TRUE(planWithDummy("yhat").isOk());
  nlohmann::json m = nlohmann::json::parse(fixtureManifest());
  m["kernels"].push_back({{"name", "dummy_scale"}, {"op", "dummy_scale"}});
  m["entry_points"]["extra"] = {{{"kernel", "dummy_scale"}, {"args", {{"x", "x"}, {"y", "y"}}}}};
  auto bad = parsePlan(m.dump());
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("'y' is not an argument of op dummy_scale"),
            std::string::npos)
      << bad.status().message();
}

TEST(OpsExtra, ShapeInferenceAppliesTheRowsShapes) {
  auto plan = planWithDummy("pre"); // pre is [B,T], the row wants [B,D]
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  auto exec = CpuExecutor<float>::create(*plan, 4);
  ASSERT_FALSE(exec.isOk());
  EXPECT_NE(exec.status().message().find("argument 'yhat' ('pre') has shape [4,5], expected [4,8]"),
            std::string::npos)
      << exec.status().message();
}

TEST(OpsExtra, CpuDispatchRunsTheRowsKernelAfterZeroingItsAccumulator) {
  auto plan = planWithDummy("yhat");
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  const int64_t B = 4, D = plan->model.d_model;
  auto exec = CpuExecutor<float>::create(*plan, B);
  ASSERT_TRUE(exec.isOk()) << exec.status().message();
  std::vector<float> x(size_t(B * D)), stale(x.size(), 100.f), yhat(x.size());
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = 0.25f * float(i) - 3.f;
  ASSERT_TRUE((*exec)->write("x", x.data(), x.size() * 4).isOk());
  ASSERT_TRUE((*exec)->write("yhat", stale.data(), stale.size() * 4).isOk());
  Status s = (*exec)->run("extra");
  ASSERT_TRUE(s.isOk()) << s.message();
  ASSERT_TRUE((*exec)->read("yhat", yhat.data(), yhat.size() * 4).isOk());
  for (size_t i = 0; i < x.size(); ++i)
    EXPECT_EQ(yhat[i], 3.f * x[i]) << i; // the stale 100 was zeroed: yhat is Acc
}

TEST(OpsExtra, EmitterTakesHeaderScratchAndLaunchFromTheRow) {
  KernelDesc k;
  k.name = "dummy_scale";
  k.op = "dummy_scale";
  k.entry = "molt_dummy_scale";
  k.attrs["D"] = int64_t(8);
  k.launch = cudaDefaultLaunch(k);
  EXPECT_EQ(k.launch.grid[0], "cdiv(B,16)");
  EXPECT_EQ(k.launch.grid[1], "8");
  EXPECT_EQ(cudaWorkWords(k, 32), 16);
  EXPECT_EQ(opWork(k, 32, 8), 3.0 * 32 * 8);
  auto src = cudaWrapperSource(k);
  ASSERT_TRUE(src.isOk()) << src.status().message();
  EXPECT_NE(src->find("#include \"molt_kernels/dummy_scale.cuh\""), std::string::npos) << *src;
  EXPECT_NE(src->find("molt::k::dummy_scale<Cfg>(a);"), std::string::npos) << *src;
  EXPECT_NE(src->find("static constexpr long long D = 8LL;"), std::string::npos) << *src;
  const auto &files = cudaKernelHeaderFiles();
  EXPECT_NE(std::find(files.begin(), files.end(), "dummy_scale.cuh"), files.end());
}

} // namespace
} // namespace molt
