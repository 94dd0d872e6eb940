// The manifest loader: every fixture loads and round-trips; each kind of bad manifest is
// rejected with one line that names the offending field.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "molt/io.h"
#include "molt/plan.h"

namespace {

using json = nlohmann::json;
const std::string kFixtures = std::string(MOLT_SOURCE_DIR) + "/tests/fixtures";

json fixtureJson(const std::string &name) {
  auto text = molt::readFile(kFixtures + "/" + name + "/manifest.json");
  EXPECT_TRUE(text.isOk()) << text.status().message();
  return json::parse(*text);
}

// Parses a mutated fixture and returns the error message ("" when it loaded).
std::string errorOf(const json &j) {
  auto plan = molt::parsePlan(j.dump());
  if (plan.isOk())
    return "";
  EXPECT_EQ(plan.status().code(), molt::Code::InvalidArgument);
  EXPECT_EQ(plan.status().message().find('\n'), std::string::npos);
  return plan.status().message();
}

TEST(Plan, EveryFixtureLoadsAndRoundTrips) {
  int loaded = 0;
  for (const auto &e : std::filesystem::directory_iterator(kFixtures)) {
    if (!e.is_directory() || !std::filesystem::exists(e.path() / "manifest.json"))
      continue; // e.g. __pycache__ beside make_fixture.py
    auto plan = molt::loadPlan(e.path().string());
    ASSERT_TRUE(plan.isOk()) << e.path() << ": " << plan.status().message();
    std::string once = molt::planToJson(*plan);
    auto again = molt::parsePlan(once);
    ASSERT_TRUE(again.isOk()) << again.status().message();
    EXPECT_EQ(molt::planToJson(*again), once) << "not a fixed point: " << e.path();
    ++loaded;
  }
  EXPECT_GE(loaded, 2);
}

TEST(Plan, ReadsTheModelOfTinyMolt) {
  auto plan = molt::loadPlan(kFixtures + "/tiny-molt");
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  EXPECT_EQ(plan->model.kind, "molt");
  EXPECT_EQ(plan->model.d_model, 8);
  ASSERT_EQ(plan->model.buckets.size(), 2u);
  EXPECT_EQ(plan->model.numTransforms(), 5);
  EXPECT_EQ(plan->model.bucketOffset(1), 2);
  EXPECT_EQ(plan->model.gate.kind, "jumprelu");
  EXPECT_DOUBLE_EQ(plan->model.penalty.c, 2.0);
  ASSERT_NE(plan->findParam("enc_w"), nullptr);
  EXPECT_EQ(plan->findParam("enc_w")->shape, (std::vector<int64_t>{5, 8}));
  EXPECT_EQ(plan->findParam("enc_w")->init.kind, "normal");
  ASSERT_NE(plan->findBuffer("pair_tok"), nullptr);
  EXPECT_EQ(plan->findBuffer("pair_tok")->shape[0].symbol, "P");
  EXPECT_EQ(plan->findBuffer("pair_tok")->dtype, "i32");
  EXPECT_TRUE(plan->entry_points.count("train_step"));
}

// tiny-molt: T = 5 transforms, buckets of 2 and 3; every form the loader accepts evaluates.
TEST(Plan, LaunchGridsEvaluateForABoundBatch) {
  auto plan = molt::loadPlan(kFixtures + "/tiny-molt");
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  auto grid = [&](std::string x, std::string y = "1", std::string z = "1") {
    molt::LaunchConfig l;
    l.grid[0] = std::move(x), l.grid[1] = std::move(y), l.grid[2] = std::move(z);
    return molt::launchGrid(*plan, l, 100);
  };
  auto g = grid("cdiv(B,8)", "T", "7");
  ASSERT_TRUE(g.isOk()) << g.status().message();
  EXPECT_EQ(*g, (std::array<unsigned, 3>{13, 5, 7}));
  g = grid("P", "cdiv(P1, 64)");
  ASSERT_TRUE(g.isOk()) << g.status().message();
  EXPECT_EQ(*g, (std::array<unsigned, 3>{500, 5, 1})); // P1 = 100 x 3
  EXPECT_FALSE(grid("P2").isOk());                      // no third bucket
  EXPECT_FALSE(grid("1", "70000").isOk());              // y is at most 65535
  EXPECT_FALSE(grid("cdiv(Q,4)").isOk());
  EXPECT_FALSE(grid("99999999999999999999").isOk());
}

TEST(Plan, WritePlanIsAtomicAndReadable) {
  auto plan = molt::loadPlan(kFixtures + "/tiny-molt");
  ASSERT_TRUE(plan.isOk());
  std::string dir = testing::TempDir() + "/molt_plan_write/bundle";
  std::filesystem::remove_all(dir);
  ASSERT_TRUE(molt::writePlan(*plan, dir).isOk());
  auto back = molt::loadPlan(dir);
  ASSERT_TRUE(back.isOk()) << back.status().message();
  EXPECT_EQ(molt::planToJson(*back), molt::planToJson(*plan));
  int files = 0;
  for (const auto &e : std::filesystem::directory_iterator(dir))
    files += e.is_regular_file();
  EXPECT_EQ(files, 1) << "a temp file was left behind";
}

TEST(Plan, MissingBundleAndNonJson) {
  auto missing = molt::loadPlan("/nonexistent/bundle");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().code(), molt::Code::NotFound);
  auto bad = molt::parsePlan("{\"format\": ");
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("not valid JSON"), std::string::npos);
}

