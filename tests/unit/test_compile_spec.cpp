// The compiler facade (passes/CompileSpec.h): counts, rescheduled specs and bundles from a spec
// plus a schedule, its one-line errors, and the pre-parse guard on every call.
#ifdef MOLT_TEST_HAVE_COMPILER
#include <gtest/gtest.h>

#include <filesystem>

#include "molt/plan.h"
#include "passes/CompileSpec.h"

namespace molt::compiler {
namespace {

namespace fs = std::filesystem;
const std::string kSmall = std::string(MOLT_SOURCE_DIR) + "/examples/specs/small.mlir";

Spec small() {
  auto spec = readSpec(kSmall);
  EXPECT_TRUE(spec.isOk()) << spec.status().message();
  return *spec;
}

bool oneLine(const Status &s) { return s.message().find('\n') == std::string::npos; }

TEST(CompileSpec, DescribeGivesTheCountsOfEveryOp) {
  auto facts = describeSpec(small());
  ASSERT_TRUE(facts.isOk()) << facts.status().message();
  // The values tests/lit/passes/describe.mlir checks by hand for small.mlir.
  const LayerFacts *layer = facts->findLayer();
  ASSERT_NE(layer, nullptr);
  EXPECT_EQ(layer->symbol, "molt");
  EXPECT_EQ(layer->dModel, 64);
  EXPECT_EQ(layer->transforms, 30);
  EXPECT_EQ(layer->featureEquivalents, 256);
  EXPECT_EQ(layer->params, 34812);
  EXPECT_EQ(layer->encoderParams + layer->transformParams + layer->decoderBiasParams, 34812);
  ASSERT_EQ(layer->buckets.size(), 4u);
  EXPECT_EQ(layer->buckets[0].rank, 32);
  EXPECT_EQ(layer->buckets[0].count, 2);
  EXPECT_DOUBLE_EQ(layer->lambda, 0.01);
  ASSERT_EQ(facts->transcoders.size(), 1u);
  EXPECT_EQ(facts->transcoders[0].features, 267);
  EXPECT_EQ(facts->transcoders[0].params, 34774);
  EXPECT_EQ(facts->transcoders[0].matchedLayer, "molt");
  ASSERT_EQ(facts->mlps.size(), 1u);
  EXPECT_EQ(facts->mlps[0].params, 33088);
  EXPECT_EQ(facts->findLayer("@molt"), layer);
  EXPECT_EQ(facts->findLayer("@nope"), nullptr);
  // The table is what molt-opt --molt-describe prints (its lit test checks the lines).
  EXPECT_NE(facts->toText().find("transforms 30, feature-equivalents 256, parameters 34812"),
            std::string::npos);
  EXPECT_NE(facts->toJson().find("\"params\":34812"), std::string::npos) << facts->toJson();
}

TEST(CompileSpec, ScheduleOverrideChangesTheCountsAndTheMatchedWidth) {
  // 64 transforms of rank 4: the same 256 feature-equivalents, more encoder rows.
  RankSchedule uniform{"@molt", {4}, {64}};
  auto facts = describeSpec(small(), uniform);
  ASSERT_TRUE(facts.isOk()) << facts.status().message();
  const LayerFacts *layer = facts->findLayer();
  EXPECT_EQ(layer->transforms, 64);
  EXPECT_EQ(layer->featureEquivalents, 256);
  // encoder 64*64 + 2*64 (jumprelu thresholds and biases), U,V 2*64*256, b_dec 64.
  EXPECT_EQ(layer->params, 64 * 64 + 2 * 64 + 2 * 64 * 256 + 64);
  // The transcoder matched to it widens with the budget: (params - 64) / 130.
  EXPECT_EQ(facts->transcoders[0].features, (layer->params - 64) / 130);
}

TEST(CompileSpec, RescheduledSpecIsPrintedByTheDialectAndParsesBack) {
  RankSchedule s{"", {16, 8}, {4, 24}}; // not geometric, so printed as ranks and counts
  auto text = rescheduleSpec(small(), s);
  ASSERT_TRUE(text.isOk()) << text.status().message();
  EXPECT_NE(text->find("ranks = [16, 8], counts = [4, 24]"), std::string::npos) << *text;
  auto again = describeSpec(Spec{*text, "rescheduled.mlir"});
  ASSERT_TRUE(again.isOk()) << again.status().message();
  EXPECT_EQ(again->findLayer()->transforms, 28);
  EXPECT_EQ(again->findLayer()->featureEquivalents, 256);
  ASSERT_EQ(again->mlps.size(), 1u); // the other ops are kept
}

TEST(CompileSpec, CompilesTheOverriddenSchedule) {
  const std::string out = testing::TempDir() + "/molt_facade_bundle";
  fs::remove_all(out);
  CompileOptions options;
  options.schedule = RankSchedule{"@molt", {8}, {32}};
  Status st = compileSpec(small(), out, options);
  ASSERT_TRUE(st.isOk()) << st.message();
  auto plan = loadPlan(out);
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  ASSERT_EQ(plan->model.buckets.size(), 1u);
  EXPECT_EQ(plan->model.buckets[0].rank, 8);
  EXPECT_EQ(plan->model.buckets[0].count, 32);
}

TEST(CompileSpec, BadInputIsOneLineNamingTheSpec) {
  struct Case {
    Spec spec;
    std::string cause;
  } cases[] = {
      {{"", "empty.mlir"}, "empty.mlir:1:1: empty input"},
      {{"  // only a comment\n\n", "blank.mlir"}, "blank.mlir:1:1: empty input"},
      {{std::string(300, '[') + std::string(300, ']'), "deep.mlir"},
       "deep.mlir:1:257: brackets nested more than 256 deep"},
      {{"this is not a spec\n", "prose.mlir"}, "prose.mlir:1:1:"},
      // Two errors: the first is reported, and that there were more.
      {{"module {\n  molt.layer @a {d_model = 0}\n  molt.layer @b {d_model = 0}\n}\n",
        "two.mlir"},
       "two.mlir:2:"},
  };
  for (const Case &c : cases) {
    auto facts = describeSpec(c.spec);
    ASSERT_FALSE(facts.isOk()) << c.spec.name;
    EXPECT_EQ(facts.status().message().rfind(c.cause, 0), 0u) << facts.status().message();
    EXPECT_TRUE(oneLine(facts.status())) << facts.status().message();
    // compileSpec is guarded the same way (molt-train and the Python module use it).
    Status compiled = compileSpec(c.spec, testing::TempDir() + "/molt_facade_bad");
    EXPECT_EQ(compiled.message(), facts.status().message());
  }
  auto missing = readSpec("/no/such/spec.mlir");
  ASSERT_FALSE(missing.isOk());
  EXPECT_NE(missing.status().message().find("cannot read"), std::string::npos);
}

TEST(CompileSpec, BadSchedulesAreRejectedByTheDialect) {
  struct Case {
    RankSchedule schedule;
    std::string cause;
  } cases[] = {
      {{"@nope", {4}, {64}}, "no molt.layer @nope"},
      {{"", {4, 2}, {64}}, "one count per rank"},
      {{"", {0}, {4}}, "small.mlir:"},   // the bucket verifier: rank must be positive
      {{"", {4, 4}, {2, 2}}, "small.mlir:"}, // the schedule verifier: distinct ranks
      {{"", {128}, {2}}, "small.mlir:"}, // the layer verifier: rank above d_model
  };
  for (const Case &c : cases) {
    auto text = rescheduleSpec(small(), c.schedule);
    ASSERT_FALSE(text.isOk()) << c.cause;
    EXPECT_NE(text.status().message().find(c.cause), std::string::npos)
        << text.status().message();
    EXPECT_TRUE(oneLine(text.status())) << text.status().message();
  }
}

} // namespace
} // namespace molt::compiler
#endif
