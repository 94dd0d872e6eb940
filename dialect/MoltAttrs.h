// Attributes of the `molt` dialect: #molt.bucket, #molt.schedule, #molt.gate, #molt.penalty.
#ifndef MOLT_DIALECT_MOLTATTRS_H
#define MOLT_DIALECT_MOLTATTRS_H

#include "dialect/MoltCounts.h"
#include "dialect/MoltDialect.h"

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/APFloat.h"

#include <string>

#define GET_ATTRDEF_CLASSES
#include "dialect/MoltAttrs.h.inc"

namespace mlir::molt {
/// The shortest decimal spelling of `value` that parses back to the same double, always
/// with a '.' so that MLIR reads it as a float ("nan"/"inf" for non-finite values).
std::string formatFloat(const llvm::APFloat &value);
} // namespace mlir::molt

#endif // MOLT_DIALECT_MOLTATTRS_H