struct BadCase {
  const char *what;
  void (*mutate)(json &);
  const char *expect; // a substring of the error
};

json &firstInvocation(json &j, const char *entry) { return j["entry_points"][entry][0]; }

const BadCase kBad[] = {
    {"version", [](json &j) { j["version"] = 2; }, "manifest.version"},
    {"format", [](json &j) { j["format"] = "other"; }, "manifest.format"},
    {"unknown op", [](json &j) { j["kernels"][0]["op"] = "fused_magic"; },
     "kernels[0].op: unknown kernel op 'fused_magic'"},
    {"arg not in signature",
     [](json &j) { firstInvocation(j, "forward")["args"]["w"] = "enc_w"; },
     "'w' is not an argument of op"},
    {"missing arg", [](json &j) { firstInvocation(j, "forward")["args"].erase("enc_b"); },
     "missing argument 'enc_b'"},
    {"unknown buffer", [](json &j) { firstInvocation(j, "forward")["args"]["pre"] = "nowhere"; },
     "unknown param or buffer 'nowhere'"},
    {"unknown kernel", [](json &j) { firstInvocation(j, "forward")["kernel"] = "ghost"; },
     "unknown kernel 'ghost'"},
    {"bad param dim", [](json &j) { j["params"][0]["shape"][0] = 0; }, "params[0].shape[0]"},
    {"bad buffer symbol", [](json &j) { j["buffers"][0]["shape"][0] = "Q"; },
     "buffers[0].shape[0]"},
    {"bad dtype", [](json &j) { j["buffers"][0]["dtype"] = "f64"; }, "buffers[0].dtype"},
    {"bad grid", [](json &j) { j["kernels"][0]["launch"]["grid"] = {"cdiv(Q,4)", "1", "1"}; },
     "bad grid expression 'cdiv(Q,4)'"},
    {"block too big", [](json &j) { j["kernels"][0]["launch"]["block"] = {64, 32, 1}; },
     "kernels[0].launch.block"},
    {"unknown field", [](json &j) { j["model"]["colour"] = "blue"; },
     "model: unknown field 'colour'"},
    {"gate kind", [](json &j) { j["model"]["gate"]["kind"] = "sigmoid"; }, "model.gate.kind"},
    {"d_model", [](json &j) { j["model"]["d_model"] = -3; }, "model.d_model"},
    {"no buckets", [](json &j) { j["model"]["buckets"] = json::array(); }, "model.buckets"},
    {"reserved x shape", [](json &j) { j["buffers"][0]["shape"] = {"B", 7}; }, "buffers.x"},
    {"duplicate buffer", [](json &j) { j["buffers"].push_back(j["buffers"][0]); },
     "duplicate tensor name 'x'"},
    {"unknown adam param",
     [](json &j) {
       for (json &inv : j["entry_points"]["train_step"])
         if (inv["args"].contains("params"))
           inv["args"]["params"] = inv["args"]["params"].get<std::string>() + ",ghost";
     },
     "unknown param 'ghost'"},
    {"missing model", [](json &j) { j.erase("model"); }, "missing field 'model'"},
    {"init kind", [](json &j) { j["params"][0]["init"] = {{"kind", "xavier"}}; },
     "params[0].init.kind"},
};

TEST(Plan, RejectsEachBadManifestWithOneLineNamingTheField) {
  json good = fixtureJson("tiny-molt");
  ASSERT_EQ(errorOf(good), "");
  for (const BadCase &c : kBad) {
    json j = good;
    c.mutate(j);
    std::string err = errorOf(j);
    EXPECT_NE(err.find(c.expect), std::string::npos)
        << c.what << ": got '" << err << "', wanted it to mention '" << c.expect << "'";
  }
}

TEST(Plan, TranscoderNeedsFeatures) {
  json j = fixtureJson("tiny-transcoder");
  ASSERT_EQ(errorOf(j), "");
  j["model"].erase("features");
  EXPECT_NE(errorOf(j).find("missing field 'features'"), std::string::npos);
}

} // namespace
