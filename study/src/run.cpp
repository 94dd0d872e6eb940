// molt-train and molt-eval behind their flags: the run directory, resume, the training loop
// with its progress line and metrics, checkpoints, export, and evaluation of a run.
#include "molt/run.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "molt/checkpoint.h"
#include "molt/io.h"
#include "molt/jacobian.h"
#include "molt/safetensors.h"
#include "molt/stop.h"
#include "molt/teacher.h"

namespace molt {
namespace {

// A run killed inside writeFileAtomic leaves <file>.tmp-<pid> behind (never read). One
// checkpoint-sized file per kill would fill a preempted job's disk, so a start clears them:
// only this run writes into RUN.
void removeStaleTemps(const std::string &dir) {
  std::error_code ec;
  for (const std::filesystem::directory_entry &e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const size_t at = name.rfind(".tmp-");
    if (at != std::string::npos && at + 5 < name.size() &&
        name.find_first_not_of("0123456789", at + 5) == std::string::npos)
      std::filesystem::remove(e.path(), ec);
  }
}

// What a start of molt-train writes into RUN before its first checkpoint: a fresh start may
// overwrite these, and nothing else (a directory holding other files is not ours).
Status checkOnlyRunFiles(const std::string &dir) {
  if (!pathExists(dir))
    return Status::ok();
  if (!isDirectory(dir))
    return invalidArgument("--out " + dir + " is not a directory");
  std::error_code ec;
  for (const std::filesystem::directory_entry &e : std::filesystem::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    const bool ours = name == "bundle" || name == "spec.mlir" || name == "metrics.jsonl" ||
                      name.find(".tmp-") != std::string::npos;
    if (!ours)
      return invalidArgument("--resume: " + dir + " has no checkpoint and holds '" + name +
                             "', which molt-train did not write; choose another --out");
  }
  if (ec)
    return ioError("cannot list " + dir + ": " + ec.message());
  return Status::ok();
}

struct RunPaths {
  std::string dir, bundle, checkpoint, metrics, weights;
  explicit RunPaths(const std::string &d)
      : dir(d), bundle(d + "/bundle"), checkpoint(d + "/checkpoint.safetensors"),
        metrics(d + "/metrics.jsonl"), weights(d + "/weights.safetensors") {}
};

std::string duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    return "?";
  long s = long(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

std::string humanCount(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

// Keeps the metrics lines a resumed run is about to re-log out of the file (they belong to
// steps after the checkpoint), rewriting it atomically.
Status truncateMetrics(const std::string &path, int64_t step) {
  if (!pathExists(path))
    return Status::ok();
  StatusOr<std::string> text = readFile(path);
  if (!text)
    return text.status();
  std::istringstream in(*text);
  std::string line, kept;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_discarded() && j.contains("step") && j["step"].is_number() &&
        j["step"].get<int64_t>() <= step)
      kept += line + "\n";
  }
  return writeFileAtomic(path, kept);
}

Status appendLine(const std::string &path, const std::string &line) {
  std::ofstream out(path, std::ios::app);
  out << line << "\n";
  out.flush();
  if (!out)
    return ioError("cannot append to " + path);
  return Status::ok();
}

// Sums over the steps since the last log line.
struct Window {
  double loss = 0, sse = 0, sumY2 = 0, active = 0;
  int64_t steps = 0, tokens = 0;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  void add(const StepStats &s) {
    if (!s.skipped) {
      loss += s.loss;
      sse += s.sse;
      sumY2 += s.sumY2;
      active += s.active;
      ++steps;
    }
    tokens += s.tokens;
  }
};

Status writeWeights(const RunPaths &paths, Executor &exec, const Normalization &norm) {
  StatusOr<TensorMap> params = readTensors(exec);
  if (!params)
    return params.status();
  foldNormalization(exec.plan(), norm, *params);
  std::vector<TensorData> out;
  for (const ParamDesc &p : exec.plan().params)
    out.push_back(f32Tensor(p.name, p.shape, (*params)[p.name]));
  return writeSafetensors(paths.weights, out,
                          {{"format", "molt-weights"},
                           {"model_kind", exec.plan().model.kind},
                           {"normalization", "folded"}});
}

class TrainRun {
public:
  explicit TrainRun(const TrainOptions &o) : opts_(o), paths_(o.out) {}
  Status run();

private:
  Status prepare();
  Status loop();
  bool writer() const { return opts_.parallel.rank == 0; }
  Status checkpoint() {
    if (!writer())
      return Status::ok();
    state_ = trainer_->state();
    state_.cursor = stream_->cursor();
    return saveCheckpoint(paths_.checkpoint, *exec_, state_, config_);
  }
  void progress(const Window &w, bool final);

