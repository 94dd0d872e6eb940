// Reverse-mode differentiation of a molt.program (see Differentiate.h).
#include "passes/Differentiate.h"

#include "passes/ProgramIR.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/StringSaver.h"

using namespace mlir;
using namespace mlir::molt;

namespace {

class Differentiator : public AdjointBuilder {
public:
  Differentiator(ModuleOp module, ProgramOp program)
      : module(module), program(program), saver(alloc),
        builder(OpBuilder::atBlockEnd(&program.getBody().front())) {
    for (Operation &op : module.getBody()->getOperations())
      if (auto decl = dyn_cast<BufferOp>(op))
        buffers[decl.getName()] = decl;
  }

  LogicalResult run(ArrayRef<StringRef> params, StringRef seed) {
    // Forward sweep: which buffers depend on a param or the input asked for (only those get
    // adjoints).
    llvm::StringSet<> dependsOnParam;
    for (StringRef p : params)
      dependsOnParam.insert(p);
    SmallVector<Operation *> forward;
    for (Operation &op : program.getBody().front()) {
      forward.push_back(&op);
      // Integer buffers (pair lists, counts) are piecewise constant: no gradient flows.
      if (llvm::any_of(tensorOpIns(&op), [&](StringRef n) { return dependsOnParam.contains(n); }))
        for (StringRef out : tensorOpOuts(&op))
          if (!buffers.count(out) || buffers[out].getDtype() == "f32")
            dependsOnParam.insert(out);
    }
    // Reverse sweep from the seed.
    hasAdjoint.insert(seed);
    for (Operation *op : llvm::reverse(forward)) {
      auto diff = dyn_cast<DifferentiableOp>(op);
      if (!diff || !llvm::any_of(tensorOpOuts(op),
                                 [&](StringRef n) { return hasAdjoint.contains(n); }))
        continue;
      current = op;
      needIn.clear();
      for (StringRef in : tensorOpIns(op))
        needIn.push_back(dependsOnParam.contains(in));
      diff.buildAdjoint(*this);
    }
    for (StringRef p : params)
      if (!hasAdjoint.contains(p))
        return program.emitError() << "'" << seed << "' does not depend on '" << p << "'";
    return success();
  }

  bool needs(unsigned i) const override { return i < needIn.size() && needIn[i]; }

  StringRef grad(StringRef name) override {
    StringRef g = saver.save("d_" + name.str());
    gradOf[g] = name;
    // Param gradients are the runtime's; other adjoints are buffers shaped like their primal.
    auto it = buffers.find(name);
    if (it != buffers.end() && !buffers.count(g)) {
      OpBuilder declBuilder(it->second);
      declBuilder.setInsertionPointAfter(it->second);
      auto decl = cast<BufferOp>(declBuilder.clone(*it->second));
      decl.setName(g);
      buffers[g] = decl;
    }
    return g;
  }

  Operation *emit(StringRef opName, ArrayRef<StringRef> ins, ArrayRef<StringRef> outs,
                  ArrayRef<NamedAttribute> attrs) override {
    for (StringRef out : outs) {
      auto it = gradOf.find(out);
      if (it != gradOf.end())
        hasAdjoint.insert(it->second);
    }
    return createTensorOp(builder, current->getLoc(), opName, ins, outs, bucketOf(current), attrs);
  }

private:
  ModuleOp module;
  ProgramOp program;
  llvm::BumpPtrAllocator alloc;
  llvm::StringSaver saver;
  OpBuilder builder;
  Operation *current = nullptr;
  SmallVector<bool> needIn;
  llvm::StringSet<> hasAdjoint;
  llvm::StringMap<StringRef> gradOf; // adjoint name -> primal name
  llvm::StringMap<BufferOp> buffers;
};

} // namespace

LogicalResult mlir::molt::appendBackward(ModuleOp module, ProgramOp program,
                                         ArrayRef<StringRef> wrt, StringRef seed) {
  return Differentiator(module, program).run(wrt, seed);
}
