// Parameter, transform and feature-equivalent counts, with int64 overflow checks.
#include "dialect/MoltCounts.h"
#include "dialect/MoltOps.h"

#include "llvm/Support/CheckedArithmetic.h"

using llvm::checkedAdd;
using llvm::checkedMul;

namespace mlir::molt {

namespace {
// Threads std::nullopt through a chain of products and sums so that the formulas below
// read like the ones in the header.
struct Checked {
  std::optional<int64_t> v;
  Checked(int64_t x) : v(x) {}
  Checked(std::optional<int64_t> x) : v(x) {}
  friend Checked operator*(Checked a, Checked b) {
    return a.v && b.v ? Checked(checkedMul(*a.v, *b.v)) : Checked(std::nullopt);
  }
  friend Checked operator+(Checked a, Checked b) {
    return a.v && b.v ? Checked(checkedAdd(*a.v, *b.v)) : Checked(std::nullopt);
  }
};
} // namespace

std::optional<LayerCounts> countLayer(int64_t dModel, llvm::ArrayRef<Bucket> buckets,
                                      bool jumprelu, bool decoderBias) {
  Checked transforms = 0, featureEquivalents = 0, transformParams = 0;
  for (const Bucket &b : buckets) {
    transforms = transforms + b.count;
    featureEquivalents = featureEquivalents + Checked(b.count) * b.rank;
    transformParams = transformParams + Checked(b.count) * 2 * dModel * b.rank;
  }
  Checked encoder = transforms * dModel + transforms + (jumprelu ? transforms : Checked(0));
  Checked bias = decoderBias ? dModel : 0;
  Checked total = encoder + transformParams + bias;
  if (!total.v || !featureEquivalents.v)
    return std::nullopt;
  LayerCounts counts;
  counts.transforms = *transforms.v;
  counts.featureEquivalents = *featureEquivalents.v;
  counts.encoderParams = *encoder.v;
  counts.transformParams = *transformParams.v;
  counts.decoderBiasParams = *bias.v;
  counts.params = *total.v;
  return counts;
}

std::optional<LayerCounts> countLayer(LayerOp layer) {
  GateAttr gate = layer.getGate();
  return countLayer(layer.getDModel(), layer.getSchedule().getBucketValues(),
                    gate && gate.isJumpReLU(), layer.getDecoderBias());
}

// Parameters that do not grow with F, and those that grow by one per feature.
static Checked fixedParams(const TranscoderShape &s) {
  return Checked(s.decoderBias ? s.dModel : 0) +
         (s.skip ? Checked(s.dModel) * s.dModel : Checked(0));
}
static Checked perFeatureParams(const TranscoderShape &s) {
  return Checked(2) * s.dModel + 1 + (s.jumprelu ? 1 : 0);
}

std::optional<int64_t> countTranscoderParams(const TranscoderShape &shape, int64_t features) {
  return (Checked(features) * perFeatureParams(shape) + fixedParams(shape)).v;
}

std::optional<int64_t> matchTranscoderFeatures(const TranscoderShape &shape, int64_t budget) {
  std::optional<int64_t> fixed = fixedParams(shape).v, perFeature = perFeatureParams(shape).v;
  if (!fixed || !perFeature || *perFeature <= 0 || budget < *fixed)
    return std::nullopt;
  int64_t features = (budget - *fixed) / *perFeature;
  if (features < 1)
    return std::nullopt;
  return features;
}

TranscoderShape getTranscoderShape(TranscoderOp transcoder) {
  TranscoderShape shape;
  shape.dModel = transcoder.getDModel();
  GateAttr gate = transcoder.getActivation();
  shape.jumprelu = gate && gate.isJumpReLU();
  shape.skip = transcoder.getSkip();
  shape.decoderBias = transcoder.getDecoderBias();
  return shape;
}

std::optional<int64_t> countMlpParams(int64_t dModel, int64_t dHidden) {
  return (Checked(dHidden) * dModel * 2 + dHidden + dModel).v;
}

std::optional<int64_t> countMlpParams(MlpOp mlp) {
  return countMlpParams(mlp.getDModel(), mlp.getDHidden());
}

} // namespace mlir::molt
