// Declarations and registration of molt's passes (generated from passes/Passes.td).
#ifndef MOLT_PASSES_PASSES_H
#define MOLT_PASSES_PASSES_H

#include "dialect/MoltOps.h"
#include "passes/CompileSpec.h"

#include "mlir/Pass/Pass.h"

#include <memory>

namespace mlir::molt {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

/// The counts --molt-describe prints, of every spec op in `module` (Describe.cpp).
::molt::compiler::SpecFacts describeModule(ModuleOp module);

} // namespace mlir::molt

#endif // MOLT_PASSES_PASSES_H
