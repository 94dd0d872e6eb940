// --molt-fuse-backward: the derived backward ops become the backward kernels of docs/bundle.md.
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTFUSEBACKWARD
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

// A loss and its gradient read the same inputs: one kernel computes both.
template <typename LossOp, typename GradOp>
void fuseLoss(ProgramOp program, GradOp grad, StringRef kernel,
              ArrayRef<StringRef> inArgs, ArrayRef<StringRef> outArgs) {
  LossOp loss = nullptr;
  for (LossOp candidate : program.getBody().front().getOps<LossOp>())
    if (candidate.getIns() == grad.getIns())
      loss = candidate;
  if (!loss)
    return;
  SmallVector<std::pair<StringRef, StringRef>> args;
  for (auto [i, arg] : llvm::enumerate(inArgs))
    args.push_back({arg, grad.in(i)});
  for (auto [i, arg] : llvm::enumerate(outArgs))
    args.push_back({arg, grad.out(i)});
  args.push_back({"stats", loss.out(0)});
  fuseOps({loss, grad}, kernel, args);
}

// d_yhat gathered per pair → Uᵀ → gate → d_V, with d_U and d_gate on the way. The forward
// h = V x and g·h are recomputed in the kernel (cloned forward ops), never stored.
void fuseApplyBackward(ProgramOp program, ProjectVGradOp dv) {
  auto scale = writerAs<ScaleRowsOp>(program, dv.in(0), dv);
  auto projUT = scale ? writerAs<ProjectUTOp>(program, scale.in(0), scale) : nullptr;
  auto gather = projUT ? writerAs<GatherRowsOp>(program, projUT.in(0), projUT) : nullptr;
  auto du = projUT ? readerAs<ProjectUGradOp>(program, projUT.in(0)) : nullptr;
  auto dgate = scale ? readerAs<RowDotOp>(program, scale.in(0)) : nullptr;
  if (!gather || !du || !dgate)
    return;
  auto fwdGather = findWriterAnywhere(program, dv.in(1), GatherRowsOp::getOperationName());
  auto fwdProjV = findWriterAnywhere(program, dgate.in(0), ProjectVOp::getOperationName());
  auto fwdScale = findWriterAnywhere(program, du.in(1), ScaleRowsOp::getOperationName());
  if (!fwdGather || !fwdProjV || !fwdScale)
    return;
  auto gatherIn = [&](unsigned i) { return cast<GatherRowsOp>(fwdGather).in(i); };
  fuseOps({gather, projUT, du, scale, dgate, dv}, "bucket_apply_bwd",
          {{"d_yhat", gather.in(0)},
           {"x", gatherIn(0)},
           {"u", projUT.in(1)},
           {"v", cast<ProjectVOp>(fwdProjV).in(1)},
           {"pair_ptr", gather.in(1)},
           {"pair_tok", gather.in(2)},
           {"pair_gate", scale.in(1)},
           {"d_u", du.out(0)},
           {"d_v", dv.out(0)},
           {"pair_dgate", dgate.out(0)}},
          /*recompute=*/{fwdGather, fwdProjV, fwdScale});
}

// d_norm → d_gram_u, d_gram_v → d_U = (d_n/n)·U·gram_v, d_V = (d_n/n)·gram_u·V.
void fuseNormBackward(ProgramOp program, TraceNormGradOp tg) {
  auto gu = readerAs<GramGradOp>(program, tg.out(0));
  auto gv = readerAs<GramGradOp>(program, tg.out(1));
  if (!gu || !gv)
    return;
  fuseOps({tg, gu, gv}, "frob_norm_bwd",
          {{"d_norm", tg.in(0)},
           {"norm", tg.in(1)},
           {"u", gu.in(0)},
           {"v", gv.in(0)},
           {"gram_u", tg.in(2)},
           {"gram_v", tg.in(3)},
           {"d_u", gu.out(0)},
           {"d_v", gv.out(0)}});
}

// d_pair_gate → dense d_g → through the gate → encoder weight, bias and threshold gradients.
void fuseGateBackward(ProgramOp program, LinearTGradWOp dw, bool transcoder) {
  auto acc = writerAs<AccumulateOp>(program, dw.in(0), dw);
  auto gg = acc ? writerAs<GateGradOp>(program, acc.in(0), acc) : nullptr;
  auto scatter = gg ? writerAs<ScatterPairsOp>(program, gg.in(2), gg) : nullptr;
  auto db = gg ? readerAs<ColSumOp>(program, gg.out(0)) : nullptr;
  auto compact = scatter ? findWriterAnywhere(program, scatter.in(1), CompactOp::getOperationName())
                         : nullptr;
  if (!scatter || !db || !compact)
    return;
  StringRef theta = gg.in(1);
  // Without a JumpReLU there is no θ: the kernel writes its gradient into the dummy.
  StringRef dTheta = theta == "theta_unused" ? theta : gg.out(1);
  fuseOps({scatter, gg, acc, db, dw}, transcoder ? "tc_encode_bwd" : "gate_bwd",
          {{"x", dw.in(1)},
           {"theta", theta},
           {"pair_ptr", scatter.in(1)},
           {"pair_tok", scatter.in(2)},
           {"pair_pre", cast<CompactOp>(compact).out(3)},
           {"pair_gate", cast<CompactOp>(compact).out(2)},
           {"pair_dgate", scatter.in(0)},
           {"d_enc_w", dw.out(0)},
           {"d_enc_b", db.out(0)},
           {"d_theta", dTheta}});
}

struct MoltFuseBackwardPass : ::mlir::molt::impl::MoltFuseBackwardBase<MoltFuseBackwardPass> {
  void runOnOperation() override {
    for (ProgramOp program : getOperation().getOps<ProgramOp>()) {
      Block &body = program.getBody().front();
      bool transcoder = isa_and_nonnull<TranscoderOp>(specOf(program));
      for (MseGradOp g : llvm::to_vector(body.getOps<MseGradOp>()))
        fuseLoss<MseLossOp>(program, g, "mse_loss", {"yhat", "y"}, {"d_yhat"});
      for (PenaltyGradOp g : llvm::to_vector(body.getOps<PenaltyGradOp>()))
        fuseLoss<PenaltyOp>(program, g, "penalty", {"pair_ptr", "pair_gate", "norm", "scalars"},
                            {"pair_dgate", "d_norm"});
      for (FeaturePenaltyGradOp g : llvm::to_vector(body.getOps<FeaturePenaltyGradOp>()))
        fuseLoss<FeaturePenaltyOp>(program, g, "tc_penalty",
                                   {"pair_ptr", "pair_gate", "dec_w", "scalars"},
                                   {"pair_dgate", "d_dec_w"});
      for (ProjectVGradOp dv : llvm::to_vector(body.getOps<ProjectVGradOp>()))
        fuseApplyBackward(program, dv);
      for (TraceNormGradOp tg : llvm::to_vector(body.getOps<TraceNormGradOp>()))
        fuseNormBackward(program, tg);
      for (LinearTGradWOp dw : llvm::to_vector(body.getOps<LinearTGradWOp>()))
        fuseGateBackward(program, dw, transcoder);
    }
  }
};

} // namespace
