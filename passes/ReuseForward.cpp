// --molt-reuse-forward: the caller-seeded programs drop the forward they repeat (see Passes.td).
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTREUSEFORWARD
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

// An op's identity for this check: its name and attributes, the `recorded` mark aside.
bool sameOp(Operation *a, Operation *b) {
  if (a->getName() != b->getName())
    return false;
  NamedAttrList left(a->getAttrDictionary()), right(b->getAttrDictionary());
  left.erase(kRecordedAttr);
  right.erase(kRecordedAttr);
  return left.getDictionary(a->getContext()) == right.getDictionary(b->getContext());
}

struct MoltReuseForwardPass : ::mlir::molt::impl::MoltReuseForwardBase<MoltReuseForwardPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    ProgramOp forward = nullptr;
    for (ProgramOp p : module.getOps<ProgramOp>())
      if (p.getEntry() == "forward")
        forward = p;
    for (ProgramOp program : module.getOps<ProgramOp>()) {
      SmallVector<Operation *> recorded;
      for (Operation &op : program.getBody().front())
        if (isRecorded(&op))
          recorded.push_back(&op);
      if (recorded.empty())
        continue;
      if (!forward || program == forward) {
        program.emitError() << "has recorded ops but no `forward` program to follow";
        return signalPassFailure();
      }
      for (Operation *op : recorded) {
        bool found = llvm::any_of(forward.getBody().front(),
                                  [&](Operation &f) { return sameOp(&f, op); });
        if (!found) {
          op->emitError() << "is recorded but the `forward` program has no such op";
          return signalPassFailure();
        }
      }
      for (Operation *op : recorded)
        op->erase();
    }
  }
};

} // namespace