  TrainOptions opts_;
  RunPaths paths_;
  Plan plan_;
  std::string bundleDir_;
  std::unique_ptr<ShardSet> data_, val_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Executor> exec_;
  std::unique_ptr<BatchStream> stream_;
  std::unique_ptr<Trainer> trainer_;
  TrainState state_;
  RunConfig config_;
  TensorMap initial_;
  bool tty_ = false;
  std::chrono::steady_clock::time_point start_;
  int64_t startStep_ = 0;
};

Status TrainRun::prepare() {
  if (opts_.steps <= 0 || opts_.batch <= 0 || opts_.logEvery <= 0 || opts_.checkpointEvery <= 0)
    return invalidArgument("--steps, --batch, --log-every and --checkpoint-every must be positive");
  if (!(opts_.lr > 0) || !std::isfinite(opts_.lr))
    return invalidArgument("--lr must be a positive number");
  if (opts_.out.empty())
    return invalidArgument("--out is required");
  if (opts_.resume && !pathExists(paths_.checkpoint)) {
    // Killed before its first checkpoint (or never started): the repeated command of a
    // preemptible job starts the run afresh, but only over what an earlier start of it left.
    MOLT_RETURN_IF_ERROR(checkOnlyRunFiles(opts_.out));
    if (opts_.bundle.empty())
      return invalidArgument("--resume: " + opts_.out + " has no checkpoint yet; pass the bundle "
                                                        "to start it");
    std::fprintf(stderr, "molt-train: --resume: no checkpoint in %s yet; starting at step 0\n",
                 opts_.out.c_str());
    opts_.resume = false;
  }
  const DataParallel &dp = opts_.parallel;
  if (dp.world < 1 || dp.rank < 0 || dp.rank >= dp.world)
    return invalidArgument("rank " + std::to_string(dp.rank) + " of world size " +
                           std::to_string(dp.world) + " is not a valid rank");
  if (dp.world > 1 && !dp.allReduce)
    return invalidArgument("a run of " + std::to_string(dp.world) +
                           " ranks needs an all-reduce (python -m molt.train under torchrun)");
  if (opts_.batch % dp.world != 0)
    return invalidArgument("--batch " + std::to_string(opts_.batch) +
                           " does not divide by the world size " + std::to_string(dp.world));
  if (opts_.resume) {
    bundleDir_ = paths_.bundle;
  } else {
    if (pathExists(paths_.checkpoint))
      return invalidArgument(opts_.out + " already holds a run; pass --resume to continue it "
                                         "or choose another --out");
    bundleDir_ = opts_.bundle;
  }
  StatusOr<Plan> plan = loadPlan(bundleDir_);
  if (!plan)
    return plan.status();
  plan_ = std::move(*plan);
  if (!plan_.entry_points.count("train_step"))
    return invalidArgument(bundleDir_ + ": the bundle has no train_step entry point");
  if (dp.active())
    addTrainPhases(plan_);
  if (opts_.resume && !opts_.bundle.empty() && opts_.bundle != paths_.bundle) {
    StatusOr<Plan> given = loadPlan(opts_.bundle);
    if (given && dp.active())
      addTrainPhases(*given);
    if (given && planToJson(*given) != planToJson(plan_))
      return invalidArgument(opts_.bundle + " differs from the bundle the run was started "
                                            "with (" + paths_.bundle + ")");
  }
  StatusOr<std::unique_ptr<ShardSet>> data = ShardSet::open(opts_.data, plan_.model.d_model);
  if (!data)
    return data.status().withContext("--data");
  data_ = std::move(*data);
  if (!opts_.val.empty()) {
    StatusOr<std::unique_ptr<ShardSet>> val = ShardSet::open(opts_.val, plan_.model.d_model);
    if (!val)
      return val.status().withContext("--val");
    val_ = std::move(*val);
  }

  config_.batch = opts_.batch;
  config_.dataRows = data_->rows();
  Schedule &s = config_.schedule;
  s.steps = opts_.scheduleSteps > 0 ? opts_.scheduleSteps : opts_.steps;
  s.lr = opts_.lr;
  s.decay = opts_.decay;
  s.lambda = opts_.lambda >= 0 ? opts_.lambda : plan_.model.penalty.lambda;
  s.lambdaWarmup = plan_.model.penalty.warmup;
  if (s.decay != "cosine" && s.decay != "linear" && s.decay != "constant")
    return invalidArgument("--decay must be cosine, linear or constant");

  TensorMap tensors;
  if (opts_.resume) {
    // Everything is loaded and checked before anything is written: a failed resume leaves
    // the run directory as it was.
    StatusOr<Checkpoint> ck = loadCheckpoint(paths_.checkpoint, plan_);
    if (!ck)
      return ck.status();
    if (ck->config.batch != opts_.batch)
      return invalidArgument("--resume: the run was started with --batch " +
                             std::to_string(ck->config.batch) + ", not " +
                             std::to_string(opts_.batch));
    if (ck->config.dataRows != data_->rows())
      return invalidArgument("--resume: the data has " + std::to_string(data_->rows()) +
                             " rows but the run was started on " +
                             std::to_string(ck->config.dataRows));
    if (ck->state.step > opts_.steps)
      return invalidArgument("--resume: the checkpoint is at step " +
                             std::to_string(ck->state.step) + ", beyond --steps " +
                             std::to_string(opts_.steps));
    // The schedule is the run's, unless it is explicitly re-planned.
    Schedule planned = ck->config.schedule;
    if (opts_.scheduleSteps > 0)
      planned.steps = opts_.scheduleSteps;
    config_.schedule = planned;
    state_ = ck->state;
    tensors = std::move(ck->tensors);
  } else {
    state_.seed = opts_.seed;
    state_.norm = computeNormalization(*data_);
    tensors = initParams(plan_, opts_.seed);
  }

  StatusOr<std::unique_ptr<Backend>> backend = createBackend(opts_.device);
  if (!backend)
    return backend.status();
  backend_ = std::move(*backend);
  StatusOr<std::unique_ptr<Executor>> exec =
      backend_->prepare(plan_, bundleDir_, opts_.batch / dp.world);
  if (!exec)
    return exec.status();
  exec_ = std::move(*exec);
  for (const ParamDesc &p : plan_.params)
    for (const char *prefix : {"m_", "v_"})
      MOLT_RETURN_IF_ERROR(exec_->zero(prefix + p.name));
  MOLT_RETURN_IF_ERROR(writeTensors(*exec_, tensors));

  stream_ = std::make_unique<BatchStream>(*data_, state_.seed,
                                          defaultWindowRows(plan_.model.d_model, opts_.batch),
                                          /*shuffle=*/true, /*wrap=*/true, state_.norm);
  if (opts_.resume)
    MOLT_RETURN_IF_ERROR(stream_->seek(state_.cursor));
  trainer_ = std::make_unique<Trainer>(*exec_, *stream_, config_.schedule, state_, dp);

  // Only now is the run directory touched, and only by rank 0.
  if (!writer())
    return Status::ok();
  MOLT_RETURN_IF_ERROR(makeDirs(opts_.out));
  removeStaleTemps(opts_.out);
  if (isDirectory(paths_.bundle))
    removeStaleTemps(paths_.bundle); // a start killed while copying the bundle
  if (opts_.resume) {
    MOLT_RETURN_IF_ERROR(truncateMetrics(paths_.metrics, state_.step));
  } else {
    MOLT_RETURN_IF_ERROR(copyTree(bundleDir_, paths_.bundle));
    if (!opts_.spec.empty())
      MOLT_RETURN_IF_ERROR(copyTree(opts_.spec, opts_.out + "/spec.mlir"));
    MOLT_RETURN_IF_ERROR(writeFileAtomic(paths_.metrics, ""));
  }
  return Status::ok();
}

void TrainRun::progress(const Window &w, bool final) {
  if (opts_.quiet)
    return;
  const TrainState &s = trainer_->state();
  double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double perStep = elapsed / double(std::max<int64_t>(1, s.step - startStep_));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - w.start).count();
  char line[256];
  std::snprintf(line, sizeof line,
                "step %lld/%lld  %s tok  %s tok/s  loss %.4g  nmse %.4f  l0 %.2f  dead %.1f%%  "
                "eta %s",
                (long long)s.step, (long long)opts_.steps, humanCount(double(s.tokens)).c_str(),
                humanCount(double(w.tokens) / std::max(secs, 1e-9)).c_str(),
                w.steps ? w.loss / double(w.steps) : NAN, w.sumY2 > 0 ? w.sse / w.sumY2 : NAN,
                w.tokens ? w.active / double(w.tokens) : 0.0,
                100 * trainer_->deadFraction(opts_.deadWindow),
                duration(perStep * double(opts_.steps - s.step)).c_str());
  // On a terminal the line redraws in place; in a log it is one line per report.
  if (tty_)
    std::fprintf(stderr, "\r%-120s%s", line, final ? "\n" : "");
  else
    std::fprintf(stderr, "%s\n", line);
  std::fflush(stderr);
}

Status TrainRun::loop() {
  tty_ = ::isatty(2);
  start_ = std::chrono::steady_clock::now();
  startStep_ = trainer_->state().step;
  Window w;
  while (trainer_->state().step < opts_.steps) {
    if (stopRequested()) {
      // SIGTERM / SIGINT / requestStop(): the step in flight has finished; save it.
      MOLT_RETURN_IF_ERROR(checkpoint());
      if (tty_)
        std::fprintf(stderr, "\n");
      return cancelled("stopped at step " + std::to_string(trainer_->state().step) +
                       "; checkpoint written, continue with --resume");
    }
    StatusOr<StepStats> st = trainer_->step();
    if (!st) {
      if (tty_)
        std::fprintf(stderr, "\n");
      return st.status();
    }
    w.add(*st);
    const TrainState &s = trainer_->state();
    bool last = s.step == opts_.steps;
    if ((s.step % opts_.logEvery == 0 || last) && writer()) {
      std::array<float, 8> sc = stepScalars(config_.schedule, s.step, s.adamStep, opts_.batch);
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - w.start)
                        .count();
      nlohmann::ordered_json j;
      j["step"] = s.step;
      j["tokens"] = s.tokens;
      j["loss"] = w.steps ? w.loss / double(w.steps) : 0.0;
      j["nmse"] = w.sumY2 > 0 ? w.sse / w.sumY2 : 0.0;
      j["l0"] = w.tokens ? w.active / double(w.tokens) : 0.0;
      j["dead_fraction"] = trainer_->deadFraction(opts_.deadWindow);
      j["lambda"] = sc[0];
      j["lr"] = sc[1];
      j["tokens_per_s"] = double(w.tokens) / std::max(secs, 1e-9);
      j["skipped"] = s.skipped;
      MOLT_RETURN_IF_ERROR(appendLine(paths_.metrics, j.dump()));
      progress(w, last);
      w = Window();
    }
    if (s.step % opts_.checkpointEvery == 0 || last)
      MOLT_RETURN_IF_ERROR(checkpoint());
  }
  return Status::ok();
}

