// Reading, validating and writing bundle manifests (docs/bundle.md): every check a bad
// manifest can fail is here, and each failure is one line naming the field.
#include "molt/plan.h"

#include <cctype>
#include <cmath>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "molt/gate.h"
#include "molt/io.h"
#include "molt/ops.h"

namespace molt {

using json = nlohmann::json;
using ojson = nlohmann::ordered_json;

int64_t ModelDesc::numTransforms() const {
  if (kind == "transcoder")
    return features;
  int64_t t = 0;
  for (const Bucket &b : buckets)
    t += b.count;
  return t;
}

int64_t ModelDesc::bucketOffset(size_t k) const {
  int64_t off = 0;
  for (size_t i = 0; i < k && i < buckets.size(); ++i)
    off += buckets[i].count;
  return off;
}

namespace {
template <typename T> const T *findNamed(const std::vector<T> &items, const std::string &name) {
  for (const T &item : items)
    if (item.name == name)
      return &item;
  return nullptr;
}
} // namespace

const KernelDesc *Plan::findKernel(const std::string &name) const {
  return findNamed(kernels, name);
}
const ParamDesc *Plan::findParam(const std::string &name) const { return findNamed(params, name); }
const BufferDesc *Plan::findBuffer(const std::string &name) const {
  return findNamed(buffers, name);
}

namespace {

// Validation errors travel as this exception inside the parser only; parsePlan turns the
// first one into a Status, so the public API never throws.
struct PlanError {
  std::string message;
};

[[noreturn]] void fail(const std::string &where, const std::string &what) {
  throw PlanError{where + ": " + what};
}

std::string describe(const json &j) {
  std::string s = j.dump();
  return s.size() > 40 ? s.substr(0, 37) + "..." : s;
}

// A JSON object read field by field: every key must be consumed, so a misspelt key is an
// error rather than a silently ignored setting.
class Fields {
public:
  Fields(const json &j, std::string where) : j_(j), where_(std::move(where)) {
    if (!j_.is_object())
      fail(where_, "expected an object, got " + describe(j_));
  }

  std::string at(const std::string &key) const { return where_ + "." + key; }
  bool has(const std::string &key) const { return j_.contains(key); }

  const json &get(const std::string &key) {
    seen_.insert(key);
    auto it = j_.find(key);
    if (it == j_.end())
      fail(where_, "missing field '" + key + "'");
    return *it;
  }

  std::string str(const std::string &key) {
    const json &v = get(key);
    if (!v.is_string())
      fail(at(key), "expected a string, got " + describe(v));
    return v.get<std::string>();
  }
  std::string str(const std::string &key, const std::string &dflt) {
    return has(key) ? str(key) : dflt;
  }

  int64_t integer(const std::string &key) {
    const json &v = get(key);
    if (!v.is_number_integer())
      fail(at(key), "expected an integer, got " + describe(v));
    return v.get<int64_t>();
  }
  int64_t integer(const std::string &key, int64_t dflt) { return has(key) ? integer(key) : dflt; }
  int64_t positive(const std::string &key) {
    int64_t v = integer(key);
    if (v <= 0)
      fail(at(key), "must be positive, got " + std::to_string(v));
    return v;
  }

  double number(const std::string &key) {
    const json &v = get(key);
    if (!v.is_number())
      fail(at(key), "expected a number, got " + describe(v));
    double d = v.get<double>();
    if (!std::isfinite(d))
      fail(at(key), "must be finite");
    return d;
  }
  double number(const std::string &key, double dflt) { return has(key) ? number(key) : dflt; }

  bool boolean(const std::string &key, bool dflt) {
    if (!has(key))
      return dflt;
    const json &v = get(key);
    if (!v.is_boolean())
      fail(at(key), "expected true or false, got " + describe(v));
    return v.get<bool>();
  }

  const json &array(const std::string &key) {
    const json &v = get(key);
    if (!v.is_array())
      fail(at(key), "expected an array, got " + describe(v));
    return v;
  }

  /// Fails on the first key that no reader asked for.
  void done() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!seen_.count(it.key()))
        fail(where_, "unknown field '" + it.key() + "'");
  }

private:
  const json &j_;
  std::string where_;
  std::set<std::string> seen_;
};

std::string oneOf(const std::string &value, const std::vector<std::string> &allowed,
                  const std::string &where) {
  for (const std::string &a : allowed)
    if (value == a)
      return value;
  std::string list;
  for (const std::string &a : allowed)
    list += (list.empty() ? "" : ", ") + a;
  fail(where, "'" + value + "' is not one of " + list);
}

