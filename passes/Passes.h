// Declarations and registration of molt's passes (generated from passes/Passes.td).
#ifndef MOLT_PASSES_PASSES_H
#define MOLT_PASSES_PASSES_H

#include "dialect/MoltOps.h"

#include "mlir/Pass/Pass.h"

#include <memory>

namespace mlir::molt {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

} // namespace mlir::molt

#endif // MOLT_PASSES_PASSES_H
