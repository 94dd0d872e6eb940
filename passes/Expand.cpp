// --molt-expand: a spec op becomes params, buffers and forward / eval / train_step / jvp programs,
// and the caller-seeded backward / input_grad / vjp programs.
#include "passes/Differentiate.h"
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

#include <cmath>

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTEXPAND
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

/// Initial gain of every U_t (std = kUInitGain / sqrt(rank)); see its use in expandLayer.
constexpr double kUInitGain = 0.1;

/// Builds declarations and program bodies at the end of the module.
class ProgramBuilder {
public:
  ProgramBuilder(ModuleOp module, Operation *spec)
      : module(module), spec(spec), b(module.getContext()), loc(spec->getLoc()) {
    b.setInsertionPointToEnd(module.getBody());
  }

  // Dimensions: integers or the symbols of MoltProgramOps.td.
  Attribute dim(StringRef symbol) { return b.getStringAttr(symbol); }
  Attribute dim(int64_t n) { return b.getI64IntegerAttr(n); }

  void param(StringRef name, ArrayRef<Attribute> shape, StringRef init, double scale,
             std::optional<int64_t> bucket = std::nullopt) {
    auto op = b.create<ParamOp>(loc, b.getStringAttr(name), b.getArrayAttr(shape),
                                b.getStringAttr(init), b.getF64FloatAttr(scale), IntegerAttr());
    if (bucket)
      op.setBucketAttr(b.getI64IntegerAttr(*bucket));
    params.push_back(op.getName());
  }

  void buffer(StringRef name, ArrayRef<Attribute> shape, StringRef dtype = "f32",
              std::optional<int64_t> bucket = std::nullopt) {
    auto op = b.create<BufferOp>(loc, name, b.getArrayAttr(shape), dtype, IntegerAttr());
    if (bucket)
      op.setBucketAttr(b.getI64IntegerAttr(*bucket));
  }

  ProgramOp program(StringRef entry) {
    OpBuilder::InsertionGuard guard(b);
    auto op = b.create<ProgramOp>(loc, b.getStringAttr(entry),
                                  SymbolRefAttr::get(cast<SymbolOpInterface>(spec).getNameAttr()));
    op.getBody().push_back(new Block());
    return op;
  }

  /// Appends a tensor op to `into`.
  void op(ProgramOp into, StringRef name, ArrayRef<StringRef> ins, ArrayRef<StringRef> outs,
          std::optional<int64_t> bucket = std::nullopt, ArrayRef<NamedAttribute> attrs = {}) {
    OpBuilder inner = OpBuilder::atBlockEnd(&into.getBody().front());
    createTensorOp(inner, loc, name, ins, outs, bucket, attrs);
  }

  NamedAttribute attr(StringRef name, Attribute value) {
    return NamedAttribute(b.getStringAttr(name), value);
  }

  /// forward; eval = forward + losses; train_step = eval + the derived backward + gradient
  /// norm and Adam over all params (the same for every trainable spec kind). `forward(p,
  /// norms)` appends the forward ops; with `norms` also what only the penalty reads (the
  /// transforms' Gram norms), which the `forward` entry does without.
  ///
  /// Then the vector-Jacobian products a caller seeds with d_yhat (PyTorch's autograd):
  /// `backward` (every d_p), `input_grad` (d_x, the gates held at their values plus the
  /// gates' own slope) and `vjp` (both in one pass). Each is the `forward` entry's ops,
  /// marked `recorded`, then their derived reverse; --molt-reuse-forward later drops the
  /// recorded ops, so these entries read what the `forward` entry left (the pair lists).
  LogicalResult buildEntryPoints(llvm::function_ref<void(ProgramOp, bool)> forward,
                                 llvm::function_ref<void(ProgramOp)> losses) {
    forward(program("forward"), /*norms=*/false);
    ProgramOp eval = program("eval");
    forward(eval, /*norms=*/true);
    losses(eval);
    ProgramOp train = program("train_step");
    forward(train, /*norms=*/true);
    losses(train);
    if (failed(appendBackward(module, train, params)))
      return failure();
    auto grad = [&](StringRef p) { return b.getStringAttr("d_" + p.str()).getValue(); };
    for (StringRef p : params)
      op(train, GradSqNormOp::getOperationName(), {grad(p)}, {"stats"});
    for (StringRef p : params)
      op(train, AdamUpdateOp::getOperationName(), {p, grad(p), "scalars", "stats"}, {p});

    SmallVector<StringRef> withInput(params.begin(), params.end());
    withInput.push_back("x");
    const std::pair<StringRef, SmallVector<StringRef>> vjps[] = {
        {"backward", SmallVector<StringRef>(params.begin(), params.end())},
        {"input_grad", {"x"}},
        {"vjp", withInput}};
    for (const auto &[entry, wrt] : vjps) {
      ProgramOp p = program(entry);
      forward(p, /*norms=*/false);
      for (Operation &fwd : p.getBody().front())
        fwd.setAttr(kRecordedAttr, b.getUnitAttr());
      if (failed(appendBackward(module, p, wrt, "yhat")))
        return failure();
    }
    return success();
  }