bool isDimSymbol(const std::string &s) { return std::regex_match(s, std::regex("B|P[0-9]*")); }

bool isGridExpr(const std::string &s) {
  static const std::regex re("[0-9]+|B|T|P[0-9]*|cdiv\\((B|T|P[0-9]*),[ ]*[1-9][0-9]*\\)");
  return std::regex_match(s, re) && s != "0";
}

GateDesc parseGate(const json &j, const std::string &where) {
  Fields f(j, where);
  GateDesc g;
  g.kind = oneOf(f.str("kind"), gateKindNames(), f.at("kind"));
  if (g.kind == "jumprelu") {
    g.threshold = f.number("threshold");
    g.bandwidth = f.number("bandwidth");
    if (g.threshold < 0)
      fail(f.at("threshold"), "must be >= 0");
    if (g.bandwidth <= 0)
      fail(f.at("bandwidth"), "must be positive");
  } else if (g.kind == "topk") {
    g.k = f.positive("k");
  }
  f.done();
  return g;
}

PenaltyDesc parsePenalty(const json &j, const std::string &where) {
  Fields f(j, where);
  PenaltyDesc p;
  p.kind = oneOf(f.str("kind"), {"tanh", "l1"}, f.at("kind"));
  if (p.kind == "tanh") {
    p.c = f.number("c");
    if (p.c <= 0)
      fail(f.at("c"), "must be positive");
  }
  p.lambda = f.number("lambda");
  p.warmup = f.number("warmup", 0.0);
  if (p.lambda < 0)
    fail(f.at("lambda"), "must be >= 0");
  if (p.warmup < 0 || p.warmup > 1)
    fail(f.at("warmup"), "must be a fraction in [0, 1]");
  f.done();
  return p;
}

ModelDesc parseModel(const json &j) {
  Fields f(j, "model");
  ModelDesc m;
  m.kind = oneOf(f.str("kind"), {"molt", "transcoder"}, "model.kind");
  m.name = f.str("name", "");
  m.d_model = f.positive("d_model");
  m.dtype = oneOf(f.str("dtype", "f32"), {"f32", "f16", "bf16"}, "model.dtype");
  m.gate = parseGate(f.get("gate"), "model.gate");
  m.penalty = parsePenalty(f.get("penalty"), "model.penalty");
  m.decoder_bias = f.boolean("decoder_bias", true);
  if (m.kind == "molt") {
    const json &bs = f.array("buckets");
    if (bs.empty())
      fail("model.buckets", "a molt layer needs at least one bucket");
    for (size_t i = 0; i < bs.size(); ++i) {
      Fields b(bs[i], "model.buckets[" + std::to_string(i) + "]");
      m.buckets.push_back({b.positive("rank"), b.positive("count")});
      b.done();
    }
    if (m.gate.kind == "topk")
      fail("model.gate.kind", "topk is for transcoders; a molt layer uses jumprelu or relu");
  } else {
    m.features = f.positive("features");
    m.skip = f.boolean("skip", false);
    if (m.gate.kind == "topk" && m.gate.k > m.features)
      fail("model.gate.k", "exceeds the number of features");
  }
  f.done();
  return m;
}

InitDesc parseInit(const json &j, const std::string &where) {
  Fields f(j, where);
  InitDesc init;
  init.kind = oneOf(f.str("kind"), {"normal", "uniform", "zeros", "const"}, f.at("kind"));
  if (init.kind == "normal")
    init.value = f.number("std");
  else if (init.kind == "uniform")
    init.value = f.number("bound");
  else if (init.kind == "const")
    init.value = f.number("value");
  if ((init.kind == "normal" || init.kind == "uniform") && init.value < 0)
    fail(where, "the spread must be >= 0");
  f.done();
  return init;
}

// A shape: positive integers, plus the symbols B and P where `symbols` allows them (buffers).
std::vector<Dim> parseShape(const json &shape, const std::string &where, bool symbols) {
  if (!shape.is_array() || shape.empty())
    fail(where, "expected a non-empty array of dimensions, got " + describe(shape));
  std::vector<Dim> dims;
  for (size_t i = 0; i < shape.size(); ++i) {
    Dim d;
    if (shape[i].is_number_integer() && shape[i].get<int64_t>() > 0)
      d.value = shape[i].get<int64_t>();
    else if (symbols && shape[i].is_string() && isDimSymbol(shape[i].get<std::string>()))
      d.symbol = shape[i].get<std::string>();
    else
      fail(where + "[" + std::to_string(i) + "]",
           std::string("a dimension is a positive integer") + (symbols ? ", B or P" : "") +
               ", got " + describe(shape[i]));
    dims.push_back(d);
  }
  return dims;
}

