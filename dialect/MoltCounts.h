// The one place that sizes MOLT layers, transcoders and teacher MLPs (parameters, transforms,
// feature-equivalents, matched transcoder widths). Every count is overflow-checked: a
// std::nullopt result means the spec is too large to count in int64.
#ifndef MOLT_DIALECT_MOLTCOUNTS_H
#define MOLT_DIALECT_MOLTCOUNTS_H

#include "llvm/ADT/ArrayRef.h"

#include <cstdint>
#include <optional>

namespace mlir::molt {

class LayerOp;
class TranscoderOp;
class MlpOp;

/// `count` transforms of rank `rank` (the plain-number view of #molt.bucket).
struct Bucket {
  int64_t rank = 0;
  int64_t count = 0;
};

/// Sizes of a MOLT layer of width d with transforms t = 1..T:
///   encoder  T*d + T (+ T thresholds for jumprelu)
///   U, V     sum over buckets of count * 2 * d * rank
///   b_dec    d when the decoder bias is on.
struct LayerCounts {
  int64_t transforms = 0;         // T = sum of counts
  int64_t featureEquivalents = 0; // sum of count * rank
  int64_t encoderParams = 0;
  int64_t transformParams = 0;
  int64_t decoderBiasParams = 0;
  int64_t params = 0; // the sum of the three above
};

std::optional<LayerCounts> countLayer(int64_t dModel, llvm::ArrayRef<Bucket> buckets,
                                      bool jumprelu, bool decoderBias);
std::optional<LayerCounts> countLayer(LayerOp layer);

/// What a transcoder's parameter count depends on besides its width F.
struct TranscoderShape {
  int64_t dModel = 0;
  bool jumprelu = false;    // one threshold per feature
  bool skip = false;        // a d x d skip matrix
  bool decoderBias = true;  // b_dec
};

/// F*d (W_enc) + F (b_enc) + F (thresholds, jumprelu) + F*d (W_dec) + d (b_dec) + d*d (skip).
std::optional<int64_t> countTranscoderParams(const TranscoderShape &shape, int64_t features);
/// The largest F >= 1 whose transcoder has at most `budget` parameters; nullopt if none.
std::optional<int64_t> matchTranscoderFeatures(const TranscoderShape &shape, int64_t budget);
TranscoderShape getTranscoderShape(TranscoderOp transcoder);

/// d_hidden*d (W_in) + d_hidden (b_in) + d*d_hidden (W_out) + d (b_out).
std::optional<int64_t> countMlpParams(int64_t dModel, int64_t dHidden);
std::optional<int64_t> countMlpParams(MlpOp mlp);

} // namespace mlir::molt

#endif // MOLT_DIALECT_MOLTCOUNTS_H
