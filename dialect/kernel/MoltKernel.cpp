// The `molt_k` dialect: registration and verifiers (op names, attrs and arguments checked
// against the op table, molt/ops.def).
#include "dialect/kernel/MoltKernel.h"

#include "molt/ops.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace mlir::molt_k;

#include "dialect/kernel/MoltKernelDialect.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "dialect/kernel/MoltKernelAttrs.cpp.inc"

#define GET_OP_CLASSES
#include "dialect/kernel/MoltKernelOps.cpp.inc"

void MoltKDialect::initialize() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialect/kernel/MoltKernelAttrs.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialect/kernel/MoltKernelOps.cpp.inc"
      >();
}

LogicalResult LaunchAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 DenseI64ArrayAttr block, ArrayAttr grid, int64_t smem,
                                 int64_t tileM, int64_t tileN, int64_t tileK, int64_t stages,
                                 StringRef split) {
  if (block.size() != 3 || grid.size() != 3)
    return emitError() << "block and grid need three entries each";
  int64_t threads = 1;
  for (int64_t b : block.asArrayRef()) {
    if (b < 1)
      return emitError() << "block dimension " << b << " (must be >= 1)";
    threads *= b;
  }
  if (threads > 1024)
    return emitError() << "block of " << threads << " threads (CUDA allows 1024)";
  for (Attribute g : grid)
    if (!llvm::isa<StringAttr>(g) || llvm::cast<StringAttr>(g).getValue().empty())
      return emitError() << "grid entry " << g << " is not an expression string";
  if (smem < 0 || tileM < 0 || tileN < 0 || tileK < 0 || stages < 1)
    return emitError() << "negative smem/tile or stages < 1";
  if (split != "none" && split != "k" && split != "tokens")
    return emitError() << "split '" << split << "' (expected none, k or tokens)";
  return success();
}

LogicalResult KernelOp::verify() {
  const ::molt::OpSignature *sig = ::molt::findOp(getOp().str());
  if (!sig)
    return emitOpError() << "has unknown kernel op '" << getOp() << "' (see docs/bundle.md)";
  for (NamedAttribute a : getAttrs()) {
    if (!isa<IntegerAttr, FloatAttr, StringAttr>(a.getValue()))
      return emitOpError() << "attr '" << a.getName().getValue()
                           << "' must be an integer, float or string";
    if (!sig->hasAttr(a.getName().getValue().str()))
      return emitOpError() << "attr '" << a.getName().getValue() << "' is not a constant of "
                           << getOp() << " (molt/ops.def)";
  }
  for (const std::string &name : sig->attrs)
    if (!getAttrs().get(name))
      return emitOpError() << "lacks the constant " << name << " of " << getOp();
  return success();
}

LogicalResult LaunchOp::verifySymbolUses(SymbolTableCollection &symbols) {
  auto kernel = symbols.lookupNearestSymbolFrom<KernelOp>(*this, getKernelAttr());
  if (!kernel)
    return emitOpError() << "launches unknown kernel " << getKernelAttr();
  const ::molt::OpSignature *sig = ::molt::findOp(kernel.getOp().str());
  if (!sig)
    return failure(); // the kernel's own verifier reports it
  if (getArgs().size() != sig->args.size())
    return emitOpError() << "binds " << getArgs().size() << " arguments, " << kernel.getOp()
                         << " takes " << sig->args.size();
  for (const char *arg : sig->args) {
    auto name = getArgs().getAs<StringAttr>(arg);
    if (!name || name.getValue().empty())
      return emitOpError() << "does not bind argument '" << arg << "' of " << kernel.getOp();
  }
  return success();
}