ParamDesc parseParam(const json &j, const std::string &where) {
  Fields f(j, where);
  ParamDesc p;
  p.name = f.str("name");
  for (const Dim &d : parseShape(f.get("shape"), f.at("shape"), /*symbols=*/false))
    p.shape.push_back(d.value);
  p.init = f.has("init") ? parseInit(f.get("init"), f.at("init")) : InitDesc{};
  f.done();
  return p;
}

BufferDesc parseBuffer(const json &j, const std::string &where) {
  Fields f(j, where);
  BufferDesc b;
  b.name = f.str("name");
  b.shape = parseShape(f.get("shape"), f.at("shape"), /*symbols=*/true);
  b.dtype = oneOf(f.str("dtype", "f32"), {"f32", "i32"}, f.at("dtype"));
  f.done();
  return b;
}

LaunchConfig parseLaunch(const json &j, const std::string &where) {
  Fields f(j, where);
  LaunchConfig l;
  if (f.has("block")) {
    const json &block = f.array("block");
    if (block.size() != 3)
      fail(f.at("block"), "must have three entries");
    int64_t threads = 1;
    for (int i = 0; i < 3; ++i) {
      if (!block[i].is_number_integer() || block[i].get<int64_t>() <= 0 ||
          block[i].get<int64_t>() > 1024)
        fail(f.at("block") + "[" + std::to_string(i) + "]",
             "must be an integer in 1..1024, got " + describe(block[i]));
      l.block[i] = int(block[i].get<int64_t>());
      threads *= l.block[i];
    }
    if (threads > 1024)
      fail(f.at("block"), "more than 1024 threads per block");
  }
  if (f.has("grid")) {
    const json &grid = f.array("grid");
    if (grid.size() != 3)
      fail(f.at("grid"), "must have three entries");
    for (int i = 0; i < 3; ++i) {
      std::string at = f.at("grid") + "[" + std::to_string(i) + "]";
      std::string e = grid[i].is_number_integer() ? std::to_string(grid[i].get<int64_t>())
                      : grid[i].is_string()       ? grid[i].get<std::string>()
                                                  : describe(grid[i]);
      if (!isGridExpr(e))
        fail(at, "bad grid expression '" + e + "' (an integer, B, T, P or cdiv(X,n))");
      l.grid[i] = e;
    }
  }
  l.smem = f.integer("smem", 0);
  l.tile_m = f.integer("tile_m", 0);
  l.tile_n = f.integer("tile_n", 0);
  l.tile_k = f.integer("tile_k", 0);
  l.stages = int(f.integer("stages", 1));
  l.split = f.str("split", "none");
  if (l.smem < 0)
    fail(f.at("smem"), "must be >= 0");
  if (l.tile_m < 0 || l.tile_n < 0 || l.tile_k < 0)
    fail(where, "tile sizes must be >= 0");
  if (l.stages < 1)
    fail(f.at("stages"), "must be >= 1");
  f.done();
  return l;
}

KernelDesc parseKernel(const json &j, const std::string &where) {
  Fields f(j, where);
  KernelDesc k;
  k.name = f.str("name");
  k.op = f.str("op");
  if (!findOp(k.op))
    fail(f.at("op"), "unknown kernel op '" + k.op + "'");
  if (f.has("attrs")) {
    const json &attrs = f.get("attrs");
    if (!attrs.is_object())
      fail(f.at("attrs"), "expected an object");
    for (auto it = attrs.begin(); it != attrs.end(); ++it) {
      const json &v = it.value();
      if (v.is_number_integer())
        k.attrs[it.key()] = v.get<int64_t>();
      else if (v.is_number_float())
        k.attrs[it.key()] = v.get<double>();
      else if (v.is_string())
        k.attrs[it.key()] = v.get<std::string>();
      else
        fail(f.at("attrs") + "." + it.key(), "an attr is an integer, a number or a string");
    }
  }
  k.source = f.str("source", "");
  k.entry = f.str("entry", "");
  if (f.has("launch"))
    k.launch = parseLaunch(f.get("launch"), f.at("launch"));
  f.done();
  return k;
}

