// molt-train: trains a molt layer or transcoder from a bundle (or a spec) on activation data.
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

#include "../common/cli.h"
#include "molt/run.h"
#include "molt/stop.h"
#ifdef MOLT_HAVE_COMPILE_SPEC
#include "passes/CompileSpec.h"
#endif

namespace {

int fail(const std::string &message) { return molt::tool::fail("molt-train", message); }

// 0 when done; kExitStopped after a SIGTERM / SIGINT stop (checkpoint written); 1 on errors.
int finish(const molt::Status &st) {
  if (st.code() == molt::Code::Cancelled) {
    std::fprintf(stderr, "molt-train: %s\n", st.message().c_str());
    return molt::kExitStopped;
  }
  return st ? 0 : fail(st.message());
}

bool isSpec(const std::string &path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".mlir") == 0;
}

} // namespace

int main(int argc, char **argv) {
  molt::TrainOptions o;
  std::string input, layer;
  CLI::App app{"Trains a molt layer or transcoder on activation shards.\n"
               "Writes RUN/checkpoint.safetensors, RUN/metrics.jsonl, RUN/bundle/ and, at the\n"
               "end, RUN/weights.safetensors (normalisation folded in).\n"
               "SIGTERM or SIGINT: the step in flight finishes, a checkpoint is written and\n"
               "molt-train exits 75 (repeat the command with --resume); a second signal exits\n"
               "at once. Exit 0: done; 1: an error (one line).",
               "molt-train"};
  app.add_option("SPEC_OR_BUNDLE", input, "a bundle directory made by molt-compile (or a .mlir "
                                          "spec, in builds with the compiler)")
      ->required();
  app.add_option("--layer", layer, "with a spec: the layer or transcoder to train (e.g. "
                                   "@transcoder; default: the first layer)");
  app.add_option("--data", o.data, "training data: a .safetensors file or directory of shards "
                                   "with x [n,d] and y [n,d]")
      ->required();
  app.add_option("--val", o.val, "validation data, evaluated at the end");
  app.add_option("--out", o.out, "the run directory")->required();
  app.add_option("--steps", o.steps, "total training steps")->capture_default_str();
  app.add_option("--schedule-steps", o.scheduleSteps,
                 "length the LR and lambda schedules are planned over (default: --steps; "
                 "kept on --resume)");
  app.add_option("--batch", o.batch, "tokens per step")->capture_default_str();
  app.add_option("--lr", o.lr, "peak learning rate")->capture_default_str();
  app.add_option("--lambda", o.lambda, "sparsity penalty weight (default: the spec's)");
  app.add_option("--decay", o.decay, "LR decay after warm-up: cosine, linear or constant")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed for initialisation and shuffling")
      ->capture_default_str();
  app.add_option("--device", o.device,
                 "cpu, cuda, or cuda-emu (the CUDA kernels on the host emulator: slow, for checking)")->capture_default_str();
  app.add_flag("--resume", o.resume, "continue the run in --out from its checkpoint (one with "
                                     "no checkpoint yet starts at step 0)");
  app.add_option("--log-every", o.logEvery, "steps between metrics lines")
      ->capture_default_str();
  app.add_option("--checkpoint-every", o.checkpointEvery, "steps between checkpoints")
      ->capture_default_str();
  app.add_option("--dead-window", o.deadWindow,
                 "tokens without activity after which a transform counts as dead")
      ->capture_default_str();
  app.add_flag("--quiet", o.quiet, "no progress lines");
  if (int rc = molt::tool::parse(app, argc, argv); rc >= 0)
    return rc;

  if (!isSpec(input)) {
    o.bundle = input;
  } else if (!o.resume || !std::filesystem::exists(o.out + "/checkpoint.safetensors")) {
    // A resumed run uses RUN/bundle; one with no checkpoint yet starts afresh from the spec.
#ifdef MOLT_HAVE_COMPILE_SPEC
    // Compiled into a scratch directory: runTraining copies it into RUN only once the run
    // is known to start, so a bad flag never leaves a half-made RUN behind.
    std::string scratch = (std::filesystem::temp_directory_path() /
                           ("molt-train-" + std::to_string(::getpid())))
                              .string();
    molt::compiler::CompileOptions copts;
    copts.symbol = layer;
    molt::Status compiled = molt::compiler::compileSpec(input, scratch, copts);
    if (!compiled)
      return fail(compiled.message());
    o.bundle = scratch;
    o.spec = input;
    molt::Status st = molt::runTraining(o);
    std::error_code ec;
    std::filesystem::remove_all(scratch, ec);
    return finish(st);
#else
    (void)layer;
    return fail("this build cannot compile specs; pass a bundle made by molt-compile");
#endif
  }
  return finish(molt::runTraining(o));
}
