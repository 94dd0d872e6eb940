// molt-tune: flag parsing only; the searches live in kernel_tune.cpp and schedule_search.cpp.
#include "tools/common/cli.h"
#include "tools/molt-tune/kernel_tune.h"
#include "tools/molt-tune/schedule_search.h"

#include "molt/tuning.h"
#ifdef MOLT_HAVE_COMPILE_SPEC
#include "passes/CompileSpec.h"
#endif

namespace {

bool endsWith(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

} // namespace

int main(int argc, char **argv) {
  const std::string tool = "molt-tune";
  CLI::App app{"Autotunes kernel launch configurations and rank schedules (docs/tuning.md).\n"
               "Both searches save after every measurement: Ctrl-C and rerun to resume.",
               "molt-tune"};
  app.require_subcommand(1);

  molt::tune::KernelTuneOptions k;
  std::string kernelInput;
  k.db = molt::defaultTuningDbPath();
  CLI::App *kernels = app.add_subcommand(
      "kernels",
      "Time every legal launch configuration of each kernel and keep the fastest.\n"
      "Budget: per kernel, candidates x (warmup + repeats) train steps at --batch tokens\n"
      "(CPU: thread counts 1,2,4..cores, pruned by a work estimate; CUDA: grid sizes and\n"
      "128-thread tiles, each a recompiled bundle), then (2 + CPU thread counts) x (warmup +\n"
      "2 x repeats) whole steps to pick the fastest configuration. The database is saved after\n"
      "each kernel: Ctrl-C and rerun skips the kernels already in it.");
  kernels->add_option("SPEC_OR_BUNDLE", kernelInput, "a bundle directory or a .mlir spec")->required();
  kernels->add_option("--device", k.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
  kernels->add_option("--db", k.db, "tuning database to update (default: $MOLT_TUNING_DB or "
                                    "~/.cache/molt/tuning.json)");
  kernels->add_option("--batch", k.batch, "tokens per step to time at")->check(CLI::Range(1, 1 << 20));
  kernels->add_option("--warmup", k.warmup, "untimed steps per candidate")->check(CLI::Range(0, 100));
  kernels->add_option("--repeats", k.repeats, "timed steps per candidate (median)")
      ->check(CLI::Range(1, 1000));
  kernels->add_flag("--retune", k.retune, "re-time kernels the database already has");
  kernels->add_flag("--quiet", k.quiet, "only the final step-time line");

  molt::tune::ScheduleSearchOptions s;
  CLI::App *schedule = app.add_subcommand(
      "schedule",
      "Search rank allocations at the spec's parameter budget (needs a build with the compiler).\n"
      "Budget: 10-16 candidates x 1-4 runs x --seeds (the spec's lambda, then lambda x or / factor^k\n"
      "until L0 brackets the reference's) x --steps in round 0, then the better half (plus the\n"
      "reference and the best uniform schedule) at twice the steps, until 3 remain. Each run\n"
      "is one training + evaluation, saved to OUT.runs/results.json: Ctrl-C and rerun\n"
      "resumes. --time-limit stops between runs and reports the last finished round.");
  schedule->add_option("SPEC", s.spec, "a .mlir spec with a molt.layer")->required();
  schedule->add_option("--data", s.data, "training data (molt-synth OUT/train)")->required();
  schedule->add_option("--val", s.val, "validation data (molt-synth OUT/val)")->required();
  schedule->add_option("-o,--out", s.out, "the winning spec (.mlir); the report goes to OUT.csv")
      ->required();
  schedule->add_option("--layer", s.layer, "the layer to search (default: the first)");
  schedule->add_option("--time-limit", s.timeLimit, "seconds (0: none)")->check(CLI::NonNegativeNumber);
  schedule->add_option("--steps", s.steps, "training steps per run in round 0")->check(CLI::Range(1, 10000000));
  schedule->add_option("--batch", s.batch, "tokens per step")->check(CLI::Range(1, 1 << 20));
  schedule->add_option("--lambda-factor", s.lambdaFactor,
                       "candidates off the reference's L0 train again at lambda x or / this (up to "
                       "3 times, until they bracket it), to interpolate their NMSE at that L0")->check(CLI::Range(1.01, 1000.0));
  schedule->add_option("--seeds", s.seeds,
                       "training seeds per run, L0 and NMSE averaged (multiplies the budget)")
      ->check(CLI::Range(1, 16));
  schedule->add_option("--work", s.work, "run folders and results.json (default: OUT.runs)");
  schedule->add_flag("--quiet", s.quiet, "only the result lines");

  if (int rc = molt::tool::parse(app, argc, argv); rc >= 0)
    return rc;

  molt::Status status;
  if (kernels->parsed()) {
    if (k.db.empty())
      return molt::tool::fail(tool, "no tuning database: pass --db (MOLT_TUNING_DB is off)");
    k.bundle = kernelInput;
    if (endsWith(kernelInput, ".mlir")) { // compiled next to the database, then tuned
#ifdef MOLT_HAVE_COMPILE_SPEC
      k.bundle = k.db + ".bundle";
      if (molt::Status st = molt::compiler::compileSpec(kernelInput, k.bundle); !st)
        return molt::tool::fail(tool, st.message());
#else
      return molt::tool::fail(tool, "this build cannot compile specs; pass a bundle made by "
                                    "molt-compile");
#endif
    }
    status = molt::tune::tuneKernels(k);
  } else {
    if (s.layer.size() && s.layer[0] != '@')
      s.layer = "@" + s.layer;
    status = molt::tune::searchSchedule(s);
  }
  if (!status.isOk())
    return molt::tool::fail(tool, status.message());
  return 0;
}