// Checks that every tensor an invocation names exists and that it binds exactly the op's
// arguments (molt/ops.def is the one table of them).
Invocation parseInvocation(const json &j, const std::string &where, const Plan &plan,
                           const std::set<std::string> &tensors) {
  Fields f(j, where);
  Invocation inv;
  inv.kernel = f.str("kernel");
  const KernelDesc *kernel = plan.findKernel(inv.kernel);
  if (!kernel)
    fail(f.at("kernel"), "unknown kernel '" + inv.kernel + "'");
  const OpSignature *sig = findOp(kernel->op);
  const json &args = f.get("args");
  if (!args.is_object())
    fail(f.at("args"), "expected an object");
  std::set<std::string> expected(sig->args.begin(), sig->args.end());
  for (auto it = args.begin(); it != args.end(); ++it) {
    std::string at = f.at("args") + "." + it.key();
    if (!expected.count(it.key()))
      fail(at, "'" + it.key() + "' is not an argument of op " + kernel->op);
    if (!it.value().is_string())
      fail(at, "expected a tensor name, got " + describe(it.value()));
    std::string value = it.value().get<std::string>();
    inv.args[it.key()] = value;
    if (it.key() == "params") {
      // A comma-separated list of param names (the optimiser's and grad_norm's operands).
      size_t start = 0;
      do {
        size_t comma = value.find(',', start);
        std::string name = value.substr(start, comma == std::string::npos ? comma : comma - start);
        if (!plan.findParam(name))
          fail(at, "unknown param '" + name + "'");
        start = comma == std::string::npos ? comma : comma + 1;
      } while (start != std::string::npos);
    } else if (!tensors.count(value)) {
      fail(at, "unknown param or buffer '" + value + "'");
    }
  }
  for (const char *a : sig->args)
    if (!inv.args.count(a))
      fail(f.at("args"), "missing argument '" + std::string(a) + "' of op " + kernel->op);
  f.done();
  return inv;
}

// Reserved buffers have shapes the runtime relies on when it fills or reads them.
void checkReserved(const Plan &plan) {
  auto expect = [&](const char *name, std::vector<Dim> shape, const char *dtype) {
    const BufferDesc *b = plan.findBuffer(name);
    if (!b)
      return;
    bool same = b->shape.size() == shape.size() && b->dtype == dtype;
    for (size_t i = 0; same && i < shape.size(); ++i)
      same = b->shape[i].symbol == shape[i].symbol &&
             (!shape[i].isStatic() || b->shape[i].value == shape[i].value);
    if (!same)
      fail(std::string("buffers.") + name, "reserved buffer has the wrong shape or dtype");
  };
  Dim batch{0, "B"}, d{plan.model.d_model, ""};
  expect("x", {batch, d}, "f32");
  expect("y", {batch, d}, "f32");
  expect("yhat", {batch, d}, "f32");
  expect("scalars", {Dim{8, ""}}, "f32");
  expect("stats", {Dim{16, ""}}, "f32");
}

Plan parseValidated(const json &root) {
  Fields f(root, "manifest");
  Plan plan;
  std::string format = f.str("format");
  if (format != "molt-bundle")
    fail("manifest.format", "expected \"molt-bundle\", got \"" + format + "\"");
  int64_t version = f.integer("version");
  if (version != 1)
    fail("manifest.version",
         "bundle format version " + std::to_string(version) + " but this runtime reads version 1");
  plan.version = int(version);
  plan.precision = oneOf(f.str("precision", "f32"), {"f32", "bf16"}, "manifest.precision");
  plan.model = parseModel(f.get("model"));

  std::set<std::string> tensors;
  auto addName = [&](const std::string &name, const std::string &where) {
    if (name.empty() || name.find(',') != std::string::npos)
      fail(where, "bad tensor name '" + name + "'");
    if (!tensors.insert(name).second)
      fail(where, "duplicate tensor name '" + name + "'");
  };
  const json &params = f.array("params");
  for (size_t i = 0; i < params.size(); ++i) {
    std::string where = "params[" + std::to_string(i) + "]";
    plan.params.push_back(parseParam(params[i], where));
    // The gradient is a tensor every entry point may name; the moments are runtime-private.
    addName(plan.params.back().name, where + ".name");
    addName("d_" + plan.params.back().name, where + ".name");
  }
  const json &buffers = f.array("buffers");
  for (size_t i = 0; i < buffers.size(); ++i) {
    std::string where = "buffers[" + std::to_string(i) + "]";
    plan.buffers.push_back(parseBuffer(buffers[i], where));
    addName(plan.buffers.back().name, where + ".name");
  }
  checkReserved(plan);

  const json &kernels = f.array("kernels");
  std::set<std::string> kernelNames;
  for (size_t i = 0; i < kernels.size(); ++i) {
    std::string where = "kernels[" + std::to_string(i) + "]";
    plan.kernels.push_back(parseKernel(kernels[i], where));
    if (!kernelNames.insert(plan.kernels.back().name).second)
      fail(where + ".name", "duplicate kernel name '" + plan.kernels.back().name + "'");
  }

  const json &eps = f.get("entry_points");
  if (!eps.is_object() || eps.empty())
    fail("manifest.entry_points", "expected a non-empty object");
  for (auto it = eps.begin(); it != eps.end(); ++it) {
    std::string where = "entry_points." + it.key();
    if (!it.value().is_array())
      fail(where, "expected an array of invocations");
    std::vector<Invocation> &list = plan.entry_points[it.key()];
    for (size_t i = 0; i < it.value().size(); ++i)
      list.push_back(
          parseInvocation(it.value()[i], where + "[" + std::to_string(i) + "]", plan, tensors));
  }
  f.done();
  return plan;
}

