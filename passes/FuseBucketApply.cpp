// --molt-fuse-bucket-apply: per bucket, the sparse apply chain and the Gram norms become kernels.
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTFUSEBUCKETAPPLY
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

// gather → V → scale → U → scatter-add: h and the scaled h never leave the chip.
void fuseApply(ProgramOp program, ScatterAddRowsOp scatter) {
  auto projU = writerAs<ProjectUOp>(program, scatter.in(0), scatter);
  auto scale = projU ? writerAs<ScaleRowsOp>(program, projU.in(0), projU) : nullptr;
  auto projV = scale ? writerAs<ProjectVOp>(program, scale.in(0), scale) : nullptr;
  auto gather = projV ? writerAs<GatherRowsOp>(program, projV.in(0), projV) : nullptr;
  if (!gather)
    return;
  fuseOps({gather, projV, scale, projU, scatter}, "bucket_apply",
          {{"x", gather.in(0)},
           {"u", projU.in(1)},
           {"v", projV.in(1)},
           {"pair_ptr", gather.in(1)},
           {"pair_tok", gather.in(2)},
           {"pair_gate", scale.in(1)},
           {"yhat", scatter.out(0)}});
}

// UᵀU and VVᵀ (r × r) → sqrt(trace(·)): the exact ‖U V‖_F without the d × d product.
void fuseNorm(ProgramOp program, TraceNormOp norm) {
  auto gramU = writerAs<GramOp>(program, norm.in(0), norm);
  auto gramV = writerAs<GramOp>(program, norm.in(1), norm);
  if (!gramU || !gramV || gramU.getTranspose() || !gramV.getTranspose())
    return;
  fuseOps({gramU, gramV, norm}, "frob_norm",
          {{"u", gramU.in(0)},
           {"v", gramV.in(0)},
           {"norm", norm.out(0)},
           {"gram_u", gramU.out(0)},
           {"gram_v", gramV.out(0)}});
}

struct MoltFuseBucketApplyPass : ::mlir::molt::impl::MoltFuseBucketApplyBase<MoltFuseBucketApplyPass> {
  void runOnOperation() override {
    for (ProgramOp program : getOperation().getOps<ProgramOp>()) {
      Block &body = program.getBody().front();
      for (TraceNormOp norm : llvm::to_vector(body.getOps<TraceNormOp>()))
        fuseNorm(program, norm);
      for (ScatterAddRowsOp scatter : llvm::to_vector(body.getOps<ScatterAddRowsOp>()))
        fuseApply(program, scatter);
    }
  }
};

} // namespace
