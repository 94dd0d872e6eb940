// Checkpoint writing and reading (layout: docs/checkpoint.md). Numbers in __metadata__ are
// written with enough digits to round-trip exactly, so a resumed run is bit-identical.
#include "molt/checkpoint.h"

#include <cinttypes>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "molt/safetensors.h"

namespace molt {
namespace {

constexpr const char *kFormat = "molt-checkpoint";
constexpr const char *kActivity = "train.last_active";

std::string exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

nlohmann::json scheduleToJson(const Schedule &s) {
  return {{"steps", s.steps},   {"lr", s.lr},
          {"lr_warmup", s.lrWarmup}, {"decay", s.decay},
          {"min_lr_fraction", s.minLrFraction}, {"lambda", s.lambda},
          {"lambda_warmup", s.lambdaWarmup}, {"beta1", s.beta1},
          {"beta2", s.beta2}, {"eps", s.eps}, {"clip", s.clip}};
}

// Reads __metadata__ fields, remembering the first problem so the caller reports one line.
class Meta {
public:
  Meta(const std::map<std::string, std::string> &m, std::string path)
      : m_(m), path_(std::move(path)) {}
  std::string str(const std::string &key) {
    auto it = m_.find(key);
    if (it == m_.end()) {
      note("missing __metadata__ field '" + key + "'");
      return "";
    }
    return it->second;
  }
  int64_t integer(const std::string &key) { return int64_t(parsed(key, "an integer", 'i')); }
  uint64_t unsignedInt(const std::string &key) { return uint64_t(parsed(key, "an integer", 'u')); }
  double number(const std::string &key) { return parsed(key, "a number", 'f'); }
  void note(const std::string &problem) {
    if (error_.empty())
      error_ = problem;
  }
  Status status() const {
    return error_.empty() ? Status::ok() : dataLoss(path_ + ": " + error_);
  }

private:
  // Parses as a signed ('i') or unsigned ('u') integer or a double ('f'); long double holds
  // every int64 and uint64 exactly.
  long double parsed(const std::string &key, const char *what, char kind) {
    std::string s = str(key);
    char *end = nullptr;
    long double v = kind == 'i'   ? (long double)std::strtoll(s.c_str(), &end, 10)
                    : kind == 'u' ? (long double)std::strtoull(s.c_str(), &end, 10)
                                  : (long double)std::strtod(s.c_str(), &end);
    if (!s.empty() && *end)
      note("__metadata__ field '" + key + "' is not " + what);
    return v;
  }
  const std::map<std::string, std::string> &m_;
  std::string path_;
  std::string error_;
};

} // namespace

Status saveCheckpoint(const std::string &path, Executor &exec, const TrainState &state,
                      const RunConfig &config) {
  const Plan &plan = exec.plan();
  std::vector<std::string> names;
  for (const char *prefix : {"", "m_", "v_"})
    for (const ParamDesc &p : plan.params)
      names.push_back(prefix + p.name);
  StatusOr<TensorMap> tensors = readTensors(exec, names);
  if (!tensors)
    return tensors.status();
  std::vector<TensorData> out;
  for (const std::string &name : names)
    out.push_back(f32Tensor(name, exec.info(name)->shape, (*tensors)[name]));
  out.push_back(
      i64Tensor(kActivity, {int64_t(state.lastActive.size())}, state.lastActive));

  const DataCursor &c = state.cursor;
  std::map<std::string, std::string> meta = {
      {"format", kFormat},
      {"version", "1"},
      {"model_kind", plan.model.kind},
      {"d_model", std::to_string(plan.model.d_model)},
      {"transforms", std::to_string(plan.model.numTransforms())},
      {"step", std::to_string(state.step)},
      {"adam_step", std::to_string(state.adamStep)},
      {"tokens", std::to_string(state.tokens)},
      {"skipped", std::to_string(state.skipped)},
      {"consecutive_skipped", std::to_string(state.consecutiveSkipped)},
      {"seed", std::to_string(state.seed)},
      {"cursor", nlohmann::json{{"epoch", c.epoch}, {"window", c.window}, {"shard", c.shard},
                                {"row", c.row}, {"served", c.served}}
                     .dump()},
      {"norm_x_scale", exact(state.norm.x_scale)},
      {"norm_y_scale", exact(state.norm.y_scale)},
      {"batch", std::to_string(config.batch)},
      {"data_rows", std::to_string(config.dataRows)},
      {"schedule", scheduleToJson(config.schedule).dump()},
  };
  return writeSafetensors(path, out, meta).withContext("writing the checkpoint");
}

StatusOr<Checkpoint> loadCheckpoint(const std::string &path, const Plan &plan) {
  StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::open(path);
  if (!file)
    return file.status();
  const SafetensorsFile &f = **file;
  Meta meta(f.metadata(), path);
  if (meta.str("format") != kFormat)
    return invalidArgument(path + ": not a molt checkpoint (no format: molt-checkpoint)");
  if (meta.str("version") != "1")
    return invalidArgument(path + ": checkpoint version " + meta.str("version") +
                           ", this build reads 1");
  if (meta.str("model_kind") != plan.model.kind || meta.integer("d_model") != plan.model.d_model ||
      meta.integer("transforms") != plan.model.numTransforms())
    return invalidArgument(path + ": the checkpoint is of a different model (" +
                           meta.str("model_kind") + ", d=" + meta.str("d_model") + ", " +
                           meta.str("transforms") + " transforms) than the bundle");
  Checkpoint ck;
  for (const ParamDesc &p : plan.params)
    for (const char *prefix : {"", "m_", "v_"}) {
      std::string name = prefix + p.name;
      if (*prefix && !f.find(name))
        continue; // moments are optional (an exported or hand-made checkpoint)
      StatusOr<std::vector<float>> v = f.readF32(name, p.shape);
      if (!v)
        return v.status();
      ck.tensors[name] = std::move(*v);
    }
  TrainState &s = ck.state;
  s.step = meta.integer("step");
  s.adamStep = meta.integer("adam_step");
  s.tokens = meta.integer("tokens");
  s.skipped = meta.integer("skipped");
  s.consecutiveSkipped = meta.integer("consecutive_skipped");
  s.seed = meta.unsignedInt("seed");
  s.norm.x_scale = float(meta.number("norm_x_scale"));
  s.norm.y_scale = float(meta.number("norm_y_scale"));
  ck.config.batch = meta.integer("batch");
  ck.config.dataRows = meta.integer("data_rows");
  MOLT_RETURN_IF_ERROR(meta.status());
  try {
    nlohmann::json c = nlohmann::json::parse(meta.str("cursor"));
    s.cursor = {c.at("epoch").get<int64_t>(), c.at("window").get<int64_t>(),
                c.at("shard").get<int64_t>(), c.at("row").get<int64_t>(),
                c.at("served").get<int64_t>()};
    nlohmann::json j = nlohmann::json::parse(meta.str("schedule"));
    Schedule &sc = ck.config.schedule;
    sc.steps = j.at("steps").get<int64_t>();
    sc.lr = j.at("lr").get<double>();
    sc.lrWarmup = j.at("lr_warmup").get<double>();
    sc.decay = j.at("decay").get<std::string>();
    sc.minLrFraction = j.at("min_lr_fraction").get<double>();
    sc.lambda = j.at("lambda").get<double>();
    sc.lambdaWarmup = j.at("lambda_warmup").get<double>();
    sc.beta1 = j.at("beta1").get<double>();
    sc.beta2 = j.at("beta2").get<double>();
    sc.eps = j.at("eps").get<double>();
    sc.clip = j.at("clip").get<double>();
  } catch (const std::exception &) {
    return dataLoss(path + ": __metadata__ cursor or schedule is malformed");
  }
  if (const TensorView *a = f.find(kActivity)) {
    if (a->dtype != "I64" || a->shape != std::vector<int64_t>{plan.model.numTransforms()})
      return dataLoss(path + ": " + kActivity + " has the wrong dtype or shape");
    s.lastActive.resize(size_t(plan.model.numTransforms()));
    std::memcpy(s.lastActive.data(), a->data, a->bytes);
  } else {
    s.lastActive.assign(size_t(plan.model.numTransforms()), -1);
  }
  if (s.step < 0 || s.adamStep < 0 || s.adamStep > s.step || s.tokens < 0 ||
      ck.config.batch <= 0)
    return dataLoss(path + ": inconsistent step counters in __metadata__");
  return ck;
}

} // namespace molt
