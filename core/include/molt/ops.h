// The typed view of molt's kernel-op table (molt/ops.def, contract in docs/bundle.md): each op's
// arguments in canonical order with their roles, dtypes and shape rules, its attrs, kind,
// device header, and the launch facts derived from it. The plan loader checks invocations with
// it, the executors infer shapes from it, the CUDA emitter and the tuner read it, the compiler's
// lowering records its attrs. The rows live only in ops.def; this header only describes them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "molt/plan.h"

namespace molt {

/// Every op of the table, in table order (OpId::Count: how many).
enum class OpId : size_t {
#define MOLT_OP(name, ...) name,
#include "molt/ops.def"
  Count
};

/// Whose op it is: a molt layer's, a transcoder's (its T is the feature count F), or both's.
enum class OpKind { Molt, Transcoder, Shared };

/// What an op does with an argument (ops.def explains each).
enum class ArgRole { In, Out, Acc, InOut, Grad };

/// An argument's element type; Params is a comma-separated list of param names, not a tensor.
enum class ArgDType { F32, I32, Params };

/// The shape an argument's tensor must have. B: batch, D: d_model, T: the op's transforms
/// (features for a transcoder op), N/R: the bucket's count and rank, OFF its first transform.
enum class ArgShape {
  BD,        // [B, D]
  TD,        // [T, D]
  Tvec,      // [T]
  Theta,     // [T] for a JumpReLU gate; other gates bind a one-element dummy
  BT,        // [B, T]
  PairPtr,   // [T + 1]
  One,       // [1]
  Pairs,     // a pair capacity: >= the pairs an encoder writes (B·T, or B·min(k,T) for TopK)
  Stats,     // >= 16 (docs/bundle.md, stats)
  Scalars,   // >= 8 (docs/bundle.md, scalars)
  NDR,       // [N, D, R]
  NRD,       // [N, R, D]
  NRR,       // [N, R, R]
  Norm,      // >= OFF + N for a bucket op, else >= T
  Dvec,      // [D]
  DD,        // [D, D]
  ParamList, // a list of param names
};

struct OpArg {
  const char *name;
  ArgRole role;
  ArgDType dtype;
  ArgShape shape;
};

struct OpSignature {
  OpId id;
  const char *op;
  OpKind kind;
  const char *header;             // device template header under kernels/cuda
  std::vector<std::string> attrs; // compile-time constants, in table order
  std::vector<OpArg> arguments;   // canonical order
  std::vector<const char *> args; // the arguments' names, same order
  /// The argument of that name, or nullptr.
  const OpArg *argument(const std::string &name) const;
  bool hasAttr(const std::string &name) const;
  /// An encoder: it writes the pair lists (its pair_ptr is an output), so the pair capacity
  /// must hold every pair it can list.
  bool encodes() const;
};

/// Every op, indexed by OpId.
const std::vector<OpSignature> &opSignatures();
/// The op of that name, or nullptr.
const OpSignature *findOp(const std::string &op);

/// The sizes an op's per-row expressions (work, scratch, launch) see, from a kernel's attrs:
/// D from attr D (else `dModel`), T from attr T or F, R, N; topk for gate = "topk".
struct OpDims {
  int64_t B = 0, D = 1, T = 1, R = 1, N = 1;
  bool topk = false;
};
OpDims opDims(const KernelDesc &k, int64_t batch, int64_t dModel = 1);

/// Rough FLOPs of one launch of `k` at `batch` tokens (ops.def's work column).
double opWork(const KernelDesc &k, int64_t batch, int64_t dModel);
/// 32-bit words of zeroed device scratch `k` needs at `batch` tokens (ops.def's scratch column).
int64_t opScratchWords(const KernelDesc &k, int64_t batch);
/// The leading words of that scratch the executor zeroes before each launch (ops.def's
/// MOLT_SCRATCH_ZEROED rows; all of it for every other op).
int64_t opScratchZeroedWords(const KernelDesc &k, int64_t batch);
/// The default launch of `k` (ops.def's grid and tile columns; block 256, one stage); the
/// default LaunchConfig for an unknown op.
LaunchConfig opDefaultLaunch(const KernelDesc &k);

const char *opKindName(OpKind kind);
const char *argRoleName(ArgRole role);
const char *argDTypeName(ArgDType dtype);
const char *argShapeName(ArgShape shape);

} // namespace molt
