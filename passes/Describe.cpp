// --molt-describe: the sizes of every molt spec op (all counts from MoltCounts.h), collected
// once into molt::compiler::SpecFacts, which prints them as the table or as JSON; the compiler
// facade (CompileSpec.cpp) returns the same facts to tools.
#include "passes/Passes.h"

#include "llvm/Support/Format.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTDESCRIBE
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;
using ::molt::compiler::BucketFacts;
using ::molt::compiler::LayerFacts;
using ::molt::compiler::MlpFacts;
using ::molt::compiler::SpecFacts;
using ::molt::compiler::TranscoderFacts;

namespace {

std::string typeName(Type type) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << type;
  return s;
}

const char *onOff(bool on) { return on ? "on" : "off"; }

/// The fields a layer and a transcoder share.
template <typename Op>
void fillShared(Op op, GateAttr gate, ::molt::compiler::SparseOpFacts &f) {
  f.symbol = op.getSymName().str();
  f.dModel = op.getDModel();
  f.elementType = typeName(op.getElementType());
  f.gate = stringifyGateKind(gate.getKind()).str();
  f.penalty = stringifyPenaltyKind(op.getPenalty().getKind()).str();
  f.lambda = op.getPenalty().getLambdaValue();
  f.decoderBias = op.getDecoderBias();
}

// The verifier has checked that every count fits in int64, so the optionals hold values.
LayerFacts facts(LayerOp layer) {
  LayerFacts f;
  fillShared(layer, layer.getGate(), f);
  for (const Bucket &b : layer.getSchedule().getBucketValues()) {
    LayerCounts bucket =
        *countLayer(layer.getDModel(), b, /*jumprelu=*/false, /*decoderBias=*/false);
    f.buckets.push_back({b.rank, b.count, bucket.featureEquivalents, bucket.transformParams});
  }
  LayerCounts total = *countLayer(layer);
  f.transforms = total.transforms;
  f.featureEquivalents = total.featureEquivalents;
  f.params = total.params;
  f.encoderParams = total.encoderParams;
  f.transformParams = total.transformParams;
  f.decoderBiasParams = total.decoderBiasParams;
  return f;
}

TranscoderFacts facts(TranscoderOp transcoder, SymbolTableCollection &symbols) {
  TranscoderFacts f;
  GateAttr gate = transcoder.getActivation();
  fillShared(transcoder, gate, f);
  f.k = gate.getKind() == GateKind::topk ? gate.getK() : 0;
  f.skip = transcoder.getSkip();
  f.features = *transcoder.getFeatureCount(&symbols);
  f.params = *countTranscoderParams(getTranscoderShape(transcoder), f.features);
  if (LayerOp layer = transcoder.getMatchedLayer(&symbols)) {
    f.matchedLayer = layer.getSymName().str();
    f.matchedParams = countLayer(layer)->params;
  }
  return f;
}

MlpFacts facts(MlpOp mlp) {
  return {mlp.getSymName().str(), mlp.getDModel(), mlp.getDHidden(), mlp.getActivation().str(),
          *countMlpParams(mlp)};
}

struct DescribePass : mlir::molt::impl::MoltDescribeBase<DescribePass> {
  using MoltDescribeBase::MoltDescribeBase;
  void runOnOperation() override {
    if (format != "text" && format != "json") {
      getOperation().emitError("--molt-describe: unknown format '") << format
                                                                    << "' (expected text or json)";
      return signalPassFailure();
    }
    SpecFacts all = describeModule(getOperation());
    llvm::outs() << (format == "json" ? all.toJson() + "\n" : all.toText());
    llvm::outs().flush();
    markAllAnalysesPreserved();
  }
};

} // namespace

SpecFacts mlir::molt::describeModule(ModuleOp module) {
  SymbolTableCollection symbols;
  SpecFacts all;
  for (Operation &op : module.getBody()->getOperations()) {
    if (auto layer = dyn_cast<LayerOp>(op))
      all.layers.push_back(facts(layer));
    else if (auto transcoder = dyn_cast<TranscoderOp>(op))
      all.transcoders.push_back(facts(transcoder, symbols));
    else if (auto mlp = dyn_cast<MlpOp>(op))
      all.mlps.push_back(facts(mlp));
  }
  return all;
}

const LayerFacts *SpecFacts::findLayer(const std::string &symbol) const {
  const std::string name = !symbol.empty() && symbol[0] == '@' ? symbol.substr(1) : symbol;
  for (const LayerFacts &l : layers)
    if (name.empty() || l.symbol == name)
      return &l;
  return nullptr;
}

