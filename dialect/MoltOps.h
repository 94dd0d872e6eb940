// The spec ops of the `molt` dialect: molt.layer, molt.transcoder, molt.mlp.
#ifndef MOLT_DIALECT_MOLTOPS_H
#define MOLT_DIALECT_MOLTOPS_H

#include "dialect/MoltAttrs.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

#define GET_OP_CLASSES
#include "dialect/MoltOps.h.inc"

#endif // MOLT_DIALECT_MOLTOPS_H
