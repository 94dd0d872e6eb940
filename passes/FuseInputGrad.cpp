// --molt-fuse-input-grad: the input gradient's derived ops become the input-gradient kernels.
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTFUSEINPUTGRAD
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

// Per bucket, d_x += Σ_pairs g·V_tᵀ(U_tᵀ d_yhat[tok]): gather → project_u_t → scale_rows →
// project_v_t → scatter_add_rows, with the rowdot that gives the gates' gradients. With the
// params' gradients too (project_u_grad, project_v_grad) the whole bucket backward is one
// kernel, bucket_apply_bwd_dx; alone it is bucket_apply_dx. h = V_t x is recomputed on chip.
void fuseApplyInputGrad(ProgramOp program, ScatterAddRowsOp scatterX) {
  auto projVT = writerAs<ProjectVTOp>(program, scatterX.in(0), scatterX);
  auto scale = projVT ? writerAs<ScaleRowsOp>(program, projVT.in(0), projVT) : nullptr;
  auto projUT = scale ? writerAs<ProjectUTOp>(program, scale.in(0), scale) : nullptr;
  auto gather = projUT ? writerAs<GatherRowsOp>(program, projUT.in(0), projUT) : nullptr;
  auto dgate = scale ? readerAs<RowDotOp>(program, scale.in(0)) : nullptr;
  if (!gather || !dgate)
    return;
  auto fwdProjV = findWriterAnywhere(program, dgate.in(0), ProjectVOp::getOperationName());
  auto fwdGather = fwdProjV ? findWriterAnywhere(program, cast<ProjectVOp>(fwdProjV).in(0),
                                                 GatherRowsOp::getOperationName())
                            : nullptr;
  if (!fwdGather)
    return;
  StringRef x = cast<GatherRowsOp>(fwdGather).in(0);
  StringRef v = cast<ProjectVOp>(fwdProjV).in(1);
  auto du = readerAs<ProjectUGradOp>(program, gather.out(0));
  auto dv = readerAs<ProjectVGradOp>(program, scale.out(0));
  auto fwdScale = du ? findWriterAnywhere(program, du.in(1), ScaleRowsOp::getOperationName())
                     : nullptr;
  // bucket_apply_dx's arguments; the fused kernel adds the params' gradients.
  SmallVector<std::pair<StringRef, StringRef>> args = {{"d_yhat", gather.in(0)},
                                                       {"x", x},
                                                       {"u", projUT.in(1)},
                                                       {"v", v},
                                                       {"pair_ptr", gather.in(1)},
                                                       {"pair_tok", gather.in(2)},
                                                       {"pair_gate", scale.in(1)},
                                                       {"d_x", scatterX.out(0)},
                                                       {"pair_dgate", dgate.out(0)}};
  if (du && dv && fwdScale) {
    args.append({{"d_u", du.out(0)}, {"d_v", dv.out(0)}});
    fuseOps({gather, projUT, du, scale, dgate, dv, projVT, scatterX}, "bucket_apply_bwd_dx",
            args, /*recompute=*/{fwdGather, fwdProjV, fwdScale});
    return;
  }
  if (du || dv)
    return; // a partial parameter backward: left to --molt-fuse-backward, which will refuse it
  fuseOps({gather, projUT, scale, dgate, projVT, scatterX}, "bucket_apply_dx", args,
          /*recompute=*/{fwdGather, fwdProjV});
}

// The gate term d_x[tok] += φ'(pre)·d_g·enc_w_t over the listed pairs: scatter_pairs →
// gate_grad → accumulate → linear_t_grad_x, never the dense [B, T] product. Where the encoder's
// own gradients read the same chain (--molt-fuse-backward's gate_bwd), the chain is cloned
// into this kernel rather than moved.
void fuseGateInputGrad(ProgramOp program, LinearTGradXOp dx, bool transcoder) {
  auto acc = writerAs<AccumulateOp>(program, dx.in(0), dx);
  auto gg = acc ? writerAs<GateGradOp>(program, acc.in(0), acc) : nullptr;
  auto scatter = gg ? writerAs<ScatterPairsOp>(program, gg.in(2), gg) : nullptr;
  auto compact = scatter ? findWriterAnywhere(program, scatter.in(1), CompactOp::getOperationName())
                         : nullptr;
  if (!scatter || !compact)
    return;
  const bool shared = findReaders(program, acc.out(0)).size() > 1 ||
                      findReaders(program, gg.out(0)).size() > 1;
  SmallVector<Operation *> group = {dx}, recompute;
  (shared ? recompute : group).append({scatter, gg, acc});
  fuseOps(group, transcoder ? "tc_encode_bwd_dx" : "gate_bwd_dx",
          {{"enc_w", dx.in(1)},
           {"theta", gg.in(1)},
           {"pair_ptr", scatter.in(1)},
           {"pair_tok", scatter.in(2)},
           {"pair_pre", cast<CompactOp>(compact).out(3)},
           {"pair_gate", cast<CompactOp>(compact).out(2)},
           {"pair_dgate", scatter.in(0)},
           {"d_x", dx.out(0)}},
          recompute);
}

struct MoltFuseInputGradPass : ::mlir::molt::impl::MoltFuseInputGradBase<MoltFuseInputGradPass> {
  void runOnOperation() override {
    for (ProgramOp program : getOperation().getOps<ProgramOp>()) {
      Block &body = program.getBody().front();
      bool transcoder = isa_and_nonnull<TranscoderOp>(specOf(program));
      for (ScatterAddRowsOp s : llvm::to_vector(body.getOps<ScatterAddRowsOp>()))
        fuseApplyInputGrad(program, s);
      for (LinearTGradXOp dx : llvm::to_vector(body.getOps<LinearTGradXOp>()))
        fuseGateInputGrad(program, dx, transcoder);
    }
  }
};

} // namespace
