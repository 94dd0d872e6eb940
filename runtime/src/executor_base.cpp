// The device-independent half of every executor (runtime/src/executor_base.h).
#include "executor_base.h"

#include <algorithm>
#include <chrono>
#include <set>
#include <type_traits>

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

ExecutorBase::ExecutorBase(Plan plan, int64_t batch) : plan_(std::move(plan)), batch_(batch) {}

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
      if (d.isStatic())
        info.shape.push_back(d.value);
      else if (d.symbol == "B")
        info.shape.push_back(batch_);
      else if (d.symbol == "P")
        info.shape.push_back(batch_ * T);
      else {
        // Pk: the pair capacity of bucket k alone.
        size_t k = size_t(std::stoll(d.symbol.substr(1)));
        if (plan_.model.kind != "molt" || k >= plan_.model.buckets.size())
          return invalidArgument("buffer '" + b.name + "': no bucket for dimension " + d.symbol);
        info.shape.push_back(batch_ * plan_.model.buckets[k].count);
      }
    }
    MOLT_RETURN_IF_ERROR(addTensor(std::move(info)));
  }
  for (const auto &[entry, invocations] : plan_.entry_points)
    for (const Invocation &inv : invocations)
      MOLT_RETURN_IF_ERROR(checkInvocation(entry, inv));
  for (const BufferInfo &info : tensors_)
    MOLT_RETURN_IF_ERROR(allocate(info).withContext("allocating '" + info.name + "'"));
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
  if (k->attrs.count("gate") && gate != "jumprelu" && gate != "relu" && gate != "topk")
    return invalidArgument(where + ": unknown gate '" + gate + "'");
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
StatusOr<const BufferInfo *> ExecutorBase::copyTarget(const std::string &name, size_t bytes,
                                                      const char *verb) const {
  const BufferInfo *t = info(name);
  if (!t)
    return notFound("no tensor named '" + name + "'");
  if (bytes != t->bytes())
    return invalidArgument(std::string(verb) + " '" + name + "': " + std::to_string(bytes) +
                           " bytes for a " + std::to_string(t->bytes()) + "-byte tensor");
  return t;
}

Status ExecutorBase::write(const std::string &name, const void *host, size_t bytes) {
  auto t = copyTarget(name, bytes, "writing");
  return t.isOk() ? writeBytes(**t, host) : t.status();
}

Status ExecutorBase::read(const std::string &name, void *host, size_t bytes) {
  auto t = copyTarget(name, bytes, "reading");
  return t.isOk() ? readBytes(**t, host) : t.status();
}

Status ExecutorBase::zero(const std::string &name) {
  const BufferInfo *t = info(name);
  if (!t)
    return notFound("no tensor named '" + name + "'");
  return zeroBytes(*t);
}

Status ExecutorBase::run(const std::string &entryPoint) {
  auto it = plan_.entry_points.find(entryPoint);
  if (it == plan_.entry_points.end())
    return notFound("the bundle has no entry point '" + entryPoint + "'");
  std::set<std::string> cleared;
  auto clear = [&](const std::string &name) -> Status {
    if (!info(name) || !cleared.insert(name).second)
      return Status::ok();
    return zeroBytes(*info(name));
  };
  // Every tensor an op of the entry accumulates into (role Acc in molt/ops.def: the yhat an
  // apply adds to, the stats the loss terms add to) starts the entry at zero.
  for (const Invocation &inv : it->second) {
    const OpSignature *sig = findOp(plan_.findKernel(inv.kernel)->op);
    for (const OpArg &a : sig->arguments)
      if (a.role == ArgRole::Acc)
        MOLT_RETURN_IF_ERROR(clear(inv.args.at(a.name)));
  }
  if (entryPoint == "train_step")
    for (const ParamDesc &p : plan_.params)
      MOLT_RETURN_IF_ERROR(clear("d_" + p.name));
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
  return Status::ok();
}

} // namespace molt