Status TrainRun::run() {
  // From here on SIGTERM / SIGINT only ask for a stop, which the loop honours between steps (a
  // stop during start-up is honoured before the first step, with a checkpoint at step 0).
  std::optional<StopOnSignals> handlers;
  if (opts_.stopOnSignals)
    handlers.emplace();
  MOLT_RETURN_IF_ERROR(prepare());
  if (!opts_.quiet) {
    const ModelDesc &m = plan_.model;
    std::fprintf(stderr,
                 "molt-train: %s %s d=%lld, %lld transforms; %lld rows; batch %lld; %s on %s; "
                 "%s at step %lld\n",
                 m.kind.c_str(), m.name.c_str(), (long long)m.d_model,
                 (long long)m.numTransforms(), (long long)data_->rows(), (long long)opts_.batch,
                 backend_->name().c_str(), backend_->deviceName().c_str(),
                 opts_.resume ? "resuming" : "starting", (long long)trainer_->state().step);
  }
  MOLT_RETURN_IF_ERROR(loop());
  if (stream_->skippedRows() > 0 && !opts_.quiet)
    std::fprintf(stderr, "molt-train: skipped %lld data rows with NaN or Inf\n",
                 (long long)stream_->skippedRows());
  if (!writer())
    return Status::ok();
  MOLT_RETURN_IF_ERROR(writeWeights(paths_, *exec_, trainer_->state().norm));
  if (val_) {
    StatusOr<TensorMap> params = readTensors(*exec_);
    if (!params)
      return params.status();
    StatusOr<EvalReport> r = evaluate(*backend_, plan_, bundleDir_, *params, *val_,
                                      trainer_->state().norm, opts_.batch);
    if (!r)
      return r.status().withContext("--val");
    nlohmann::json j = nlohmann::json::parse(r->toJson());
    nlohmann::ordered_json line;
    line["step"] = trainer_->state().step;
    for (auto it = j.begin(); it != j.end(); ++it)
      line["val_" + it.key()] = it.value();
    MOLT_RETURN_IF_ERROR(appendLine(paths_.metrics, line.dump()));
    if (!opts_.quiet)
      std::fprintf(stderr, "validation: %s", r->toText().c_str());
  }
  return Status::ok();
}