  ModuleOp module;
  Operation *spec;
  OpBuilder b;
  Location loc;
  SmallVector<StringRef> params; // declaration order = the optimiser's and checkpoint's order
};

// Attributes the gate and compaction ops share.
SmallVector<NamedAttribute> gateAttrs(ProgramBuilder &pb, GateAttr gate) {
  bool jump = gate.isJumpReLU();
  StringRef kind = stringifyGateKind(gate.getKind());
  return {pb.attr("kind", pb.b.getStringAttr(kind)),
          pb.attr("bandwidth", pb.b.getF64FloatAttr(jump ? gate.getBandwidthValue() : 0.0)),
          pb.attr("k", pb.b.getI64IntegerAttr(gate.getKind() == GateKind::topk ? gate.getK() : 0))};
}

SmallVector<NamedAttribute> penaltyAttrs(ProgramBuilder &pb, PenaltyAttr penalty) {
  return {pb.attr("kind", pb.b.getStringAttr(stringifyPenaltyKind(penalty.getKind()))),
          pb.attr("c", pb.b.getF64FloatAttr(penalty.getCValue()))};
}

/// x -> pre = x·enc_wᵀ ± enc_b -> g = φ(pre) -> pair lists: the encoder both spec kinds share.
void buildEncoder(ProgramBuilder &pb, ProgramOp p, GateAttr gate, bool negateBias) {
  StringRef theta = gate.isJumpReLU() ? "theta" : "theta_unused";
  SmallVector<NamedAttribute> bias;
  if (negateBias)
    bias.push_back(pb.attr("negate", pb.b.getUnitAttr()));
  SmallVector<NamedAttribute> g = gateAttrs(pb, gate);
  pb.op(p, LinearTOp::getOperationName(), {"x", "enc_w"}, {"pre_lin"});
  pb.op(p, BiasColsOp::getOperationName(), {"pre_lin", "enc_b"}, {"pre"}, std::nullopt, bias);
  pb.op(p, GateOp::getOperationName(), {"pre", theta}, {"g"}, std::nullopt, g);
  pb.op(p, CompactOp::getOperationName(), {"g", "pre"},
        {"pair_ptr", "pair_tok", "pair_gate", "pair_pre", "pair_count"}, std::nullopt,
        {g[0], g[1]});
}

void declareCommonBuffers(ProgramBuilder &pb, StringRef width, GateAttr gate) {
  for (StringRef name : {"x", "y", "yhat"})
    pb.buffer(name, {pb.dim("B"), pb.dim("D")});
  pb.buffer("scalars", {pb.dim(8)});
  pb.buffer("stats", {pb.dim(16)});
  for (StringRef name : {"pre_lin", "pre", "g"})
    pb.buffer(name, {pb.dim("B"), pb.dim(width)});
  pb.buffer("pair_ptr", {pb.dim((width + "+1").str())}, "i32");
  pb.buffer("pair_tok", {pb.dim("P")}, "i32");
  pb.buffer("pair_gate", {pb.dim("P")});
  pb.buffer("pair_pre", {pb.dim("P")});
  pb.buffer("pair_count", {pb.dim(1)}, "i32");
  if (!gate.isJumpReLU())
    pb.buffer("theta_unused", {pb.dim(1)});
}