ojson gateToJson(const GateDesc &g) {
  ojson j;
  j["kind"] = g.kind;
  if (g.kind == "jumprelu") {
    j["threshold"] = g.threshold;
    j["bandwidth"] = g.bandwidth;
  } else if (g.kind == "topk") {
    j["k"] = g.k;
  }
  return j;
}

ojson penaltyToJson(const PenaltyDesc &p) {
  ojson j;
  j["kind"] = p.kind;
  if (p.kind == "tanh")
    j["c"] = p.c;
  j["lambda"] = p.lambda;
  j["warmup"] = p.warmup;
  return j;
}

ojson modelToJson(const ModelDesc &m) {
  ojson j;
  j["kind"] = m.kind;
  j["name"] = m.name;
  j["d_model"] = m.d_model;
  j["dtype"] = m.dtype;
  if (m.kind == "molt") {
    ojson bs = ojson::array();
    for (const Bucket &b : m.buckets)
      bs.push_back({{"rank", b.rank}, {"count", b.count}});
    j["buckets"] = bs;
  } else {
    j["features"] = m.features;
    j["skip"] = m.skip;
  }
  j["gate"] = gateToJson(m.gate);
  j["penalty"] = penaltyToJson(m.penalty);
  j["decoder_bias"] = m.decoder_bias;
  return j;
}

ojson kernelToJson(const KernelDesc &k) {
  ojson j;
  j["name"] = k.name;
  j["op"] = k.op;
  ojson attrs = ojson::object();
  for (const auto &[key, v] : k.attrs) // std::map: sorted, so stable
    std::visit([&](const auto &x) { attrs[key] = x; }, v);
  j["attrs"] = attrs;
  j["source"] = k.source;
  j["entry"] = k.entry;
  const LaunchConfig &l = k.launch;
  ojson launch;
  launch["block"] = {l.block[0], l.block[1], l.block[2]};
  launch["grid"] = {l.grid[0], l.grid[1], l.grid[2]};
  launch["smem"] = l.smem;
  launch["tile_m"] = l.tile_m;
  launch["tile_n"] = l.tile_n;
  launch["tile_k"] = l.tile_k;
  launch["stages"] = l.stages;
  launch["split"] = l.split;
  j["launch"] = launch;
  return j;
}

} // namespace

StatusOr<Plan> parsePlan(const std::string &manifestJson) {
  json root = json::parse(manifestJson, nullptr, /*allow_exceptions=*/false);
  if (root.is_discarded())
    return invalidArgument("manifest.json is not valid JSON");
  try {
    return parseValidated(root);
  } catch (const PlanError &e) {
    return invalidArgument("bad manifest: " + e.message);
  } catch (const std::exception &e) {
    return invalidArgument(std::string("bad manifest: ") + e.what());
  }
}

