// Reverse-mode differentiation of a molt.program: walks its ops backwards and asks each for its
// gradient rule (DifferentiableOp), so no backward program is written by hand.
#ifndef MOLT_PASSES_DIFFERENTIATE_H
#define MOLT_PASSES_DIFFERENTIATE_H

#include "dialect/MoltProgramOps.h"

#include "mlir/IR/BuiltinOps.h"

namespace mlir::molt {

/// Appends the backward of `program`'s ops to it. The seed is the buffer `seed` whose adjoint
/// d_<seed> the program is given: "stats", the loss the ops accumulate into, or "yhat" for a
/// vector-Jacobian product with a caller's d_yhat. The result is d_<w> for every name in `wrt`
/// (params, or the input "x") that the seed depends on; it is an error when one does not.
/// Adjoint buffers get molt.buffer declarations shaped like their primal.
LogicalResult appendBackward(ModuleOp module, ProgramOp program, ArrayRef<StringRef> wrt,
                             StringRef seed = "stats");

} // namespace mlir::molt

#endif // MOLT_PASSES_DIFFERENTIATE_H
