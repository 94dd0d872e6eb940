// molt-opt: parses, verifies, transforms and prints molt specs (mlir-opt with molt registered).
#include "dialect/MoltOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

// MLIR reads an empty file as an empty module; for a spec that is always a mistake (a wrong
// path, a truncated copy), so say so with a location. Standard input is left to MlirOptMain.
static bool isBlankFile(llvm::StringRef path) {
  if (path == "-")
    return false;
  std::unique_ptr<llvm::MemoryBuffer> file = mlir::openInputFile(path);
  if (!file)
    return false; // MlirOptMain reports the open error
  for (llvm::StringRef line : llvm::split(file->getBuffer(), '\n')) {
    line = line.trim();
    if (!line.empty() && !line.starts_with("//"))
      return false;
  }
  return true;
}

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  mlir::molt::registerMoltPasses();
  mlir::DialectRegistry registry;
  registry.insert<mlir::molt::MoltDialect, mlir::func::FuncDialect>();
  auto [input, output] = mlir::registerAndParseCLIOptions(
      argc, argv, "molt-opt: parse, verify, transform and print molt specs\n", registry);
  if (isBlankFile(input)) {
    llvm::errs() << input << ":1:1: error: empty input: expected a module of molt spec ops\n";
    return 1;
  }
  return mlir::asMainReturnCode(mlir::MlirOptMain(argc, argv, input, output, registry));
}
