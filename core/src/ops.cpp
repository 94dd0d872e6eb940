// molt/ops.h: the op table of molt/ops.def, expanded once into typed rows and per-op facts.
#include "molt/ops.h"

#include <algorithm>
#include <variant>

namespace molt {

namespace {

std::vector<std::string> splitWords(const std::string &list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < list.size()) {
    size_t end = list.find(' ', start);
    if (end == std::string::npos)
      end = list.size();
    if (end > start)
      out.push_back(list.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::vector<OpSignature> buildTable() {
  std::vector<OpSignature> table;
#define MOLT_OP(name_, kind_, header_, attrs_, ...)                                                \
  table.push_back({OpId::name_, #name_, OpKind::kind_, header_, splitWords(attrs_), {}, {}});
#define MOLT_ARG(name_, role_, dtype_, shape_)                                                     \
  table.back().arguments.push_back({#name_, ArgRole::role_, ArgDType::dtype_, ArgShape::shape_});  \
  table.back().args.push_back(#name_);
#include "molt/ops.def"
  return table;
}

int64_t attrInt(const KernelDesc &k, const char *name, int64_t fallback) {
  auto it = k.attrs.find(name);
  if (it == k.attrs.end())
    return fallback;
  if (auto *v = std::get_if<int64_t>(&it->second))
    return *v;
  if (auto *d = std::get_if<double>(&it->second))
    return int64_t(*d);
  return fallback;
}

// What the rows' expressions call.
int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t min(int64_t a, int64_t b) { return a < b ? a : b; }
std::string perTok(int64_t n) { return "cdiv(B," + std::to_string(n) + ")"; }
std::string blocks(int64_t n) { return std::to_string(n); }

} // namespace

const OpArg *OpSignature::argument(const std::string &name) const {
  for (const OpArg &a : arguments)
    if (name == a.name)
      return &a;
  return nullptr;
}

bool OpSignature::hasAttr(const std::string &name) const {
  return std::find(attrs.begin(), attrs.end(), name) != attrs.end();
}

bool OpSignature::encodes() const {
  for (const OpArg &a : arguments)
    if (a.shape == ArgShape::PairPtr && a.role == ArgRole::Out)
      return true;
  return false;
}

const std::vector<OpSignature> &opSignatures() {
  static const std::vector<OpSignature> table = buildTable();
  return table;
}

const OpSignature *findOp(const std::string &op) {
  for (const OpSignature &s : opSignatures())
    if (op == s.op)
      return &s;
  return nullptr;
}

OpDims opDims(const KernelDesc &k, int64_t batch, int64_t dModel) {
  OpDims d;
  d.B = batch;
  d.D = attrInt(k, "D", dModel);
  d.T = attrInt(k, "T", attrInt(k, "F", 1));
  d.R = attrInt(k, "R", 1);
  d.N = attrInt(k, "N", 1);
  auto gate = k.attrs.find("gate");
  d.topk = gate != k.attrs.end() && std::holds_alternative<std::string>(gate->second) &&
           std::get<std::string>(gate->second) == "topk";
  return d;
}

// Each row's expressions, evaluated with the kernel's sizes in scope under their table names.
#define MOLT_OP_DIMS(k, batch, dModel)                                                             \
  const OpDims dims_ = opDims(k, batch, dModel);                                                   \
  const int64_t B = dims_.B, D = dims_.D, T = dims_.T, R = dims_.R, N = dims_.N;                   \
  const bool topk = dims_.topk;                                                                    \
  (void)B, (void)D, (void)T, (void)R, (void)N, (void)topk;

double opWork(const KernelDesc &k, int64_t batch, int64_t dModel) {
  MOLT_OP_DIMS(k, batch, dModel)
  const OpSignature *sig = findOp(k.op);
  if (!sig)
    return double(B) * double(D);
  switch (sig->id) {
#define MOLT_OP(name_, kind_, header_, attrs_, work_, ...)                                         \
  case OpId::name_:                                                                                \
    return double(work_);
#include "molt/ops.def"
  case OpId::Count:
    break;
  }
  return double(B) * double(D);
}

int64_t opScratchWords(const KernelDesc &k, int64_t batch) {
  MOLT_OP_DIMS(k, batch, 1)
  const OpSignature *sig = findOp(k.op);
  if (!sig)
    return 0;
  switch (sig->id) {
#define MOLT_OP(name_, kind_, header_, attrs_, work_, scratch_, ...)                               \
  case OpId::name_:                                                                                \
    return int64_t(scratch_);
#include "molt/ops.def"
  case OpId::Count:
    break;
  }
  return 0;
}

int64_t opScratchZeroedWords(const KernelDesc &k, int64_t batch) {
  const int64_t words = opScratchWords(k, batch);
  const std::string &op = k.op;
  (void)op;
#define MOLT_SCRATCH_ZEROED(name_, words_)                                                        \
  if (op == #name_)                                                                                \
    return std::min<int64_t>(words, words_);
#include "molt/ops.def"
  return words;
}

LaunchConfig opDefaultLaunch(const KernelDesc &k) {
  MOLT_OP_DIMS(k, 1, 1)
  LaunchConfig l;
  const OpSignature *sig = findOp(k.op);
  if (!sig)
    return l;
  switch (sig->id) {
#define MOLT_OP(name_, kind_, header_, attrs_, work_, scratch_, gx_, gy_, tm_, tn_, tk_)           \
  case OpId::name_:                                                                                \
    l.grid[0] = gx_, l.grid[1] = gy_;                                                              \
    l.tile_m = tm_, l.tile_n = tn_, l.tile_k = tk_;                                                \
    break;
#include "molt/ops.def"
  case OpId::Count:
    break;
  }
  return l;
}

#undef MOLT_OP_DIMS

// Names indexed by the enums' values (the orders of molt/ops.h).
const char *opKindName(OpKind kind) {
  static const char *const names[] = {"molt", "transcoder", "shared"};
  return names[size_t(kind)];
}

const char *argRoleName(ArgRole role) {
  static const char *const names[] = {"in", "out", "acc", "inout", "grad"};
  return names[size_t(role)];
}

const char *argDTypeName(ArgDType dtype) {
  static const char *const names[] = {"f32", "i32", "params"};
  return names[size_t(dtype)];
}

const char *argShapeName(ArgShape shape) {
  static const char *const names[] = {"[B,D]",     "[T,D]",
                                      "[T]",       "[T] (jumprelu) or [1]",
                                      "[B,T]",     "[T+1]",
                                      "[1]",       "[P]",
                                      ">=16",      ">=8",
                                      "[N,D,R]",   "[N,R,D]",
                                      "[N,R,R]",   ">=OFF+N (bucket op) or >=T",
                                      "[D]",       "[D,D]",
                                      "param list"};
  static_assert(sizeof(names) / sizeof(names[0]) == size_t(ArgShape::ParamList) + 1);
  return names[size_t(shape)];
}

} // namespace molt
