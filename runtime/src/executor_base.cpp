// The device-independent half of every executor (runtime/src/executor_base.h).
#include "executor_base.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <limits>
#include <set>
#include <type_traits>

#include "molt/gate.h"
#include "molt/ops.h"

namespace molt {

namespace {

std::string shapeText(const std::vector<int64_t> &shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i)
    s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

} // namespace

ExecutorBase::ExecutorBase(Plan plan, int64_t batch)
    : plan_(std::move(plan)), batch_(batch), rows_(batch) {}

Status ExecutorBase::setRows(int64_t rows) {
  if (rows < 1 || rows > batch_)
    return invalidArgument("rows must be in [1, " + std::to_string(batch_) +
                           "] (the prepared batch), got " + std::to_string(rows));
  rows_ = rows;
  return Status::ok();
}

Status ExecutorBase::addTensor(BufferInfo info) {
  if (index_.count(info.name))
    return invalidArgument("tensor '" + info.name + "' is declared twice");
  for (int64_t s : info.shape)
    if (s <= 0)
      return invalidArgument("tensor '" + info.name + "' has a non-positive dimension");
  index_[info.name] = tensors_.size();
  tensors_.push_back(std::move(info));
  return Status::ok();
}

// A failed allocation names the tensor, its size and the batch; out of memory (the device's,
// or the host's) also says what to change: most buffers grow with the batch.
Status ExecutorBase::allocationFailure(const BufferInfo &t, const Status &cause) const {
  char size[64];
  std::snprintf(size, sizeof size, "%.1f MiB", double(t.bytes()) / (1024.0 * 1024.0));
  std::string msg = "allocating '" + t.name + "' " + shapeText(t.shape) + " (" + size + ") at batch " +
                    std::to_string(batch_) + ": " + cause.message();
  std::string lower = cause.message();
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower.find("out of memory") != std::string::npos ||
      lower.find("cannot allocate memory") != std::string::npos) {
    double total = 0;
    for (const BufferInfo &b : tensors_)
      total += double(b.bytes());
    char all[64];
    std::snprintf(all, sizeof all, "%.1f MiB", total / (1024.0 * 1024.0));
    msg += "; this plan needs " + std::string(all) + " at batch " + std::to_string(batch_) +
           ", mostly batch-sized: try a smaller batch (e.g. --batch " +
           std::to_string(std::max<int64_t>(1, batch_ / 2)) + ")";
  }
  return Status(cause.code(), msg);
}

Status ExecutorBase::initialize() {
  if (batch_ <= 0)
    return invalidArgument("batch size must be positive, got " + std::to_string(batch_));
  const int64_t T = plan_.model.numTransforms();
  // Pair lists index with i32 (docs/bundle.md), so every (token, transform) must fit.
  if (batch_ > ((int64_t(1) << 31) - 1) / std::max<int64_t>(1, T))
    return invalidArgument("batch " + std::to_string(batch_) + " x " + std::to_string(T) +
                           " transforms exceeds the 2^31 pairs an i32 pair list can index");
  for (const ParamDesc &p : plan_.params)
    for (const char *prefix : {"", "d_", "m_", "v_"})
      MOLT_RETURN_IF_ERROR(addTensor({prefix + p.name, DType::F32, p.shape}));
  for (const BufferDesc &b : plan_.buffers) {
    BufferInfo info{b.name, b.dtype == "i32" ? DType::I32 : DType::F32, {}};
    for (const Dim &d : b.shape) {
      if (!d.isStatic() && !info.shape.empty())
        return invalidArgument("buffer '" + b.name + "': a row dimension (" + d.symbol +
                               ") must lead its shape");
      if (d.isStatic())
        info.shape.push_back(d.value);
      else if (d.symbol == "B")
        info.shape.push_back(batch_), info.perRow = 1;
      else if (d.symbol == "P")
        info.shape.push_back(batch_ * T), info.perRow = T;
      else {
        // Pk: the pair capacity of bucket k alone.
        size_t k = size_t(std::stoll(d.symbol.substr(1)));
        if (plan_.model.kind != "molt" || k >= plan_.model.buckets.size())
          return invalidArgument("buffer '" + b.name + "': no bucket for dimension " + d.symbol);
        info.shape.push_back(batch_ * plan_.model.buckets[k].count);
        info.perRow = plan_.model.buckets[k].count;
      }
    }
    MOLT_RETURN_IF_ERROR(addTensor(std::move(info)));
  }
  for (const auto &[entry, invocations] : plan_.entry_points)
    for (const Invocation &inv : invocations)
      MOLT_RETURN_IF_ERROR(checkInvocation(entry, inv));
  for (const BufferInfo &info : tensors_) {
    Status st = allocate(info);
    if (!st)
      return allocationFailure(info, st);
  }
  return Status::ok();
}

