// Fuzz target: a molt spec through molt-opt's path: the pre-parse check, MLIR's parser with the
// molt verifiers, then --molt-describe on what verified.
#include "dialect/MoltOps.h"
#include "passes/Passes.h"
#include "passes/InputCheck.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"

#include <cstdint>

// MLIR's prebuilt libraries are not instrumented, but LLVM's allocator headers compiled into
// this ASan build poison the slabs they hand to those libraries, which then read them without
// unpoisoning: false use-after-poison reports. Manual poisoning is switched off instead.
extern "C" const char *__asan_default_options() { return "allow_user_poisoning=0"; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  if (molt::checkSpecText(text)) // molt-opt stops here too, before MLIR sees the text
    return 0;
  mlir::DialectRegistry registry;
  registry.insert<mlir::molt::MoltDialect, mlir::func::FuncDialect>();
  // A fresh context per input: uniqued attributes would otherwise pile up over a long run.
  mlir::MLIRContext context(registry, mlir::MLIRContext::Threading::DISABLED);
  context.getDiagEngine().registerHandler([](mlir::Diagnostic &) { return mlir::success(); });
  // molt-opt parses a file buffer, which LLVM ends with a NUL that MLIR's lexer relies on to
  // stop; a copy gives the fuzz input that terminator (the raw bytes have none).
  llvm::SourceMgr sources;
  sources.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(text, "fuzz.mlir"),
                             llvm::SMLoc());
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(sources, &context); // verifies too
  if (!module)
    return 0;
  mlir::PassManager pm(&context);
  pm.addPass(mlir::molt::createMoltDescribe());
  (void)pm.run(*module);
  return 0;
}
