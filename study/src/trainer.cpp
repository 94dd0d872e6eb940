// Initialisation, the step schedule and the training step loop body (docs/bundle.md's
// `scalars` and `stats` are the whole interface to the kernels).
#include "molt/trainer.h"

#include <cmath>
#include <random>

#include "molt/random.h"

namespace molt {
namespace {

constexpr double kPi = 3.14159265358979323846;

bool startsWithBucketTensor(const std::string &name, char letter) {
  // u<k> / v<k>: the per-bucket factors of a molt layer.
  if (name.size() < 2 || name[0] != letter)
    return false;
  for (size_t i = 1; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i])))
      return false;
  return true;
}

void scale(std::vector<float> &v, double s) {
  for (float &x : v)
    x = float(double(x) * s);
}

} // namespace

TensorMap initParams(const Plan &plan, uint64_t seed) {
  std::mt19937_64 rng(seed);
  NormalSampler normal(rng);
  TensorMap out;
  for (const ParamDesc &p : plan.params) {
    int64_t n = 1;
    for (int64_t s : p.shape)
      n *= s;
    std::vector<float> v(size_t(n), 0.0f);
    const InitDesc &init = p.init;
    if (init.kind == "const") {
      std::fill(v.begin(), v.end(), float(init.value));
    } else if (init.kind == "uniform") {
      for (float &x : v)
        x = float((2.0 * uniform01(rng) - 1.0) * init.value);
    } else if (init.kind == "normal") {
      for (float &x : v)
        x = float(init.value * normal());
    }
    out[p.name] = std::move(v);
  }
  return out;
}

Status writeTensors(Executor &exec, const TensorMap &tensors) {
  for (const auto &[name, values] : tensors)
    MOLT_RETURN_IF_ERROR(exec.write(name, values.data(), values.size() * 4));
  return Status::ok();
}

StatusOr<TensorMap> readTensors(Executor &exec, std::vector<std::string> names) {
  if (names.empty())
    for (const ParamDesc &p : exec.plan().params)
      names.push_back(p.name);
  TensorMap out;
  for (const std::string &name : names) {
    const BufferInfo *info = exec.info(name);
    if (!info)
      return internalError("the executor has no tensor '" + name + "'");
    std::vector<float> v(size_t(info->numel()));
    MOLT_RETURN_IF_ERROR(exec.read(name, v.data(), info->bytes()));
    out[name] = std::move(v);
  }
  return out;
}

void foldNormalization(const Plan &plan, const Normalization &norm, TensorMap &params) {
  // Training saw x' = sx·x and fit y' = sy·y. Scaling whatever multiplies x by sx keeps every
  // pre-activation and gate unchanged on raw x; dividing whatever produces y by sy undoes sy.
  double sx = norm.x_scale, sy = norm.y_scale;
  for (auto &[name, v] : params) {
    if (name == "enc_w" || startsWithBucketTensor(name, 'v'))
      scale(v, sx);
    else if (startsWithBucketTensor(name, 'u') || name == "dec_w" || name == "dec_b")
      scale(v, 1.0 / sy);
    else if (name == "skip_w")
      scale(v, sx / sy);
  }
  (void)plan;
}

std::array<float, 8> stepScalars(const Schedule &s, int64_t step, int64_t adamStep,
                                 int64_t batch) {
  double total = double(std::max<int64_t>(s.steps, 1));
  double lambdaRamp = s.lambdaWarmup * total;
  double lambda = lambdaRamp > 0 ? s.lambda * std::min(1.0, double(step) / lambdaRamp) : s.lambda;
  double warm = std::max(1.0, std::round(s.lrWarmup * total));
  double lr;
  if (double(step) <= warm && s.lrWarmup > 0) {
    lr = s.lr * double(step) / warm;
  } else {
    double span = std::max(1.0, total - (s.lrWarmup > 0 ? warm : 0.0));
    double p = std::min(1.0, std::max(0.0, (double(step) - (s.lrWarmup > 0 ? warm : 0.0)) / span));
    double f = s.minLrFraction;
    if (s.decay == "cosine")
      lr = s.lr * (f + (1 - f) * 0.5 * (1 + std::cos(kPi * p)));
    else if (s.decay == "linear")
      lr = s.lr * (1 - (1 - f) * p);
    else
      lr = s.lr;
  }
  return {float(lambda),  float(lr),  float(s.beta1),         float(s.beta2),
          float(s.eps),   float(s.clip), float(adamStep + 1), float(1.0 / double(batch))};
}

std::vector<std::string> reducedTensors(const Plan &plan) {
  std::vector<std::string> out = {"stats"};
  for (const ParamDesc &p : plan.params)
    out.push_back("d_" + p.name);
  return out;
}

Trainer::Trainer(Executor &exec, BatchStream &data, Schedule schedule, TrainState state,
                 DataParallel dp)
    : exec_(exec), data_(data), schedule_(std::move(schedule)), dp_(std::move(dp)),
      state_(std::move(state)) {
  int64_t d = exec.plan().model.d_model, b = exec.batch();
  x_.resize(size_t(b * d));
  y_.resize(size_t(b * d));
  state_.lastActive.resize(size_t(exec.plan().model.numTransforms()), -1);
  // The stream serves finite rows only (it drops and counts the others), so the executor's
  // per-run check of x and y (a device-to-host copy on CUDA) would find nothing.
  exec.vouchFiniteInputs(true);
}

