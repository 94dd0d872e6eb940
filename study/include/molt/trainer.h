// Training: parameter initialisation, the per-step schedule (λ warm-up, LR warm-up + decay,
// Adam constants), running train_step on an executor, skipped-step accounting, activity
// tracking for the dead fraction, and the folding of normalisation into exported weights.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "molt/backend.h"
#include "molt/data.h"
#include "molt/plan.h"
#include "molt/status.h"

namespace molt {

/// Host copies of tensors by name (params, or params and moments).
using TensorMap = std::map<std::string, std::vector<float>>;

/// Draws every param from its init description with one mt19937_64 stream seeded by `seed`,
/// params in plan order. Normal draws are our own Box–Muller on 53-bit uniforms, so the values
/// are the same on every platform and standard library.
TensorMap initParams(const Plan &plan, uint64_t seed);

Status writeTensors(Executor &exec, const TensorMap &tensors);
/// Reads the named tensors (every param when `names` is empty).
StatusOr<TensorMap> readTensors(Executor &exec, std::vector<std::string> names = {});

/// Multiplies exported weights so that they act on raw (unnormalised) x and predict raw y.
void foldNormalization(const Plan &plan, const Normalization &norm, TensorMap &params);

struct Schedule {
  int64_t steps = 1000;     // the length the schedule is planned over
  double lr = 1e-3;
  double lrWarmup = 0.05;   // fraction of steps with a linear LR ramp from 0
  std::string decay = "cosine"; // "cosine" | "linear" | "constant"
  double minLrFraction = 0.1;   // the LR the decay ends at, as a fraction of lr
  double lambda = 0.0, lambdaWarmup = 0.0; // from the plan's penalty unless overridden
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8, clip = 1.0;
};

/// The `scalars` buffer for 1-based step `step` with `adamStep` updates applied so far.
std::array<float, 8> stepScalars(const Schedule &s, int64_t step, int64_t adamStep,
                                 int64_t batch);

/// Everything that changes as a run proceeds (what a checkpoint stores besides tensors).
struct TrainState {
  int64_t step = 0;      // completed steps (skipped ones included)
  int64_t adamStep = 0;  // updates applied
  int64_t tokens = 0;
  int64_t skipped = 0, consecutiveSkipped = 0;
  uint64_t seed = 0;
  DataCursor cursor;
  Normalization norm;
  std::vector<int64_t> lastActive; // per transform: token count when last active, or -1
};

/// One step's numbers, read back from `stats`.
struct StepStats {
  double loss = 0, sse = 0, sumY2 = 0, active = 0, penalty = 0, gradNorm = 0;
  bool skipped = false;
  int64_t tokens = 0;
};

/// One rank of a data-parallel run (docs/distributed.md). Every rank runs the same shuffled
/// stream; each step's global batch is `world` executor batches, and rank r trains on the r-th.
/// `allReduce` is called between train_grad and train_apply: it must replace `stats` by its
/// sum over the ranks and every d_<p> by its mean, in place in the executor.
struct DataParallel {
  int rank = 0, world = 1;
  std::function<Status(Executor &)> allReduce;
  bool active() const { return world > 1 || allReduce; }
};

/// The tensors DataParallel::allReduce reduces: "stats" (summed), then d_<p> for every param
/// (averaged), in plan order.
std::vector<std::string> reducedTensors(const Plan &plan);

/// Drives train_step on one executor: data in, scalars in, stats out, activity tracked. With
/// a DataParallel, train_grad + allReduce + train_apply instead (the plan must have them:
/// addTrainPhases); the step's tokens, loss and L0 are then the global batch's.
class Trainer {
public:
  Trainer(Executor &exec, BatchStream &data, Schedule schedule, TrainState state,
          DataParallel dp = {});
  /// One step. Fails after `maxConsecutiveSkips` non-finite steps in a row.
  StatusOr<StepStats> step();
  const TrainState &state() const { return state_; }
  TrainState &state() { return state_; }
  const Schedule &schedule() const { return schedule_; }
  /// Transforms not active in the last `window` tokens, as a fraction of all transforms.
  double deadFraction(int64_t window) const;
  int maxConsecutiveSkips = 50;

private:
  StatusOr<int64_t> trackActivity();
  Executor &exec_;
  BatchStream &data_;
  Schedule schedule_;
  DataParallel dp_;
  TrainState state_;
  std::vector<float> x_, y_;
  std::vector<int32_t> pairPtr_;
  std::vector<float> pairGate_;
};

} // namespace molt