/// The `jvp` entry's own buffers: the tangent x_dot, the output y_dot = J(x)·x_dot and the
/// tangents of the listed pairs' gate values.
void declareJvpBuffers(ProgramBuilder &pb) {
  pb.buffer("x_dot", {pb.dim("B"), pb.dim("D")});
  pb.buffer("y_dot", {pb.dim("B"), pb.dim("D")});
  pb.buffer("pair_tan", {pb.dim("P")});
}

/// jvp: the encoder on x (so the open pairs and their gates are the forward's), then the
/// gates' tangents along x_dot; the caller appends the decoder terms into y_dot.
ProgramOp buildJvpPrologue(ProgramBuilder &pb, GateAttr gate, bool negateBias) {
  ProgramOp p = pb.program("jvp");
  buildEncoder(pb, p, gate, negateBias);
  pb.op(p, PairTangentOp::getOperationName(),
        {"x_dot", "enc_w", "pair_ptr", "pair_tok", "pair_gate"}, {"pair_tan"});
  return p;
}

LogicalResult expandLayer(ModuleOp module, LayerOp layer) {
  ProgramBuilder pb(module, layer);
  const double d = double(layer.getDModel());
  SmallVector<Bucket> buckets = layer.getSchedule().getBucketValues();
  GateAttr gate = layer.getGate();
  auto name = [&](StringRef stem, size_t k) {
    return pb.b.getStringAttr(stem + std::to_string(k)).getValue();
  };

  pb.param("enc_w", {pb.dim("T"), pb.dim("D")}, "normal", 1.0 / std::sqrt(d));
  pb.param("enc_b", {pb.dim("T")}, "zeros", 0.0);
  if (gate.isJumpReLU())
    pb.param("theta", {pb.dim("T")}, "const", gate.getThresholdValue());
  for (auto [k, bucket] : llvm::enumerate(buckets)) {
    // U starts 10x below unit gain (std 0.1/sqrt(r)): at unit gain each open transform maps x
    // to a random vector as large as x, the reconstruction loss then shuts the gates, and MOLTs
    // collapse to L0 < 1 on MiniLM activations (docs/results.md measured both scales).
    pb.param(name("u", k), {pb.dim("N"), pb.dim("D"), pb.dim("R")}, "normal",
             kUInitGain / std::sqrt(double(bucket.rank)), k);
    pb.param(name("v", k), {pb.dim("N"), pb.dim("R"), pb.dim("D")}, "normal", 1.0 / std::sqrt(d), k);
  }
  if (layer.getDecoderBias())
    pb.param("dec_b", {pb.dim("D")}, "zeros", 0.0);

  declareCommonBuffers(pb, "T", gate);
  pb.buffer("norm", {pb.dim("T")});
  for (size_t k = 0; k < buckets.size(); ++k) {
    pb.buffer(name("gram_u", k), {pb.dim("N"), pb.dim("R"), pb.dim("R")}, "f32", k);
    pb.buffer(name("gram_v", k), {pb.dim("N"), pb.dim("R"), pb.dim("R")}, "f32", k);
    pb.buffer(name("xg", k), {pb.dim("P"), pb.dim("D")}, "f32", k);
    pb.buffer(name("h", k), {pb.dim("P"), pb.dim("R")}, "f32", k);
    pb.buffer(name("hs", k), {pb.dim("P"), pb.dim("R")}, "f32", k);
    pb.buffer(name("c", k), {pb.dim("P"), pb.dim("D")}, "f32", k);
  }

  // out += Σ_pairs scale · U_t V_t src[tok] over bucket k's listed pairs.
  auto apply = [&](ProgramOp p, size_t k, StringRef src, StringRef scale, StringRef out) {
    pb.op(p, GatherRowsOp::getOperationName(), {src, "pair_ptr", "pair_tok"}, {name("xg", k)}, k);
    pb.op(p, ProjectVOp::getOperationName(), {name("xg", k), name("v", k)}, {name("h", k)}, k);
    pb.op(p, ScaleRowsOp::getOperationName(), {name("h", k), scale}, {name("hs", k)}, k);
    pb.op(p, ProjectUOp::getOperationName(), {name("hs", k), name("u", k)}, {name("c", k)}, k);
    pb.op(p, ScatterAddRowsOp::getOperationName(), {name("c", k), "pair_ptr", "pair_tok"}, {out},
          k);
  };
  auto forward = [&](ProgramOp p, bool norms) {
    buildEncoder(pb, p, gate, /*negateBias=*/true);
    for (size_t k = 0; norms && k < buckets.size(); ++k) {
      pb.op(p, GramOp::getOperationName(), {name("u", k)}, {name("gram_u", k)}, k);
      pb.op(p, GramOp::getOperationName(), {name("v", k)}, {name("gram_v", k)}, k,
            {pb.attr("transpose", pb.b.getUnitAttr())});
      pb.op(p, TraceNormOp::getOperationName(), {name("gram_u", k), name("gram_v", k)}, {"norm"}, k);
    }
    for (size_t k = 0; k < buckets.size(); ++k)
      apply(p, k, "x", "pair_gate", "yhat");
    if (layer.getDecoderBias())
      pb.op(p, AddBiasOp::getOperationName(), {"dec_b"}, {"yhat"});
  };
  auto losses = [&](ProgramOp p) {
    pb.op(p, MseLossOp::getOperationName(), {"yhat", "y"}, {"stats"});
    pb.op(p, PenaltyOp::getOperationName(), {"pair_ptr", "pair_gate", "norm", "scalars"},
          {"stats"}, std::nullopt, penaltyAttrs(pb, layer.getPenalty()));
  };

  if (failed(pb.buildEntryPoints(forward, losses)))
    return failure();
  // ẏ = Σ_open [ g_t U_tV_t ẋ + (e_t·ẋ) U_tV_t x ]: the same sparse apply twice.
  declareJvpBuffers(pb);
  ProgramOp jvp = buildJvpPrologue(pb, gate, /*negateBias=*/true);
  for (size_t k = 0; k < buckets.size(); ++k) {
    apply(jvp, k, "x_dot", "pair_gate", "y_dot");
    apply(jvp, k, "x", "pair_tan", "y_dot");
  }
  return success();
}

