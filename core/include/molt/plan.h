// The plan: the in-memory form of a bundle's manifest.json (docs/bundle.md).
//
// The compiler builds a Plan and writes it with writePlan(); the runtime reads it with
// loadPlan() and executes its entry points on a backend. Nothing here depends on MLIR.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

#include "molt/status.h"

namespace molt {

/// A compile-time constant of a kernel (an `attrs` value in the manifest).
using AttrValue = std::variant<int64_t, double, std::string>;

struct Bucket {
  int64_t rank = 0;
  int64_t count = 0;
};

struct GateDesc {
  std::string kind = "jumprelu"; // "jumprelu" | "relu" | "topk"
  double threshold = 0.0;        // jumprelu: initial θ
  double bandwidth = 0.0;        // jumprelu: STE rectangle width ε
  int64_t k = 0;                 // topk
};

struct PenaltyDesc {
  std::string kind = "tanh"; // "tanh" | "l1"
  double c = 1.0;            // tanh only
  double lambda = 0.0;
  double warmup = 0.0; // fraction of the run over which λ ramps linearly from 0
};

/// What the bundle was compiled from.
struct ModelDesc {
  std::string kind; // "molt" | "transcoder"
  std::string name;
  int64_t d_model = 0;
  std::string dtype = "f32";
  std::vector<Bucket> buckets; // molt
  int64_t features = 0;        // transcoder
  bool skip = false;           // transcoder
  GateDesc gate;
  PenaltyDesc penalty;
  bool decoder_bias = true;

  int64_t numTransforms() const;
  /// Index of the first transform of bucket k.
  int64_t bucketOffset(size_t k) const;
};

struct InitDesc {
  std::string kind = "zeros"; // "normal" | "uniform" | "zeros" | "const"
  double value = 0.0;         // std (normal), bound (uniform), value (const)
};

/// A dimension: a number, or a symbol ("B", "P0", "P1", ...) fixed when a batch is bound.
struct Dim {
  int64_t value = 0;
  std::string symbol; // empty for a number
  bool isStatic() const { return symbol.empty(); }
};

struct ParamDesc {
  std::string name;
  std::vector<int64_t> shape;
  InitDesc init;
};

struct BufferDesc {
  std::string name;
  std::vector<Dim> shape;
  std::string dtype = "f32"; // "f32" | "i32"
};

struct LaunchConfig {
  int block[3] = {256, 1, 1};
  std::string grid[3] = {"1", "1", "1"}; // integer, B, T, P or cdiv(X,n) (docs/bundle.md)
  int64_t smem = 0;                       // dynamic shared memory, bytes
  int64_t tile_m = 0, tile_n = 0, tile_k = 0;
  int stages = 1;
  std::string split = "none";
};

struct KernelDesc {
  std::string name;
  std::string op; // kernel family, see docs/bundle.md
  std::map<std::string, AttrValue> attrs;
  std::string source; // file in the bundle, for the CUDA backend
  std::string entry;  // extern "C" symbol in source
  LaunchConfig launch;
};

struct Invocation {
  std::string kernel;                       // KernelDesc::name
  std::map<std::string, std::string> args; // op argument -> param / buffer name
};

struct Plan {
  int version = 1;
  /// "f32" or "bf16": what the CUDA kernels compute their tiles in and stream x and the
  /// weights as (docs/bundle.md, "Precision"). The CPU backend computes in fp32 either way.
  std::string precision = "f32";
  ModelDesc model;
  std::vector<ParamDesc> params;
  std::vector<BufferDesc> buffers;
  std::vector<KernelDesc> kernels;
  std::map<std::string, std::vector<Invocation>> entry_points;

  const KernelDesc *findKernel(const std::string &name) const;
  const ParamDesc *findParam(const std::string &name) const;
  const BufferDesc *findBuffer(const std::string &name) const;
};

/// A kernel's launch grid at a bound batch: each expression, in the grammar the loader checks (an
/// integer, B, T, P, Pk or cdiv(X,n)), evaluated for this plan; InvalidArgument for a dimension
/// outside 1..2^31-1 (x) or 1..65535 (y, z). The CUDA and emulator executors both launch with it.
StatusOr<std::array<unsigned, 3>> launchGrid(const Plan &plan, const LaunchConfig &launch,
                                             int64_t batch);

/// Reads and validates DIR/manifest.json.
StatusOr<Plan> loadPlan(const std::string &bundleDir);
/// Parses and validates manifest text (used by loadPlan and the fuzzers).
StatusOr<Plan> parsePlan(const std::string &manifestJson);
/// Serialises a plan (stable key order, so bundles diff cleanly).
std::string planToJson(const Plan &plan);
/// Writes DIR/manifest.json atomically (creates DIR).
Status writePlan(const Plan &plan, const std::string &bundleDir);

/// train_step in two halves, for data-parallel training (docs/distributed.md): `train_grad`
/// is train_step up to its first grad_norm (forward, loss, penalty, every d_p and the loss
/// stats) and `train_apply` the rest (grad_norm and adam). Between them the caller may change
/// the gradients and stats in place, e.g. all-reduce them across ranks. The runtime zeroes d_p
/// before train_grad as before train_step, and keeps `stats` for train_apply (it reads them).
inline constexpr const char *kTrainGradEntry = "train_grad";
inline constexpr const char *kTrainApplyEntry = "train_apply";
/// Adds both entries to a plan with a train_step (a no-op for a forward-only plan).
void addTrainPhases(Plan &plan);

} // namespace molt
