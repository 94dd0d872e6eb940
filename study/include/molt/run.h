// The run directory drivers behind molt-train and molt-eval (the tools' mains only parse
// flags): RUN/bundle, RUN/checkpoint.safetensors, RUN/metrics.jsonl, RUN/weights.safetensors.
#pragma once

#include <cstdint>
#include <string>

#include "molt/evaluator.h"
#include "molt/jacobian.h"
#include "molt/status.h"
#include "molt/trainer.h"

namespace molt {

struct TrainOptions {
  std::string bundle; // a bundle directory (a spec is compiled into one by the tool first)
  std::string spec;   // the spec the bundle came from, copied to RUN/spec.mlir (optional)
  std::string data, val, out;
  int64_t steps = 2000;
  int64_t scheduleSteps = 0; // the LR / λ schedule's length; 0: --steps (kept on resume)
  int64_t batch = 1024;
  double lr = 1e-3;
  double lambda = -1;       // < 0: the plan's penalty λ
  std::string decay = "cosine";
  uint64_t seed = 0;
  std::string device = "cpu";
  bool resume = false;
  int64_t logEvery = 50, checkpointEvery = 500;
  int64_t deadWindow = 1000000; // tokens without activity after which a transform is dead
  bool quiet = false;
  /// SIGTERM / SIGINT stop the run after the step in flight with a checkpoint (molt/stop.h);
  /// runTraining then returns Code::Cancelled. A stop requested with molt::requestStop() is
  /// honoured either way.
  bool stopOnSignals = true;
  /// Data-parallel training (python -m molt.train under torchrun): `batch` stays the global
  /// batch and must divide by the world size; only rank 0 writes into `out`.
  DataParallel parallel;
};

/// Trains into opts.out. Every failure is one line; files already written stay intact (a
/// failed resume leaves the checkpoint alone; a fresh run refuses a RUN that holds one).
/// `resume` on a RUN without a checkpoint starts at step 0 when RUN holds only what an earlier
/// start wrote (bundle/, spec.mlir, metrics.jsonl, temporaries), so a preempted job's repeated
/// command works however early it was killed. A requested stop returns Code::Cancelled after
/// writing the checkpoint.
Status runTraining(const TrainOptions &opts);

/// Evaluates RUN's checkpoint on DATA (normalised as in training). With a teacher MLP file,
/// also jacobian_cosine of the exported (folded) weights over the first `jacobianRows` finite
/// rows of raw x, by `jacobian.method` (Compiled: the bundle's `jvp` entry on `device`, on an
/// executor of its own that evaluateRun prepares; `jacobian.executor` is ignored).
StatusOr<EvalReport> evaluateRun(const std::string &runDir, const std::string &data,
                                 int64_t batch, const std::string &device,
                                 const std::string &teacher = "", int64_t jacobianRows = 2000,
                                 const JacobianOptions &jacobian = {});

} // namespace molt