LogicalResult expandTranscoder(ModuleOp module, TranscoderOp tc) {
  FailureOr<int64_t> features = tc.getFeatureCount();
  if (failed(features))
    return tc.emitError() << "has no feature count (its matched layer is missing or too small)";
  ProgramBuilder pb(module, tc);
  const double d = double(tc.getDModel());
  GateAttr gate = tc.getActivation();

  pb.param("enc_w", {pb.dim("F"), pb.dim("D")}, "normal", 1.0 / std::sqrt(d));
  pb.param("enc_b", {pb.dim("F")}, "zeros", 0.0);
  if (gate.isJumpReLU())
    pb.param("theta", {pb.dim("F")}, "const", gate.getThresholdValue());
  pb.param("dec_w", {pb.dim("F"), pb.dim("D")}, "normal", 1.0 / std::sqrt(double(*features)));
  if (tc.getSkip())
    pb.param("skip_w", {pb.dim("D"), pb.dim("D")}, "zeros", 0.0);
  if (tc.getDecoderBias())
    pb.param("dec_b", {pb.dim("D")}, "zeros", 0.0);
  declareCommonBuffers(pb, "F", gate);

  auto forward = [&](ProgramOp p, bool) { // a transcoder's penalty reads no extra forward
    buildEncoder(pb, p, gate, /*negateBias=*/false);
    pb.op(p, DecodeRowsOp::getOperationName(), {"pair_ptr", "pair_tok", "pair_gate", "dec_w"},
          {"yhat"});
    if (tc.getSkip())
      pb.op(p, SkipApplyOp::getOperationName(), {"x", "skip_w"}, {"yhat"});
    if (tc.getDecoderBias())
      pb.op(p, AddBiasOp::getOperationName(), {"dec_b"}, {"yhat"});
  };
  auto losses = [&](ProgramOp p) {
    pb.op(p, MseLossOp::getOperationName(), {"yhat", "y"}, {"stats"});
    pb.op(p, FeaturePenaltyOp::getOperationName(), {"pair_ptr", "pair_gate", "dec_w", "scalars"},
          {"stats"}, std::nullopt, penaltyAttrs(pb, tc.getPenalty()));
  };

  if (failed(pb.buildEntryPoints(forward, losses)))
    return failure();
  // ẏ = Σ_open (e_f·ẋ) dec_w_f + skip_w ẋ: the decoder applied to the activations' tangents.
  declareJvpBuffers(pb);
  ProgramOp jvp = buildJvpPrologue(pb, gate, /*negateBias=*/false);
  pb.op(jvp, DecodeRowsOp::getOperationName(), {"pair_ptr", "pair_tok", "pair_tan", "dec_w"},
        {"y_dot"});
  if (tc.getSkip())
    pb.op(jvp, SkipApplyOp::getOperationName(), {"x_dot", "skip_w"}, {"y_dot"});
  return success();
}

