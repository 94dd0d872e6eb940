// --molt-fuse-optimizer: one gradient-norm and one Adam kernel over every parameter.
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

#include "llvm/ADT/StringExtras.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTFUSEOPTIMIZER
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

struct MoltFuseOptimizerPass : ::mlir::molt::impl::MoltFuseOptimizerBase<MoltFuseOptimizerPass> {
  void runOnOperation() override {
    MLIRContext *ctx = &getContext();
    for (ProgramOp program : getOperation().getOps<ProgramOp>()) {
      Block &body = program.getBody().front();
      SmallVector<Operation *> norms, steps;
      for (Operation &op : body) {
        if (isa<GradSqNormOp>(op))
          norms.push_back(&op);
        if (isa<AdamUpdateOp>(op))
          steps.push_back(&op);
      }
      if (steps.empty())
        continue;
      // The clip factor needs the global norm, a grid-wide reduction: hence two kernels.
      SmallVector<StringRef> names;
      for (Operation *op : steps)
        names.push_back(cast<AdamUpdateOp>(op).in(0));
      StringRef list = StringAttr::get(ctx, llvm::join(names, ",")).getValue();
      if (!norms.empty())
        fuseOps(norms, "grad_norm", {{"params", list}, {"stats", "stats"}});
      fuseOps(steps, "adam", {{"params", list}, {"scalars", "scalars"}, {"stats", "stats"}});
    }
  }
};

} // namespace
