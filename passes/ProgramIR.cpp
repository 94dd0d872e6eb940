// Helpers the program-level passes share (see ProgramIR.h).
#include "passes/ProgramIR.h"

#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/STLExtras.h"

using namespace mlir;
using namespace mlir::molt;

ArrayAttr mlir::molt::strArray(MLIRContext *ctx, ArrayRef<StringRef> names) {
  SmallVector<Attribute> attrs;
  for (StringRef n : names)
    attrs.push_back(StringAttr::get(ctx, n));
  return ArrayAttr::get(ctx, attrs);
}

Operation *mlir::molt::createTensorOp(OpBuilder &b, Location loc, StringRef opName,
                                      ArrayRef<StringRef> ins, ArrayRef<StringRef> outs,
                                      std::optional<int64_t> bucket,
                                      ArrayRef<NamedAttribute> attrs) {
  OperationState state(loc, opName);
  state.addAttribute("ins", strArray(b.getContext(), ins));
  state.addAttribute("outs", strArray(b.getContext(), outs));
  if (bucket)
    state.addAttribute("bucket", b.getI64IntegerAttr(*bucket));
  state.addAttributes(attrs);
  return b.create(state);
}

std::optional<int64_t> mlir::molt::bucketOf(Operation *op) {
  if (auto b = op->getAttrOfType<IntegerAttr>("bucket"))
    return b.getInt();
  return std::nullopt;
}

Operation *mlir::molt::findWriter(ProgramOp program, StringRef name, Operation *before) {
  Operation *last = nullptr;
  for (Operation &op : program.getBody().front()) {
    if (&op == before)
      break;
    if (llvm::is_contained(tensorOpOuts(&op), name))
      last = &op;
  }
  return last;
}

SmallVector<Operation *> mlir::molt::findReaders(ProgramOp program, StringRef name) {
  SmallVector<Operation *> readers;
  for (Operation &op : program.getBody().front())
    if (llvm::is_contained(tensorOpIns(&op), name))
      readers.push_back(&op);
  return readers;
}

Operation *mlir::molt::findWriterAnywhere(ProgramOp program, StringRef name, StringRef opName) {
  Operation *found = nullptr;
  program.walk([&](Operation *op) {
    if (!found && op->getName().getStringRef() == opName &&
        llvm::is_contained(tensorOpOuts(op), name))
      found = op;
  });
  return found;
}

FusedOp mlir::molt::fuseOps(ArrayRef<Operation *> group, StringRef kernel,
                            ArrayRef<std::pair<StringRef, StringRef>> args,
                            ArrayRef<Operation *> recompute) {
  SmallVector<Operation *> ordered(group.begin(), group.end());
  llvm::sort(ordered, [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
  MLIRContext *ctx = ordered.front()->getContext();
  OpBuilder b(ordered.back());
  SmallVector<NamedAttribute> argAttrs;
  for (auto [arg, buffer] : args)
    argAttrs.push_back(NamedAttribute(StringAttr::get(ctx, arg), StringAttr::get(ctx, buffer)));
  auto fused = b.create<FusedOp>(ordered.back()->getLoc(), b.getStringAttr(kernel),
                                 DictionaryAttr::get(ctx, argAttrs), DictionaryAttr(),
                                 IntegerAttr());
  if (auto bucket = bucketOf(ordered.back()))
    fused.setBucketAttr(b.getI64IntegerAttr(*bucket));
  if (llvm::all_of(ordered, isRecorded))
    fused->setAttr(kRecordedAttr, b.getUnitAttr());
  Block *body = new Block();
  fused.getBody().push_back(body);
  OpBuilder inner = OpBuilder::atBlockEnd(body);
  for (Operation *op : recompute)
    inner.clone(*op);
  for (Operation *op : ordered)
    op->moveBefore(body, body->end());
  return fused;
}

Operation *mlir::molt::specOf(ProgramOp program) {
  return SymbolTable::lookupNearestSymbolFrom(program, program.getSpecAttr());
}