StatusOr<std::array<unsigned, 3>> launchGrid(const Plan &plan, const LaunchConfig &launch,
                                             int64_t batch) {
  const int64_t T = plan.model.numTransforms();
  std::array<unsigned, 3> grid{};
  for (int d = 0; d < 3; ++d) {
    const std::string &e = launch.grid[d];
    const bool cdiv = e.rfind("cdiv(", 0) == 0;
    const std::string x = cdiv ? e.substr(5, e.find(',') - 5) : e;
    if (!isGridExpr(e) || (std::isdigit((unsigned char)x[0]) && x.size() > 10))
      return invalidArgument("bad grid expression '" + e + "'");
    int64_t v = 0;
    if (x == "B" || x == "T" || x == "P")
      v = x == "B" ? batch : x == "T" ? T : batch * T;
    else if (x[0] == 'P') { // Pk: the pair capacity of bucket k
      const size_t k = size_t(std::stoull(x.substr(1)));
      if (k >= plan.model.buckets.size())
        return invalidArgument("grid expression '" + e + "' names a bucket the model lacks");
      v = batch * plan.model.buckets[k].count;
    } else {
      v = std::stoll(x);
    }
    if (cdiv) {
      const int64_t n = std::stoll(e.substr(e.find(',') + 1));
      v = (v + n - 1) / n;
    }
    if (v <= 0 || v > (d == 0 ? 2147483647 : 65535))
      return invalidArgument("grid dimension " + std::to_string(d) + " ('" + e + "') is " +
                             std::to_string(v) + ", out of range");
    grid[size_t(d)] = unsigned(v);
  }
  return grid;
}

StatusOr<Plan> loadPlan(const std::string &bundleDir) {
  if (!isDirectory(bundleDir))
    return notFound("no bundle directory " + bundleDir);
  std::string path = bundleDir + "/manifest.json";
  StatusOr<std::string> text = readFile(path);
  if (!text)
    return text.status();
  StatusOr<Plan> plan = parsePlan(*text);
  if (!plan)
    return plan.status().withContext(path);
  return plan;
}

std::string planToJson(const Plan &plan) {
  ojson j;
  j["format"] = "molt-bundle";
  j["version"] = plan.version;
  if (plan.precision != "f32") // the default stays implicit, so fp32 bundles are unchanged
    j["precision"] = plan.precision;
  j["model"] = modelToJson(plan.model);
  ojson params = ojson::array();
  for (const ParamDesc &p : plan.params) {
    ojson init;
    init["kind"] = p.init.kind;
    if (p.init.kind == "normal")
      init["std"] = p.init.value;
    else if (p.init.kind == "uniform")
      init["bound"] = p.init.value;
    else if (p.init.kind == "const")
      init["value"] = p.init.value;
    params.push_back({{"name", p.name}, {"shape", p.shape}, {"init", init}});
  }
  j["params"] = params;
  ojson buffers = ojson::array();
  for (const BufferDesc &b : plan.buffers) {
    ojson shape = ojson::array();
    for (const Dim &d : b.shape)
      shape.push_back(d.isStatic() ? ojson(d.value) : ojson(d.symbol));
    buffers.push_back({{"name", b.name}, {"shape", shape}, {"dtype", b.dtype}});
  }
  j["buffers"] = buffers;
  ojson kernels = ojson::array();
  for (const KernelDesc &k : plan.kernels)
    kernels.push_back(kernelToJson(k));
  j["kernels"] = kernels;
  ojson eps = ojson::object();
  for (const auto &[name, list] : plan.entry_points) {
    ojson invs = ojson::array();
    for (const Invocation &inv : list) {
      ojson args = ojson::object();
      // Canonical op order, so a reader sees inputs before outputs.
      const KernelDesc *k = plan.findKernel(inv.kernel);
      const OpSignature *sig = k ? findOp(k->op) : nullptr;
      if (sig) {
        for (const char *a : sig->args)
          if (inv.args.count(a))
            args[a] = inv.args.at(a);
      }
      for (const auto &[a, v] : inv.args)
        if (!args.contains(a))
          args[a] = v;
      invs.push_back({{"kernel", inv.kernel}, {"args", args}});
    }
    eps[name] = invs;
  }
  j["entry_points"] = eps;
  return j.dump(2) + "\n";
}

void addTrainPhases(Plan &plan) {
  auto train = plan.entry_points.find("train_step");
  if (train == plan.entry_points.end())
    return;
  std::vector<Invocation> grad, apply;
  for (const Invocation &inv : train->second) {
    const KernelDesc *k = plan.findKernel(inv.kernel);
    if (apply.empty() && !(k && k->op == "grad_norm"))
      grad.push_back(inv);
    else
      apply.push_back(inv);
  }
  plan.entry_points[kTrainGradEntry] = std::move(grad);
  plan.entry_points[kTrainApplyEntry] = std::move(apply);
}

Status writePlan(const Plan &plan, const std::string &bundleDir) {
  MOLT_RETURN_IF_ERROR(makeDirs(bundleDir));
  return writeFileAtomic(bundleDir + "/manifest.json", planToJson(plan));
}

} // namespace molt
