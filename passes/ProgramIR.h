// Helpers the program-level passes share: building tensor ops, finding writers/readers of a
// buffer, grouping ops into a molt.fused kernel, and the spec op a program was expanded from.
#ifndef MOLT_PASSES_PROGRAMIR_H
#define MOLT_PASSES_PROGRAMIR_H

#include "dialect/MoltOps.h"
#include "dialect/MoltProgramOps.h"

#include "mlir/IR/Builders.h"

#include <optional>
#include <string>

namespace mlir::molt {

ArrayAttr strArray(MLIRContext *ctx, llvm::ArrayRef<llvm::StringRef> names);

/// Marks the ops of a caller-seeded program (backward, input_grad, vjp) that repeat the
/// `forward` entry: --molt-reuse-forward drops them, so the entry reads what `forward` left.
inline constexpr llvm::StringLiteral kRecordedAttr = "recorded";
inline bool isRecorded(Operation *op) { return op->hasAttr(kRecordedAttr); }

/// Creates the tensor op `opName` at the builder's insertion point.
Operation *createTensorOp(OpBuilder &b, Location loc, llvm::StringRef opName,
                          llvm::ArrayRef<llvm::StringRef> ins, llvm::ArrayRef<llvm::StringRef> outs,
                          std::optional<int64_t> bucket = std::nullopt,
                          llvm::ArrayRef<NamedAttribute> attrs = {});

std::optional<int64_t> bucketOf(Operation *op);

/// The last top-level op of `program` (before `before`, if given) that writes `name`.
Operation *findWriter(ProgramOp program, llvm::StringRef name, Operation *before = nullptr);
/// Top-level ops of `program` that read `name`.
llvm::SmallVector<Operation *> findReaders(ProgramOp program, llvm::StringRef name);
/// The first op named `opName` anywhere in `program` (fused bodies included) writing `name`.
Operation *findWriterAnywhere(ProgramOp program, llvm::StringRef name, llvm::StringRef opName);

/// The last writer of `name` before `before` if it is an OpT, else null.
template <typename OpT>
OpT writerAs(ProgramOp program, llvm::StringRef name, Operation *before) {
  return llvm::dyn_cast_or_null<OpT>(findWriter(program, name, before));
}
/// The first top-level OpT of `program` that reads `name`, else null.
template <typename OpT> OpT readerAs(ProgramOp program, llvm::StringRef name) {
  for (Operation *op : findReaders(program, name))
    if (auto typed = llvm::dyn_cast<OpT>(op))
      return typed;
  return nullptr;
}

/// Moves `group` (top-level ops of one program) into a new molt.fused op placed where the
/// last of them was; `recompute` ops are cloned into the body first (forward values the
/// kernel recomputes on chip instead of reading from memory). The fused op is recorded when
/// every op of `group` is.
FusedOp fuseOps(llvm::ArrayRef<Operation *> group, llvm::StringRef kernel,
                llvm::ArrayRef<std::pair<llvm::StringRef, llvm::StringRef>> args,
                llvm::ArrayRef<Operation *> recompute = {});

/// The spec op (molt.layer / molt.transcoder) a program was expanded from.
Operation *specOf(ProgramOp program);

} // namespace mlir::molt

#endif // MOLT_PASSES_PROGRAMIR_H
