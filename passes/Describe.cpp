// --molt-describe: prints the sizes of every molt spec op (all counts from MoltCounts.h).
#include "passes/Passes.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTDESCRIBE
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

const char *onOff(bool on) { return on ? "on" : "off"; }

void describe(LayerOp layer, raw_ostream &os) {
  os << "molt.layer @" << layer.getSymName() << ": d_model = " << layer.getDModel() << ", "
     << layer.getElementType() << ", " << stringifyGateKind(layer.getGate().getKind()) << ", "
     << stringifyPenaltyKind(layer.getPenalty().getKind()) << " penalty, decoder bias "
     << onOff(layer.getDecoderBias()) << "\n";
  // The verifier has checked that every count fits in int64.
  os << "      rank    count     features     U,V params\n";
  for (const Bucket &b : layer.getSchedule().getBucketValues()) {
    LayerCounts bucket =
        *countLayer(layer.getDModel(), b, /*jumprelu=*/false, /*decoderBias=*/false);
    os << llvm::format("  %8lld %8lld %12lld %14lld\n", (long long)b.rank, (long long)b.count,
                       (long long)bucket.featureEquivalents, (long long)bucket.transformParams);
  }
  LayerCounts total = *countLayer(layer);
  os << "  transforms " << total.transforms << ", feature-equivalents "
     << total.featureEquivalents << ", parameters " << total.params << " (encoder "
     << total.encoderParams << ", transforms " << total.transformParams << ", decoder bias "
     << total.decoderBiasParams << ")\n";
}

void describe(TranscoderOp transcoder, SymbolTableCollection &symbols, raw_ostream &os) {
  int64_t features = *transcoder.getFeatureCount(&symbols);
  GateAttr gate = transcoder.getActivation();
  os << "molt.transcoder @" << transcoder.getSymName() << ": d_model = "
     << transcoder.getDModel() << ", " << transcoder.getElementType() << ", "
     << stringifyGateKind(gate.getKind());
  if (gate.getKind() == GateKind::topk)
    os << " k = " << gate.getK();
  os << ", " << stringifyPenaltyKind(transcoder.getPenalty().getKind()) << " penalty, skip "
     << onOff(transcoder.getSkip()) << ", decoder bias " << onOff(transcoder.getDecoderBias())
     << "\n";
  int64_t params = *countTranscoderParams(getTranscoderShape(transcoder), features);
  os << "  features " << features << ", parameters " << params;
  if (LayerOp layer = transcoder.getMatchedLayer(&symbols)) {
    int64_t budget = countLayer(layer)->params;
    os << " (matched to @" << layer.getSymName() << ": "
       << llvm::format("%.4f", double(params) / double(budget)) << " of its " << budget << ")";
  }
  os << "\n";
}

void describe(MlpOp mlp, raw_ostream &os) {
  os << "molt.mlp @" << mlp.getSymName() << ": d_model = " << mlp.getDModel()
     << ", d_hidden = " << mlp.getDHidden() << ", " << mlp.getActivation() << "\n"
     << "  parameters " << *countMlpParams(mlp) << "\n";
}

struct DescribePass : molt::impl::MoltDescribeBase<DescribePass> {
  void runOnOperation() override {
    SymbolTableCollection symbols;
    raw_ostream &os = llvm::outs();
    for (Operation &op : getOperation().getBody()->getOperations()) {
      if (auto layer = dyn_cast<LayerOp>(op))
        describe(layer, os);
      else if (auto transcoder = dyn_cast<TranscoderOp>(op))
        describe(transcoder, symbols, os);
      else if (auto mlp = dyn_cast<MlpOp>(op))
        describe(mlp, os);
    }
    os.flush();
    markAllAnalysesPreserved();
  }
};

} // namespace
