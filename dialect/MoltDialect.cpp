// Registers the `molt` dialect's attributes and ops.
#include "dialect/MoltOps.h"
#include "dialect/MoltProgramOps.h"

using namespace mlir;
using namespace mlir::molt;

#include "dialect/MoltDialect.cpp.inc"
#include "dialect/MoltEnums.cpp.inc"

void MoltDialect::initialize() {
  registerAttributes();
  addOperations<
#define GET_OP_LIST
#include "dialect/MoltOps.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "dialect/MoltProgramOps.cpp.inc"
      >();
}
