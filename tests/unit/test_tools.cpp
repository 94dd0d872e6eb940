// The tools as users meet them: every bad input ends in exit code 1 and one line
// "tool: error: ..." (never a crash), and a good run trains, evaluates and prints JSON.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sys/wait.h>

#include "molt/io.h"
#include "molt/safetensors.h"
#include "molt/synth.h"

namespace {

namespace fs = std::filesystem;
const std::string kBin = std::string(MOLT_BINARY_DIR) + "/bin/";
const std::string kFixture = std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt";

struct Result {
  int rc = -1;
  std::string out, err;
};

Result run(const std::string &args) {
  std::string dir = testing::TempDir() + "/molt_tools_io";
  fs::create_directories(dir);
  std::string cmd = args + " >" + dir + "/out 2>" + dir + "/err";
  int status = std::system(cmd.c_str());
  Result r;
  r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  r.out = *molt::readFile(dir + "/out");
  r.err = *molt::readFile(dir + "/err");
  return r;
}

std::string scratch(const std::string &name) {
  std::string dir = testing::TempDir() + "/molt_tools/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

const std::string &synth() {
  static const std::string dir = [] {
    std::string d = scratch("synth");
    Result r = run(kBin + "molt-synth --out " + d + " --d 8 --hidden 32 --clusters 6 --rows 2000 "
                          "--val-rows 300 --shard-rows 1000");
    EXPECT_EQ(r.rc, 0) << r.err;
    EXPECT_NE(r.out.find("best linear map: nmse"), std::string::npos);
    return d;
  }();
  return dir;
}

void expectOneLineError(const Result &r, const std::string &tool, const std::string &cause,
                        const std::string &what) {
  EXPECT_EQ(r.rc, 1) << what << ": " << r.err;
  EXPECT_EQ(r.err.rfind(tool + ": error: ", 0), 0u) << what << ": " << r.err;
  EXPECT_NE(r.err.find(cause), std::string::npos) << what << ": " << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
}

void writeXY(const std::string &path, int64_t nx, int64_t ny, int64_t d,
             const std::string &dtype = "F32", float fill = 0.5f) {
  std::vector<float> x(size_t(nx * d), fill), y(size_t(ny * d), fill);
  molt::TensorData tx = molt::f32Tensor("x", {nx, d}, x), ty = molt::f32Tensor("y", {ny, d}, y);
  if (dtype == "F64") {
    tx.dtype = ty.dtype = "F64";
    tx.shape[1] = ty.shape[1] = d / 2;
  }
  ASSERT_TRUE(molt::writeSafetensors(path, {tx, ty}).isOk());
}

TEST(Tools, HelpExitsZero) {
  std::vector<std::string> tools = {"molt-train", "molt-eval", "molt-synth", "molt-tune"};
#ifdef MOLT_TEST_HAVE_COMPILER
  tools.push_back("molt-compile");
#endif
  for (const std::string &tool : tools) {
    Result r = run(kBin + tool + " --help");
    EXPECT_EQ(r.rc, 0) << tool;
    EXPECT_NE(r.out.find("Usage"), std::string::npos) << tool;
  }
}

TEST(Tools, TrainRejectsBadInputWithOneLine) {
  std::string bad = scratch("bad");
  std::string good = synth() + "/train";
  std::string garbage = bad + "/garbage.safetensors";
  ASSERT_TRUE(molt::writeFileAtomic(garbage, std::string(64, '\x7f')).isOk());
  auto shard = *molt::readFile(good + "/shard-00000.safetensors");
  ASSERT_TRUE(molt::writeFileAtomic(bad + "/truncated.safetensors",
                                    shard.substr(0, shard.size() / 2))
                  .isOk());
  writeXY(bad + "/wide.safetensors", 10, 10, 12);
  writeXY(bad + "/mismatch.safetensors", 10, 9, 8);
  writeXY(bad + "/f64.safetensors", 10, 10, 8, "F64");
  fs::create_directories(bad + "/nolayer");
  auto manifest = *molt::readFile(kFixture + "/manifest.json");
  nlohmann::json m = nlohmann::json::parse(manifest);
  m["entry_points"].erase("train_step");
  ASSERT_TRUE(molt::writeFileAtomic(bad + "/nolayer/manifest.json", m.dump()).isOk());
  fs::create_directories(bad + "/empty-bundle");

  std::string train = kBin + "molt-train ";
  std::string out = " --out " + bad + "/run --steps 5 --batch 16";
  struct Case {
    std::string args, cause;
  } cases[] = {
      {kFixture + " --data " + bad + "/missing.safetensors" + out, "no such data file"},
      {kFixture + " --data " + garbage + out, "header length"},
      {kFixture + " --data " + bad + "/truncated.safetensors" + out, "truncated"},
      {kFixture + " --data " + bad + "/wide.safetensors" + out, "width 12 but the model's d is 8"},
      {kFixture + " --data " + bad + "/mismatch.safetensors" + out, "x has 10 rows but y has 9"},
      {kFixture + " --data " + bad + "/f64.safetensors" + out, "unsupported dtype F64"},
      {kFixture + " --data " + good + " --val " + bad + "/wide.safetensors" + out, "--val"},
      {bad + "/nolayer --data " + good + out, "no train_step entry point"},
      {bad + "/empty-bundle --data " + good + out, "manifest.json"},
      {bad + "/no-such-bundle --data " + good + out, "no bundle directory"},
#ifdef MOLT_TEST_HAVE_COMPILER
      {bad + "/spec.mlir --data " + good + out, "cannot read"},
#else
      {bad + "/spec.mlir --data " + good + out, "cannot compile specs"},
#endif
      {kFixture + " --data " + good + out + " --device tpu", "tpu"},
      {kFixture + " --data " + good + " --out " + bad + "/run --steps 0", "must be positive"},
      {kFixture + " --data " + good + out + " --bogus", "bogus"},
      // No checkpoint yet is a fresh start, but not over files molt-train did not write.
      {kFixture + " --data " + good + " --out " + bad + " --resume", "did not write"},
  };
  for (const Case &c : cases)
    expectOneLineError(run(train + c.args), "molt-train", c.cause, c.args);
  EXPECT_FALSE(fs::exists(bad + "/run/checkpoint.safetensors"));
}

TEST(Tools, NanRowsAreReportedAndSkipped) {
  std::string dir = scratch("nan");
  std::vector<float> x(64 * 8, 0.25f), y(64 * 8, -0.5f);
  for (int r = 0; r < 64; ++r)
    x[size_t(r * 8)] = float(r % 7) - 3.0f;
  x[5 * 8 + 2] = std::numeric_limits<float>::quiet_NaN();
  y[9 * 8 + 1] = std::numeric_limits<float>::infinity();
  ASSERT_TRUE(molt::writeSafetensors(dir + "/d.safetensors", {molt::f32Tensor("x", {64, 8}, x),
                                                              molt::f32Tensor("y", {64, 8}, y)})
                  .isOk());
  Result r = run(kBin + "molt-train " + kFixture + " --data " + dir + "/d.safetensors --out " +
                 dir + "/run --steps 3 --batch 16");
  EXPECT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.err.find("skipped 2 data rows with NaN or Inf"), std::string::npos) << r.err;
}

TEST(Tools, TrainThenEvalPrintsFlatJson) {
  std::string dir = scratch("good");
  Result t = run(kBin + "molt-train " + kFixture + " --data " + synth() + "/train --val " +
                 synth() + "/val --out " + dir + "/run --steps 40 --batch 64 --log-every 10");
  ASSERT_EQ(t.rc, 0) << t.err;
  EXPECT_NE(t.err.find("step 40/40"), std::string::npos) << "plain progress lines off a TTY";
  EXPECT_NE(t.err.find("tok/s"), std::string::npos);
  EXPECT_NE(t.err.find("eta"), std::string::npos);
  for (const char *f : {"checkpoint.safetensors", "metrics.jsonl", "weights.safetensors",
                        "bundle/manifest.json"})
    EXPECT_TRUE(fs::exists(dir + "/run/" + f)) << f;

  Result e = run(kBin + "molt-eval " + dir + "/run --data " + synth() + "/val --json");
  ASSERT_EQ(e.rc, 0) << e.err;
  nlohmann::json j = nlohmann::json::parse(e.out);
  for (const char *key : {"nmse", "fvu", "l0", "dead_fraction"})
    EXPECT_TRUE(j[key].is_number()) << key;
  for (auto it = j.begin(); it != j.end(); ++it)
    EXPECT_FALSE(it.value().is_structured()) << "not flat: " << it.key();

  Result text = run(kBin + "molt-eval " + dir + "/run --data " + synth() + "/val");
  EXPECT_EQ(text.rc, 0);
  EXPECT_NE(text.out.find("nmse"), std::string::npos);
  EXPECT_NE(text.out.find("bucket 1"), std::string::npos);

  expectOneLineError(run(kBin + "molt-eval " + dir + "/nope --data " + synth() + "/val"),
                     "molt-eval", "no run directory", "missing run");
  expectOneLineError(run(kBin + "molt-eval " + dir + "/run --data " + dir + "/none"), "molt-eval",
                     "no such data", "missing data");
  expectOneLineError(run(kBin + "molt-eval " + dir + "/run --data " + synth() + "/val --batch 0"),
                     "molt-eval", "--batch", "batch 0");

  // The compiled Jacobian cosine (the bundle's jvp entry) draws the host estimator's probes.
  const std::string jac = kBin + "molt-eval " + dir + "/run --data " + synth() + "/val --teacher " +
                          synth() + "/teacher.safetensors --jacobian-rows 100 --probes 16 --json";
  Result random = run(jac + " --jacobian-method random");
  Result compiled = run(jac + " --jacobian-method compiled");
  ASSERT_EQ(random.rc, 0) << random.err;
  ASSERT_EQ(compiled.rc, 0) << compiled.err;
  const double a = nlohmann::json::parse(random.out)["jacobian_cosine"];
  const double b = nlohmann::json::parse(compiled.out)["jacobian_cosine"];
  EXPECT_NEAR(b, a, 1e-4);
  expectOneLineError(run(jac + " --jacobian-method compiled --probes 1"), "molt-eval", "--probes",
                     "one probe");
}

TEST(Tools, EvalWarnsOnCollapse) {
  std::string dir = scratch("collapse");
  // A λ so large that the penalty switches every transform off.
  Result t = run(kBin + "molt-train " + kFixture + " --data " + synth() + "/train --out " + dir +
                 "/run --steps 60 --batch 64 --lambda 1000 --lr 0.05 --quiet");
  ASSERT_EQ(t.rc, 0) << t.err;
  Result e = run(kBin + "molt-eval " + dir + "/run --data " + synth() + "/val");
  EXPECT_EQ(e.rc, 0);
  EXPECT_NE(e.out.find("warning: collapse"), std::string::npos) << e.out;
}

// Every tool that reads a spec or a file, on an empty file, a file that is not a spec (or not
// data) and brackets nested past what MLIR's parser survives: one line, exit 1. The guard
// sits in the compiler facade, so molt-train and molt-tune get it without molt-opt.
TEST(Tools, BadFilesAreOneLineInEveryTool) {
  std::string bad = scratch("badfiles");
  const std::string empty = bad + "/empty.mlir", prose = bad + "/prose.mlir",
                    deep = bad + "/deep.mlir", bin = bad + "/data.safetensors";
  ASSERT_TRUE(molt::writeFileAtomic(empty, "").isOk());
  ASSERT_TRUE(molt::writeFileAtomic(prose, "Dear reader,\nthis is a letter.\n").isOk());
  ASSERT_TRUE(molt::writeFileAtomic(deep, "module {" + std::string(5000, '[') + "\n").isOk());
  ASSERT_TRUE(molt::writeFileAtomic(bin, "").isOk());
  struct Input {
    std::string path, cause;
  };
  const std::vector<Input> specs = {
      {empty, "empty.mlir:1:1: empty input"},
      {prose, "prose.mlir:1:1:"},
      {deep, "deep.mlir:1:264: brackets nested more than 256 deep"}, // "module {" + 256 [
  };
  const std::string data = " --data " + synth() + "/train";
  for (const Input &in : specs) {
#ifdef MOLT_TEST_HAVE_COMPILER
    expectOneLineError(run(kBin + "molt-train " + in.path + data + " --out " + bad + "/run"),
                       "molt-train", in.cause, "molt-train " + in.path);
    expectOneLineError(run(kBin + "molt-compile " + in.path + " -o " + bad + "/bundle"),
                       "molt-compile", in.cause, "molt-compile " + in.path);
    expectOneLineError(run(kBin + "molt-tune kernels " + in.path + " --db " + bad + "/db.json"),
                       "molt-tune", in.cause, "molt-tune kernels " + in.path);
    expectOneLineError(run(kBin + "molt-tune schedule " + in.path + data + " --val " + synth() +
                           "/val -o " + bad + "/best.mlir"),
                       "molt-tune", in.cause, "molt-tune schedule " + in.path);
    // molt-opt speaks MLIR's diagnostics (FILE:L:C: error: ..., then the source line for a
    // parse error); its own pre-parse check is one line.
    Result opt = run(kBin + "molt-opt " + in.path);
    EXPECT_EQ(opt.rc, 1) << opt.err;
    EXPECT_EQ(opt.err.rfind(in.path + ":1:", 0), 0u) << opt.err;
    if (in.path != prose)
      EXPECT_EQ(std::count(opt.err.begin(), opt.err.end(), '\n'), 1) << opt.err;
#else
    expectOneLineError(run(kBin + "molt-train " + in.path + data + " --out " + bad + "/run"),
                       "molt-train", "cannot compile specs", "molt-train " + in.path);
    expectOneLineError(run(kBin + "molt-tune schedule " + in.path + data + " --val " + synth() +
                           "/val -o " + bad + "/best.mlir"),
                       "molt-tune", "needs the compiler", "molt-tune schedule " + in.path);
#endif
  }
  // Files where data or a run belongs.
  for (const std::string &f : {empty, prose, bin}) {
    expectOneLineError(run(kBin + "molt-train " + kFixture + " --data " + f + " --out " + bad +
                           "/run2 --steps 2"),
                       "molt-train", "", "molt-train --data " + f);
    expectOneLineError(run(kBin + "molt-eval " + f + " --data " + synth() + "/val"), "molt-eval",
                       "", "molt-eval " + f);
    expectOneLineError(run(kBin + "molt-tune kernels " + f + " --db " + bad + "/db.json"),
                       "molt-tune", "", "molt-tune kernels " + f);
  }
  EXPECT_FALSE(fs::exists(bad + "/run"));
}

} // namespace
