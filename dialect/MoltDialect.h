// The `molt` dialect class and its kind enums (gate, penalty, activation).
#ifndef MOLT_DIALECT_MOLTDIALECT_H
#define MOLT_DIALECT_MOLTDIALECT_H

#include "mlir/IR/Dialect.h"

#include "dialect/MoltDialect.h.inc"
#include "dialect/MoltEnums.h.inc"

#endif // MOLT_DIALECT_MOLTDIALECT_H