// The first `rows` finite rows of raw (unnormalised) x.
std::vector<float> firstRows(const ShardSet &set, int64_t rows, int64_t &got) {
  int64_t d = set.d();
  std::vector<float> x(static_cast<size_t>(rows * d)), xr(static_cast<size_t>(d)),
      yr(static_cast<size_t>(d));
  got = 0;
  for (size_t s = 0; s < set.numShards() && got < rows; ++s)
    for (int64_t r = 0; r < set.shardRows(s) && got < rows; ++r) {
      set.readRows(s, r, 1, xr.data(), yr.data());
      bool finite = true;
      for (float v : xr)
        finite = finite && std::isfinite(v);
      if (finite)
        std::copy(xr.begin(), xr.end(), x.begin() + got++ * d);
    }
  x.resize(size_t(got * d));
  return x;
}

} // namespace

Status runTraining(const TrainOptions &opts) { return TrainRun(opts).run(); }

StatusOr<EvalReport> evaluateRun(const std::string &runDir, const std::string &data,
                                 int64_t batch, const std::string &device,
                                 const std::string &teacherPath, int64_t jacobianRows,
                                 const JacobianOptions &jacobian) {
  RunPaths paths(runDir);
  if (!isDirectory(runDir))
    return notFound("no run directory " + runDir);
  StatusOr<Plan> plan = loadPlan(paths.bundle);
  if (!plan)
    return plan.status();
  StatusOr<Checkpoint> ck = loadCheckpoint(paths.checkpoint, *plan);
  if (!ck)
    return ck.status();
  StatusOr<std::unique_ptr<ShardSet>> set = ShardSet::open(data, plan->model.d_model);
  if (!set)
    return set.status().withContext("--data");
  StatusOr<std::unique_ptr<Backend>> backend = createBackend(device);
  if (!backend)
    return backend.status();
  TensorMap params;
  for (const ParamDesc &p : plan->params)
    params[p.name] = ck->tensors[p.name];
  StatusOr<EvalReport> report =
      evaluate(**backend, *plan, paths.bundle, params, **set, ck->state.norm, batch);
  if (!report || teacherPath.empty())
    return report;
  StatusOr<TeacherMlp> teacher = loadTeacher(teacherPath);
  if (!teacher)
    return teacher.status().withContext("--teacher");
  if (teacher->d != plan->model.d_model)
    return invalidArgument("--teacher: the teacher's d is " + std::to_string(teacher->d) +
                           " but the model's is " + std::to_string(plan->model.d_model));
  int64_t rows = 0;
  std::vector<float> x = firstRows(**set, std::max<int64_t>(1, jacobianRows), rows);
  foldNormalization(*plan, ck->state.norm, params); // the teacher acts on raw x
  JacobianOptions jopt = jacobian;
  std::unique_ptr<Executor> jvpExec;
  jopt.executor = nullptr;
  if (jopt.method == JacobianMethod::Compiled) {
    StatusOr<std::unique_ptr<Executor>> e =
        (*backend)->prepare(*plan, paths.bundle, std::min(batch, std::max<int64_t>(rows, 1)));
    if (!e)
      return e.status();
    jvpExec = std::move(*e);
    for (const ParamDesc &p : plan->params)
      MOLT_RETURN_IF_ERROR(jvpExec->write(p.name, params[p.name].data(), params[p.name].size() * 4));
    jopt.executor = jvpExec.get();
  }
  StatusOr<JacobianCosine> jc = jacobianCosine(plan->model, params, *teacher, x.data(), rows, jopt);
  if (!jc)
    return jc.status();
  report->hasJacobian = true;
  report->jacobianCosine = jc->mean;
  report->jacobianStdError = jc->std_error;
  report->jacobianRows = jc->tokens;
  return report;
}

} // namespace molt