/// The teacher: a forward program only (its weights come from a file; it is never trained).
LogicalResult expandMlp(ModuleOp module, MlpOp mlp) {
  ProgramBuilder pb(module, mlp);
  const int64_t h = mlp.getDHidden();
  pb.param("w_in", {pb.dim(h), pb.dim("D")}, "zeros", 0.0);
  pb.param("b_in", {pb.dim(h)}, "zeros", 0.0);
  pb.param("w_out", {pb.dim("D"), pb.dim(h)}, "zeros", 0.0);
  pb.param("b_out", {pb.dim("D")}, "zeros", 0.0);
  pb.buffer("x", {pb.dim("B"), pb.dim("D")});
  pb.buffer("yhat", {pb.dim("B"), pb.dim("D")});
  for (StringRef name : {"t_pre_lin", "t_pre", "t_h"})
    pb.buffer(name, {pb.dim("B"), pb.dim(h)});
  pb.buffer("t_out_lin", {pb.dim("B"), pb.dim("D")});
  ProgramOp p = pb.program("forward");
  pb.op(p, LinearTOp::getOperationName(), {"x", "w_in"}, {"t_pre_lin"});
  pb.op(p, BiasColsOp::getOperationName(), {"t_pre_lin", "b_in"}, {"t_pre"});
  pb.op(p, ActivationOp::getOperationName(), {"t_pre"}, {"t_h"}, std::nullopt,
        {pb.attr("kind", pb.b.getStringAttr(mlp.getActivation()))});
  pb.op(p, LinearTOp::getOperationName(), {"t_h", "w_out"}, {"t_out_lin"});
  pb.op(p, BiasColsOp::getOperationName(), {"t_out_lin", "b_out"}, {"yhat"});
  return success();
}

struct MoltExpandPass : ::mlir::molt::impl::MoltExpandBase<MoltExpandPass> {
  using MoltExpandBase::MoltExpandBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    Operation *spec = nullptr;
    if (!symbol.empty()) {
      StringRef name = StringRef(symbol).ltrim('@');
      spec = SymbolTable::lookupSymbolIn(module, name);
      if (!spec) {
        module.emitError() << "no spec op @" << name << " in the module";
        return signalPassFailure();
      }
    } else {
      for (Operation &op : module.getBody()->getOperations())
        if (isa<LayerOp>(op) && !spec)
          spec = &op;
      for (Operation &op : module.getBody()->getOperations())
        if (isa<TranscoderOp>(op) && !spec)
          spec = &op;
      if (!spec) {
        module.emitError() << "no molt.layer or molt.transcoder to expand";
        return signalPassFailure();
      }
    }
    if (!module.getOps<ProgramOp>().empty()) {
      module.emitError() << "is already expanded (it has molt.program ops)";
      return signalPassFailure();
    }
    LogicalResult result = failure();
    if (auto layer = dyn_cast<LayerOp>(spec))
      result = expandLayer(module, layer);
    else if (auto tc = dyn_cast<TranscoderOp>(spec))
      result = expandTranscoder(module, tc);
    else if (auto mlp = dyn_cast<MlpOp>(spec))
      result = expandMlp(module, mlp);
    else
      spec->emitOpError() << "is not a spec op (molt.layer, molt.transcoder or molt.mlp)";
    if (failed(result))
      signalPassFailure();
  }
};

} // namespace
