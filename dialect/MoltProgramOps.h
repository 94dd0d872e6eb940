// The program ops of the `molt` dialect (tensor level) and the AdjointBuilder their gradient rules use.
#ifndef MOLT_DIALECT_MOLTPROGRAMOPS_H
#define MOLT_DIALECT_MOLTPROGRAMOPS_H

#include "dialect/MoltDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/Operation.h"

namespace mlir::molt {

/// What a gradient rule sees: which inputs need gradients, the adjoint buffer of any name, and
/// a way to emit gradient ops. passes/Differentiate.cpp implements it; the rules live beside
/// the ops (dialect/MoltProgramOps.cpp) so each op's gradient is written once.
class AdjointBuilder {
public:
  virtual ~AdjointBuilder() = default;
  /// Whether input `i` of the op being differentiated needs a gradient.
  virtual bool needs(unsigned i) const = 0;
  /// The buffer holding the adjoint of `name` ("d_<name>").
  virtual llvm::StringRef grad(llvm::StringRef name) = 0;
  /// Appends op `opName` (with the differentiated op's bucket) to the backward program.
  virtual Operation *emit(llvm::StringRef opName, llvm::ArrayRef<llvm::StringRef> ins,
                          llvm::ArrayRef<llvm::StringRef> outs,
                          llvm::ArrayRef<NamedAttribute> attrs = {}) = 0;

  template <typename OpT>
  Operation *emit(llvm::ArrayRef<llvm::StringRef> ins, llvm::ArrayRef<llvm::StringRef> outs,
                  llvm::ArrayRef<NamedAttribute> attrs = {}) {
    return emit(OpT::getOperationName(), ins, outs, attrs);
  }
};

/// The shared verifier of tensor ops: `ins`/`outs` have the op's arity and no empty name.
LogicalResult verifyTensorOpArity(Operation *op, unsigned numIns, unsigned numOuts);

/// Reads the `ins` / `outs` names of any tensor op (empty for other ops).
llvm::SmallVector<llvm::StringRef> tensorOpIns(Operation *op);
llvm::SmallVector<llvm::StringRef> tensorOpOuts(Operation *op);

} // namespace mlir::molt

#include "dialect/MoltProgramInterfaces.h.inc"

#define GET_OP_CLASSES
#include "dialect/MoltProgramOps.h.inc"

#endif // MOLT_DIALECT_MOLTPROGRAMOPS_H
