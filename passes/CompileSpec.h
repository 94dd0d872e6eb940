// The compiler as plain C++ calls (no MLIR types): a spec, optionally with a layer's rank
// schedule replaced, in; its counts, a rewritten spec or a compiled bundle out. molt-compile,
// molt-train, molt-tune and the Python module call these instead of running molt-opt.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "molt/status.h"

namespace molt::compiler {

/// A spec's text and the name diagnostics give it (its path, or e.g. "<spec>").
struct Spec {
  std::string text;
  std::string name = "<spec>";
};

/// Reads a spec file (the name is the path).
StatusOr<Spec> readSpec(const std::string &path);

/// Replaces a molt.layer's rank schedule: counts[i] transforms of rank ranks[i].
struct RankSchedule {
  std::string layer; // "@name" or "name"; empty: the spec's first molt.layer
  std::vector<int64_t> ranks, counts;
};

/// One rank bucket of a layer, as --molt-describe prints it.
struct BucketFacts {
  int64_t rank = 0, count = 0, featureEquivalents = 0, transformParams = 0;
};

/// What a molt.layer and a molt.transcoder share.
struct SparseOpFacts {
  std::string symbol; // without '@'
  int64_t dModel = 0;
  std::string elementType, gate, penalty; // e.g. "f32", "jumprelu", "tanh"
  double lambda = 0;                      // the penalty's weight
  bool decoderBias = false;
};

struct LayerFacts : SparseOpFacts {
  std::vector<BucketFacts> buckets;
  int64_t transforms = 0, featureEquivalents = 0, params = 0;
  int64_t encoderParams = 0, transformParams = 0, decoderBiasParams = 0;
};

struct TranscoderFacts : SparseOpFacts {
  int64_t k = 0; // topk only
  bool skip = false;
  int64_t features = 0, params = 0; // features: computed from the matched layer when matched
  std::string matchedLayer;         // "" when the width is given
  int64_t matchedParams = 0;        // the matched layer's parameters
};

struct MlpFacts {
  std::string symbol;
  int64_t dModel = 0, dHidden = 0;
  std::string activation;
  int64_t params = 0;
};

/// What `molt-opt --molt-describe` reports about every spec op, in module order per kind; all
/// numbers from dialect/MoltCounts.h.
struct SpecFacts {
  std::vector<LayerFacts> layers;
  std::vector<TranscoderFacts> transcoders;
  std::vector<MlpFacts> mlps;
  /// The layer named `symbol` (with or without '@'; empty: the first), or nullptr.
  const LayerFacts *findLayer(const std::string &symbol = "") const;
  std::string toText() const; // the --molt-describe table
  std::string toJson() const; // --molt-describe=format=json (docs/spec.md)
};

struct CompileOptions {
  std::string symbol;        // spec op to compile ("@molt"); empty: the first layer, else transcoder
  std::string tuningDb;      // launch configurations to prefer (JSON); empty: the heuristic
  std::string verifyArchs;   // e.g. "sm_80,sm_90a": compile every kernel with NVRTC
  bool fusionReport = false; // print the kernels before and after fusion on stdout
  std::string precision = "f32"; // "bf16": bf16 tensor-core tiles and bf16 streamed storage
  std::optional<RankSchedule> schedule; // set a layer's schedule before compiling
};

// Every call below checks the text before MLIR parses it (blank input, brackets nested past
// what the parser's recursion survives) and verifies the spec; an error is one line
// "name:line:col: cause", the first error when there are several.

/// Counts of every spec op, after `schedule` (when given) replaced a layer's.
StatusOr<SpecFacts> describeSpec(const Spec &spec,
                                 const std::optional<RankSchedule> &schedule = std::nullopt);

/// The spec printed by the dialect with the layer's schedule replaced (comments are not kept).
StatusOr<std::string> rescheduleSpec(const Spec &spec, const RankSchedule &schedule);

/// Compiles the spec into a bundle in `outDir`.
Status compileSpec(const Spec &spec, const std::string &outDir, const CompileOptions &options = {});
/// The same, reading the spec from `specPath`.
Status compileSpec(const std::string &specPath, const std::string &outDir,
                   const CompileOptions &options = {});

} // namespace molt::compiler
