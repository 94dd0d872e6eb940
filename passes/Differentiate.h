// Reverse-mode differentiation of a molt.program: walks its ops backwards and asks each for its
// gradient rule (DifferentiableOp), so no backward program is written by hand.
#ifndef MOLT_PASSES_DIFFERENTIATE_H
#define MOLT_PASSES_DIFFERENTIATE_H

#include "dialect/MoltProgramOps.h"

#include "mlir/IR/BuiltinOps.h"

namespace mlir::molt {

/// Appends the backward of `program`'s ops to it. The seed is the loss the ops accumulate
/// into "stats"; the result is d_<p> for every param in `params` that the loss depends on.
/// Adjoint buffers get molt.buffer declarations shaped like their primal.
LogicalResult appendBackward(ModuleOp module, ProgramOp program, ArrayRef<StringRef> params);

} // namespace mlir::molt

#endif // MOLT_PASSES_DIFFERENTIATE_H
