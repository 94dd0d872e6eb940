// The `molt_k` kernel-level dialect: kernels with launch configuration, and entry points.
#ifndef MOLT_DIALECT_KERNEL_MOLTKERNEL_H
#define MOLT_DIALECT_KERNEL_MOLTKERNEL_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/SymbolTable.h"

#include "dialect/kernel/MoltKernelDialect.h.inc"

#define GET_ATTRDEF_CLASSES
#include "dialect/kernel/MoltKernelAttrs.h.inc"

#define GET_OP_CLASSES
#include "dialect/kernel/MoltKernelOps.h.inc"

#endif // MOLT_DIALECT_KERNEL_MOLTKERNEL_H
