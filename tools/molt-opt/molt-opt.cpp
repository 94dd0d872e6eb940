// molt-opt: parses, verifies, transforms and prints molt specs (mlir-opt with molt registered).
#include "dialect/MoltOps.h"
#include "dialect/kernel/MoltKernel.h"
#include "passes/InputCheck.h"
#include "passes/Passes.h"
#include "passes/Pipelines.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

int main(int argc, char **argv) {
  mlir::registerTransformsPasses();
  mlir::molt::registerMoltPasses();
  mlir::molt::registerMoltPipelines();
  mlir::DialectRegistry registry;
  registry.insert<mlir::molt::MoltDialect, mlir::molt_k::MoltKDialect, mlir::func::FuncDialect>();
  auto [input, output] = mlir::registerAndParseCLIOptions(
      argc, argv, "molt-opt: parse, verify, transform and print molt specs\n", registry);
  // A spec error names the field and points at the line; the whole op again in generic form
  // ("see current operation") only buries it. Still available on request.
  auto &options = llvm::cl::getRegisteredOptions();
  auto *printOp =
      static_cast<llvm::cl::opt<bool> *>(options.lookup("mlir-print-op-on-diagnostic"));
  if (printOp && printOp->getNumOccurrences() == 0)
    printOp->setValue(false);
  // Standard input cannot be read twice, so only files get the pre-parse checks.
  if (input != "-") {
    std::string why;
    std::unique_ptr<llvm::MemoryBuffer> file = mlir::openInputFile(input, &why);
    if (!file) {
      llvm::errs() << "molt-opt: error: " << why << "\n";
      return 1;
    }
    if (std::optional<molt::SpecTextProblem> p = molt::checkSpecText(file->getBuffer())) {
      llvm::errs() << input << ":" << p->line << ":" << p->col << ": error: " << p->message << "\n";
      return 1;
    }
  }
  return mlir::asMainReturnCode(mlir::MlirOptMain(argc, argv, input, output, registry));
}