namespace {

// A kernel attribute converted to T, or `fallback` when absent or of another kind (numbers
// convert between integer and float; the plan loader already checked the manifest's types).
template <typename T> T attrAs(const KernelDesc &k, const std::string &name, T fallback) {
  auto it = k.attrs.find(name);
  if (it == k.attrs.end())
    return fallback;
  return std::visit(
      [&](const auto &v) -> T {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::string> || std::is_same_v<T, std::string>) {
          if constexpr (std::is_same_v<V, T>)
            return v;
          return fallback;
        } else {
          return T(v);
        }
      },
      it->second);
}

} // namespace

int64_t ExecutorBase::intAttr(const KernelDesc &k, const std::string &name) {
  return attrAs<int64_t>(k, name, 0);
}
double ExecutorBase::floatAttr(const KernelDesc &k, const std::string &name) {
  return attrAs<double>(k, name, 0.0);
}
std::string ExecutorBase::stringAttr(const KernelDesc &k, const std::string &name) {
  return attrAs<std::string>(k, name, "");
}

std::vector<std::string> ExecutorBase::splitParams(const std::string &list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos)
      comma = list.size();
    out.push_back(list.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

// Checks what the plan loader cannot: that every bound tensor has the dtype and shape the
// kernel's attrs imply, so a kernel can trust its pointers.
Status ExecutorBase::checkInvocation(const std::string &entry, const Invocation &inv) const {
  const std::string where = "entry point " + entry + ", kernel '" + inv.kernel + "'";
  const KernelDesc *k = plan_.findKernel(inv.kernel);
  if (!k)
    return invalidArgument(where + ": no such kernel");
  const OpSignature *sig = findOp(k->op);
  if (!sig)
    return invalidArgument(where + ": unknown op '" + k->op + "'");
  if (inv.args.size() != sig->args.size())
    return invalidArgument(where + ": binds " + std::to_string(inv.args.size()) +
                           " arguments, op " + k->op + " takes " +
                           std::to_string(sig->args.size()));

  const bool transcoder = sig->kind == OpKind::Transcoder;
  const int64_t B = batch_;
  const int64_t D = k->attrs.count("D") ? intAttr(*k, "D") : plan_.model.d_model;
  const int64_t T = transcoder ? (k->attrs.count("F") ? intAttr(*k, "F") : plan_.model.features)
                               : (k->attrs.count("T") ? intAttr(*k, "T") : plan_.model.numTransforms());
  const int64_t R = intAttr(*k, "R"), N = intAttr(*k, "N"), OFF = intAttr(*k, "OFF");
  const std::string gate = stringAttr(*k, "gate");
  const bool bucketOp = sig->hasAttr("R");
  if (D != plan_.model.d_model)
    return invalidArgument(where + ": D = " + std::to_string(D) + " but the model has d_model " +
                           std::to_string(plan_.model.d_model));
  if (bucketOp && (R <= 0 || N <= 0 || OFF < 0 || OFF + N > plan_.model.numTransforms()))
    return invalidArgument(where + ": bucket attrs R/N/OFF out of range");
  if (k->attrs.count("gate") && !parseGateKind(gate))
    return invalidArgument(where + ": unknown gate '" + gate + "' (" + gateKindList() + ")");
  const bool encodes = sig->encodes();
  if (encodes && gate == "topk" && intAttr(*k, "k") <= 0)
    return invalidArgument(where + ": a topk gate needs k > 0");
  if (k->attrs.count("kind") && stringAttr(*k, "kind") != "tanh" && stringAttr(*k, "kind") != "l1")
    return invalidArgument(where + ": unknown penalty kind '" + stringAttr(*k, "kind") + "'");

  for (const OpArg &a : sig->arguments) {
    const std::string arg = a.name;
    auto bound = inv.args.find(arg);
    if (bound == inv.args.end())
      return invalidArgument(where + ": argument '" + arg + "' is not bound");
    if (a.dtype == ArgDType::Params) {
      for (const std::string &p : splitParams(bound->second))
        if (!plan_.findParam(p))
          return invalidArgument(where + ": " + arg + " lists unknown param '" + p + "'");
      continue;
    }
    const BufferInfo *t = info(bound->second);
    if (!t)
      return invalidArgument(where + ": argument '" + arg + "' names unknown tensor '" +
                             bound->second + "'");
    const bool isInt = a.dtype == ArgDType::I32;
    if ((t->dtype == DType::I32) != isInt)
      return invalidArgument(where + ": argument '" + arg + "' ('" + t->name + "') must be " +
                             (isInt ? "i32" : "f32"));

    // Exact shapes where the contract fixes them; minimum sizes where it gives a capacity.
    std::vector<int64_t> shape;
    int64_t atLeast = 0;
    switch (a.shape) {
    case ArgShape::BD:
      shape = {B, D};
      break;
    case ArgShape::TD:
      shape = {T, D};
      break;
    case ArgShape::Tvec:
      shape = {T};
      break;
    case ArgShape::Theta:
      shape = gate == "jumprelu" || t->numel() != 1 ? std::vector<int64_t>{T} : std::vector<int64_t>{1};
      break;
    case ArgShape::BT:
      shape = {B, T};
      break;
    case ArgShape::PairPtr:
      shape = {T + 1};
      break;
    case ArgShape::One:
      shape = {1};
      break;
    case ArgShape::Pairs:
      atLeast = encodes ? B * (gate == "topk" ? std::min(intAttr(*k, "k"), T) : T) : 1;
      break;
    case ArgShape::Stats:
      atLeast = 16;
      break;
    case ArgShape::Scalars:
      atLeast = 8;
      break;
    case ArgShape::NDR:
      shape = {N, D, R};
      break;
    case ArgShape::NRD:
      shape = {N, R, D};
      break;
    case ArgShape::NRR:
      shape = {N, R, R};
      break;
    case ArgShape::Norm:
      atLeast = bucketOp ? OFF + N : T;
      break;
    case ArgShape::Dvec:
      shape = {D};
      break;
    case ArgShape::DD:
      shape = {D, D};
      break;
    case ArgShape::ParamList:
      break;
    }
    if (!shape.empty() && t->shape != shape)
      return invalidArgument(where + ": argument '" + arg + "' ('" + t->name + "') has shape " +
                             shapeText(t->shape) + ", expected " + shapeText(shape));
    if (t->numel() < atLeast)
      return invalidArgument(where + ": argument '" + arg + "' ('" + t->name + "') holds " +
                             std::to_string(t->numel()) + " elements, needs at least " +
                             std::to_string(atLeast));
  }
  return Status::ok();
}

const BufferInfo *ExecutorBase::info(const std::string &name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::vector<std::string> ExecutorBase::names() const {
  std::vector<std::string> out;
  for (const BufferInfo &t : tensors_)
    out.push_back(t.name);
  return out;
}

// The tensor a host copy names, checked to exist and to match the copy's size.
StatusOr<BufferInfo> ExecutorBase::copyTarget(const std::string &name, size_t bytes,
                                               const char *verb) const {
  const BufferInfo *t = info(name);
  if (!t)
    return notFound("no tensor named '" + name + "'");
  // The live rows (setRows), or the whole capacity.
  const BufferInfo rows = live(*t);
  if (bytes != rows.bytes() && bytes != t->bytes())
    return invalidArgument(std::string(verb) + " '" + name + "': " + std::to_string(bytes) +
                           " bytes for a " + std::to_string(rows.bytes()) + "-byte tensor");
  return bytes == rows.bytes() ? rows : *t;
}

BufferInfo ExecutorBase::live(const BufferInfo &t) const {
  return {t.name, t.dtype, t.shapeAt(rows_), t.perRow};
}

Status ExecutorBase::write(const std::string &name, const void *host, size_t bytes) {
  auto t = copyTarget(name, bytes, "writing");
  return t.isOk() ? writeBytes(*t, host) : t.status();
}

Status ExecutorBase::read(const std::string &name, void *host, size_t bytes) {
  auto t = copyTarget(name, bytes, "reading");
  return t.isOk() ? readBytes(*t, host) : t.status();
}

Status ExecutorBase::zero(const std::string &name) {
  const BufferInfo *t = info(name);
  if (!t)
    return notFound("no tensor named '" + name + "'");
  return zeroBytes(live(*t));
}

Status ExecutorBase::run(const std::string &entryPoint) {
  auto it = plan_.entry_points.find(entryPoint);
  if (it == plan_.entry_points.end())
    return notFound("the bundle has no entry point '" + entryPoint + "'");
  std::set<std::string> cleared;
  auto clear = [&](const std::string &name) -> Status {
    if (!info(name) || !cleared.insert(name).second)
      return Status::ok();
    return zeroBytes(live(*info(name)));
  };
  // Every tensor an op of the entry accumulates into (role Acc in molt/ops.def: the yhat an
  // apply adds to, the stats the loss terms add to) starts the entry at zero. train_apply has
  // no such op, so it keeps the stats its train_grad left (docs/distributed.md).
  // So does every param gradient an op of the entry binds (role Grad), and a pair list an op
  // updates in place (InOut, shape Pairs: pair_dgate) that no earlier op of the entry wrote:
  // in the caller-seeded entries (backward, vjp) no penalty writes the gates' gradients first.
  std::set<std::string> written;
  for (const Invocation &inv : it->second) {
    const OpSignature *sig = findOp(plan_.findKernel(inv.kernel)->op);
    for (const OpArg &a : sig->arguments) {
      if (a.dtype == ArgDType::Params)
        continue;
      const std::string &name = inv.args.at(a.name);
      if (a.role == ArgRole::Acc || a.role == ArgRole::Grad ||
          (a.role == ArgRole::InOut && a.shape == ArgShape::Pairs && !written.count(name)))
        MOLT_RETURN_IF_ERROR(clear(name));
    }
    for (const OpArg &a : sig->arguments)
      if (a.role != ArgRole::In && a.dtype != ArgDType::Params)
        written.insert(inv.args.at(a.name));
  }
  if (entryPoint == "train_step" || entryPoint == kTrainGradEntry)
    for (const ParamDesc &p : plan_.params)
      MOLT_RETURN_IF_ERROR(clear("d_" + p.name));
  // Non-finite input rows: never a finite answer for them (docs/reliability.md).
  std::vector<char> badRows;
  MOLT_RETURN_IF_ERROR(findNonFiniteRows(it->second, badRows));
  const bool anyBad = std::find(badRows.begin(), badRows.end(), 1) != badRows.end();
  const bool updates = std::any_of(it->second.begin(), it->second.end(), [&](const Invocation &inv) {
    return plan_.findKernel(inv.kernel)->op == "adam";
  });
  if (anyBad && updates)
    return markStepSkipped(); // the params and the optimiser state stay as they were
  for (const Invocation &inv : it->second) {
    auto start = std::chrono::steady_clock::now();
    MOLT_RETURN_IF_ERROR(
        launch(*plan_.findKernel(inv.kernel), inv).withContext("kernel '" + inv.kernel + "'"));
    if (profiling_) {
      MOLT_RETURN_IF_ERROR(synchronize());
      profile_[inv.kernel] +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
  }
  return anyBad ? poisonOutputs(it->second, badRows) : Status::ok();
}

// Reads the f32 [B, d] tensor `name` into rowScratch_ and returns d; 0 when it is not one.
StatusOr<int64_t> ExecutorBase::readRowTensor(const std::string &name) {
  const BufferInfo *t = info(name);
  if (!t || t->dtype != DType::F32 || t->shape.size() != 2 || t->perRow != 1)
    return int64_t(0);
  const BufferInfo rows = live(*t);
  rowScratch_.resize(size_t(rows.numel()));
  MOLT_RETURN_IF_ERROR(readBytes(rows, rowScratch_.data()));
  return t->shape[1];
}

// The row inputs are the tensors bound as `x` (x, or x_dot in jvp) and `y`, each [B, d].
Status ExecutorBase::findNonFiniteRows(const std::vector<Invocation> &invocations,
                                       std::vector<char> &bad) {
  bad.assign(size_t(rows_), 0);
  if (vouchedFinite_)
    return Status::ok();
  std::set<std::string> inputs;
  for (const Invocation &inv : invocations)
    for (const auto &[arg, name] : inv.args)
      if (arg == "x" || arg == "y")
        inputs.insert(name);
  for (const std::string &name : inputs) {
    StatusOr<int64_t> width = readRowTensor(name);
    if (!width)
      return width.status();
    const int64_t d = *width;
    for (int64_t r = 0; d > 0 && r < rows_; ++r) {
      const float *row = rowScratch_.data() + r * d;
      bool finite = true;
      for (int64_t j = 0; j < d; ++j)
        finite &= std::isfinite(row[j]);
      bad[size_t(r)] |= char(!finite);
    }
  }
  return Status::ok();
}

// A step over a batch with a non-finite row is not run: stats says skipped (stats[5], as the
// adam kernel's own refusal does) with a NaN loss, so every caller counts it as skipped.
Status ExecutorBase::markStepSkipped() {
  const BufferInfo *t = info("stats");
  if (!t)
    return Status::ok();
  std::vector<float> stats(size_t(t->numel()), 0.0f);
  if (stats.size() > 5) {
    stats[0] = std::numeric_limits<float>::quiet_NaN();
    stats[5] = 1.0f;
  }
  return writeBytes(*t, stats.data());
}

// After an entry ran on a batch with non-finite rows: those rows of every row output (`yhat`,
// `y_dot`) become NaN (the kernels' gates compare false on NaN, which would leave exactly dec_b);
// the loss in stats[0] and every param gradient the entry wrote become NaN too.
Status ExecutorBase::poisonOutputs(const std::vector<Invocation> &invocations,
                                   const std::vector<char> &bad) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::set<std::string> rows, whole;
  // Row outputs: [B, D] arguments an op writes or accumulates into (yhat, y_dot, d_yhat);
  // param gradients: role Grad (molt/ops.def).
  for (const Invocation &inv : invocations) {
    const OpSignature *sig = findOp(plan_.findKernel(inv.kernel)->op);
    for (const OpArg &a : sig->arguments) {
      const std::string &name = inv.args.at(a.name);
      if (a.shape == ArgShape::BD && (a.role == ArgRole::Acc || a.role == ArgRole::Out))
        rows.insert(name);
      else if (a.role == ArgRole::Grad && plan_.findParam(name.substr(2)))
        whole.insert(name);
    }
  }
  for (const std::string &name : rows) {
    StatusOr<int64_t> width = readRowTensor(name);
    if (!width)
      return width.status();
    const int64_t d = *width;
    if (d == 0)
      continue;
    for (int64_t r = 0; r < rows_; ++r)
      if (bad[size_t(r)])
        std::fill(rowScratch_.begin() + r * d, rowScratch_.begin() + (r + 1) * d, nan);
    MOLT_RETURN_IF_ERROR(writeBytes(live(*info(name)), rowScratch_.data()));
  }
  for (const std::string &name : whole) {
    const BufferInfo *t = info(name);
    rowScratch_.assign(size_t(t->numel()), nan);
    MOLT_RETURN_IF_ERROR(writeBytes(*t, rowScratch_.data()));
  }
  if (const BufferInfo *t = info("stats")) {
    rowScratch_.resize(size_t(t->numel()));
    MOLT_RETURN_IF_ERROR(readBytes(*t, rowScratch_.data()));
    rowScratch_[0] = nan;
    MOLT_RETURN_IF_ERROR(writeBytes(*t, rowScratch_.data()));
  }
  return Status::ok();
}

} // namespace molt
