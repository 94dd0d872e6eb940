// --molt-fusion-report: the kernels each program would launch, one line per top-level op.
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

#include "llvm/Support/raw_ostream.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTFUSIONREPORT
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

struct MoltFusionReportPass : ::mlir::molt::impl::MoltFusionReportBase<MoltFusionReportPass> {
  using MoltFusionReportBase::MoltFusionReportBase;

  void runOnOperation() override {
    llvm::raw_ostream &os = llvm::outs();
    for (ProgramOp program : getOperation().getOps<ProgramOp>()) {
      Block &body = program.getBody().front();
      os << "fusion report" << (label.empty() ? "" : " (" + label + ")") << ": "
         << program.getEntry() << ", " << body.getOperations().size() << " kernels\n";
      for (Operation &op : body) {
        std::optional<int64_t> bucket = bucketOf(&op);
        std::string where = bucket ? "[" + std::to_string(*bucket) + "]" : "";
        if (auto fused = dyn_cast<FusedOp>(op)) {
          os << "  " << fused.getKernel() << where << " <- ";
          const char *separator = "";
          for (Operation &inner : fused.getBody().front()) {
            os << separator << inner.getName().stripDialect();
            separator = " + ";
          }
          os << "\n";
        } else {
          os << "  " << op.getName().stripDialect() << where << " (unfused)\n";
        }
      }
    }
    markAllAnalysesPreserved();
  }
};

} // namespace