StatusOr<StepStats> Trainer::step() {
  const int64_t b = exec_.batch();
  const bool parallel = dp_.active();
  // This rank's part of the global batch: the rows before it are the lower ranks', the rows
  // after it the higher ranks'. Every rank passes over all of them, so the cursors agree.
  for (auto [count, into] : {std::pair<int64_t, bool>{b * dp_.rank, false}, {b, true},
                             {b * (dp_.world - 1 - dp_.rank), false}}) {
    if (count == 0)
      continue;
    StatusOr<int64_t> got =
        data_.next(count, into ? x_.data() : nullptr, into ? y_.data() : nullptr);
    if (!got)
      return got.status();
    if (*got != count)
      return internalError("a wrapping data stream returned a short batch");
  }
  MOLT_RETURN_IF_ERROR(exec_.write("x", x_.data(), x_.size() * 4));
  MOLT_RETURN_IF_ERROR(exec_.write("y", y_.data(), y_.size() * 4));
  std::array<float, 8> scalars = stepScalars(schedule_, state_.step + 1, state_.adamStep, b);
  MOLT_RETURN_IF_ERROR(exec_.write("scalars", scalars.data(), sizeof scalars));
  if (parallel) {
    MOLT_RETURN_IF_ERROR(exec_.run(kTrainGradEntry));
    MOLT_RETURN_IF_ERROR(exec_.synchronize());
    if (dp_.allReduce)
      MOLT_RETURN_IF_ERROR(dp_.allReduce(exec_).withContext("all-reduce"));
    MOLT_RETURN_IF_ERROR(exec_.run(kTrainApplyEntry));
  } else {
    MOLT_RETURN_IF_ERROR(exec_.run("train_step"));
  }
  const int64_t tokens = b * std::max(dp_.world, 1);
  std::array<float, 16> stats{};
  MOLT_RETURN_IF_ERROR(exec_.read("stats", stats.data(), sizeof stats));

  StepStats s;
  s.sse = stats[0];
  s.sumY2 = stats[1];
  s.penalty = stats[2];
  s.active = stats[3];
  s.gradNorm = std::sqrt(double(stats[4]));
  s.loss = (s.sse + double(scalars[0]) * s.penalty) / double(tokens);
  // The adam kernel already refused the update when stats[5] is set; the host only counts.
  s.skipped = stats[5] > 0 || !std::isfinite(s.loss);
  s.tokens = tokens;
  ++state_.step;
  state_.tokens += tokens;
  if (s.skipped) {
    ++state_.skipped;
    if (++state_.consecutiveSkipped >= maxConsecutiveSkips)
      return invalidArgument(std::to_string(state_.consecutiveSkipped) +
                             " steps in a row had a non-finite loss or gradient (step " +
                             std::to_string(state_.step) +
                             "); stopping. Lower --lr or check the data; the last checkpoint "
                             "is kept");
  } else {
    ++state_.adamStep;
    state_.consecutiveSkipped = 0;
    StatusOr<int64_t> active = trackActivity();
    if (!active)
      return active.status();
    // In a parallel run stats[3] is already the global count; the activity seen here (and
    // so the dead fraction) is this rank's part of the batch.
    if (*active >= 0 && !parallel)
      s.active = double(*active);
  }
  return s;
}

// A transform is active in a batch when one of its listed pairs has g > 0 (listed pairs with
// g = 0 are the near-threshold ones kept for θ's gradient). Returns the number of active
// (token, transform) pairs, counted as the kernels count stats[3] and molt-eval counts L0, or
// -1 for a plan without pair lists.
StatusOr<int64_t> Trainer::trackActivity() {
  const BufferInfo *ptr = exec_.info("pair_ptr");
  const BufferInfo *gate = exec_.info("pair_gate");
  if (!ptr || !gate)
    return int64_t(-1);
  pairPtr_.resize(size_t(ptr->numel()));
  pairGate_.resize(size_t(gate->numel()));
  MOLT_RETURN_IF_ERROR(exec_.read("pair_ptr", pairPtr_.data(), ptr->bytes()));
  MOLT_RETURN_IF_ERROR(exec_.read("pair_gate", pairGate_.data(), gate->bytes()));
  size_t t = std::min(state_.lastActive.size(), pairPtr_.size() - 1);
  int64_t active = 0;
  for (size_t i = 0; i < t; ++i) {
    int64_t here = 0;
    for (int32_t p = pairPtr_[i]; p < pairPtr_[i + 1] && size_t(p) < pairGate_.size(); ++p)
      here += pairGate_[size_t(p)] > 0.0f;
    if (here > 0)
      state_.lastActive[i] = state_.tokens;
    active += here;
  }
  return active;
}

double Trainer::deadFraction(int64_t window) const {
  if (state_.lastActive.empty())
    return 0.0;
  int64_t dead = 0;
  for (int64_t last : state_.lastActive)
    dead += last < 0 || state_.tokens - last >= window;
  return double(dead) / double(state_.lastActive.size());
}

} // namespace molt
