// molt-opt: parses, verifies, transforms and prints molt specs (mlir-opt with molt registered).
#include "dialect/MoltOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  mlir::molt::registerMoltPasses();
  mlir::DialectRegistry registry;
  registry.insert<mlir::molt::MoltDialect, mlir::func::FuncDialect>();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "molt-opt: molt spec optimizer driver\n", registry));
}
