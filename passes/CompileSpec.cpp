// compileSpec: parse a spec, run the default pipeline with bundle emission (see CompileSpec.h).
#include "passes/CompileSpec.h"

#include "dialect/MoltOps.h"
#include "dialect/kernel/MoltKernel.h"
#include "passes/Pipelines.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

molt::Status molt::compiler::compileSpec(const std::string &specPath, const std::string &outDir,
                                         const CompileOptions &options) {
  mlir::DialectRegistry registry;
  registry.insert<mlir::molt::MoltDialect, mlir::molt_k::MoltKDialect>();
  mlir::MLIRContext context(registry);
  context.loadAllAvailableDialects();

  // Collect diagnostics as text: the caller prints one line per error.
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(&context, [&](mlir::Diagnostic &diag) {
    if (diag.getSeverity() != mlir::DiagnosticSeverity::Error)
      return mlir::success();
    llvm::raw_string_ostream os(diagnostics);
    if (!diagnostics.empty())
      os << "\n";
    if (auto loc = llvm::dyn_cast<mlir::FileLineColLoc>(diag.getLocation()))
      os << loc.getFilename().getValue() << ":" << loc.getLine() << ":" << loc.getColumn() << ": ";
    os << diag.str();
    return mlir::success();
  });

  llvm::SourceMgr sources;
  auto file = llvm::MemoryBuffer::getFile(specPath);
  if (!file)
    return notFound("cannot read " + specPath + ": " + file.getError().message());
  sources.AddNewSourceBuffer(std::move(*file), llvm::SMLoc());
  mlir::OwningOpRef<mlir::ModuleOp> module =
      mlir::parseSourceFile<mlir::ModuleOp>(sources, &context);
  if (!module)
    return invalidArgument(diagnostics.empty() ? specPath + ": not a valid spec" : diagnostics);

  mlir::molt::MoltPipelineOptions pipeline;
  pipeline.symbol = options.symbol;
  pipeline.tuningDb = options.tuningDb;
  pipeline.outDir = outDir;
  pipeline.verifyArchs = options.verifyArchs;
  pipeline.fusionReport = options.fusionReport;
  pipeline.precision = options.precision;
  mlir::PassManager pm(&context);
  mlir::molt::buildMoltDefaultPipeline(pm, pipeline);
  if (mlir::failed(pm.run(*module)))
    return invalidArgument(diagnostics.empty() ? specPath + ": compilation failed" : diagnostics);
  return Status::ok();
}