std::string SpecFacts::toText() const {
  std::string s;
  llvm::raw_string_ostream os(s);
  for (const LayerFacts &l : layers) {
    os << "molt.layer @" << l.symbol << ": d_model = " << l.dModel << ", " << l.elementType
       << ", " << l.gate << ", " << l.penalty << " penalty, decoder bias " << onOff(l.decoderBias)
       << "\n";
    os << "      rank    count     features     U,V params\n";
    for (const BucketFacts &b : l.buckets)
      os << llvm::format("  %8lld %8lld %12lld %14lld\n", (long long)b.rank, (long long)b.count,
                         (long long)b.featureEquivalents, (long long)b.transformParams);
    os << "  transforms " << l.transforms << ", feature-equivalents " << l.featureEquivalents
       << ", parameters " << l.params << " (encoder " << l.encoderParams << ", transforms "
       << l.transformParams << ", decoder bias " << l.decoderBiasParams << ")\n";
  }
  for (const TranscoderFacts &t : transcoders) {
    os << "molt.transcoder @" << t.symbol << ": d_model = " << t.dModel << ", " << t.elementType
       << ", " << t.gate;
    if (t.gate == "topk")
      os << " k = " << t.k;
    os << ", " << t.penalty << " penalty, skip " << onOff(t.skip) << ", decoder bias "
       << onOff(t.decoderBias) << "\n";
    os << "  features " << t.features << ", parameters " << t.params;
    if (!t.matchedLayer.empty())
      os << " (matched to @" << t.matchedLayer << ": "
         << llvm::format("%.4f", double(t.params) / double(t.matchedParams)) << " of its "
         << t.matchedParams << ")";
    os << "\n";
  }
  for (const MlpFacts &m : mlps)
    os << "molt.mlp @" << m.symbol << ": d_model = " << m.dModel << ", d_hidden = " << m.dHidden
       << ", " << m.activation << "\n"
       << "  parameters " << m.params << "\n";
  return s;
}

namespace {

void sharedJson(llvm::json::OStream &j, const ::molt::compiler::SparseOpFacts &f) {
  j.attribute("symbol", f.symbol);
  j.attribute("d_model", f.dModel);
  j.attribute("element_type", f.elementType);
  j.attribute("gate", f.gate);
  j.attribute("penalty", f.penalty);
  j.attribute("lambda", f.lambda);
  j.attribute("decoder_bias", f.decoderBias);
}

} // namespace

std::string SpecFacts::toJson() const {
  std::string s;
  llvm::raw_string_ostream os(s);
  llvm::json::OStream j(os);
  j.object([&] {
    j.attributeArray("layers", [&] {
      for (const LayerFacts &l : layers)
        j.object([&] {
          sharedJson(j, l);
          j.attributeArray("buckets", [&] {
            for (const BucketFacts &b : l.buckets)
              j.object([&] {
                j.attribute("rank", b.rank);
                j.attribute("count", b.count);
                j.attribute("feature_equivalents", b.featureEquivalents);
                j.attribute("transform_params", b.transformParams);
              });
          });
          j.attribute("transforms", l.transforms);
          j.attribute("feature_equivalents", l.featureEquivalents);
          j.attribute("params", l.params);
          j.attribute("encoder_params", l.encoderParams);
          j.attribute("transform_params", l.transformParams);
          j.attribute("decoder_bias_params", l.decoderBiasParams);
        });
    });
    j.attributeArray("transcoders", [&] {
      for (const TranscoderFacts &t : transcoders)
        j.object([&] {
          sharedJson(j, t);
          if (t.gate == "topk")
            j.attribute("k", t.k);
          j.attribute("skip", t.skip);
          j.attribute("features", t.features);
          j.attribute("params", t.params);
          if (!t.matchedLayer.empty()) {
            j.attribute("matched_layer", t.matchedLayer);
            j.attribute("matched_params", t.matchedParams);
          }
        });
    });
    j.attributeArray("mlps", [&] {
      for (const MlpFacts &m : mlps)
        j.object([&] {
          j.attribute("symbol", m.symbol);
          j.attribute("d_model", m.dModel);
          j.attribute("d_hidden", m.dHidden);
          j.attribute("activation", m.activation);
          j.attribute("params", m.params);
        });
    });
  });
  return s;
}
