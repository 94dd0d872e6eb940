// The compiler facade (CompileSpec.h): parse a spec with the pre-parse check, replace a layer's
// schedule through the dialect, then describe it, print it or run the default pipeline.
#include "passes/CompileSpec.h"

#include "dialect/MoltOps.h"
#include "dialect/kernel/MoltKernel.h"
#include "passes/InputCheck.h"
#include "passes/Passes.h"
#include "passes/Pipelines.h"

#include "molt/io.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>

namespace molt::compiler {
namespace {

mlir::DialectRegistry moltDialects() {
  mlir::DialectRegistry registry;
  registry.insert<mlir::molt::MoltDialect, mlir::molt_k::MoltKDialect>();
  return registry;
}

/// One MLIR context whose error diagnostics are kept as "file:line:col: message" lines, so a
/// failure becomes one Status line (the first error, and how many followed).
class Session {
public:
  Session() : context_(moltDialects()) {
    context_.loadAllAvailableDialects();
    handler_.emplace(&context_, [this](mlir::Diagnostic &diag) {
      if (diag.getSeverity() != mlir::DiagnosticSeverity::Error)
        return mlir::success();
      std::string line;
      llvm::raw_string_ostream os(line);
      if (auto loc = llvm::dyn_cast<mlir::FileLineColLoc>(diag.getLocation()))
        os << loc.getFilename().getValue() << ":" << loc.getLine() << ":" << loc.getColumn()
           << ": ";
      os << diag.str();
      std::replace(line.begin(), line.end(), '\n', ' ');
      errors_.push_back(line);
      return mlir::success();
    });
  }

  mlir::MLIRContext &context() { return context_; }

  /// The first error seen (or `fallback` when MLIR reported none) as one line.
  Status failure(const std::string &fallback) const {
    if (errors_.empty())
      return invalidArgument(fallback);
    std::string message = errors_.front();
    if (errors_.size() > 1)
      message += " (and " + std::to_string(errors_.size() - 1) + " more error" +
                 (errors_.size() > 2 ? "s" : "") + ")";
    return invalidArgument(message);
  }

  /// Checks, parses and verifies the spec.
  StatusOr<mlir::OwningOpRef<mlir::ModuleOp>> parse(const Spec &spec) {
    if (std::optional<SpecTextProblem> p = checkSpecText(spec.text))
      return invalidArgument(spec.name + ":" + std::to_string(p->line) + ":" +
                             std::to_string(p->col) + ": " + p->message);
    llvm::SourceMgr sources; // parseSourceFile copies what it keeps (locations are uniqued)
    sources.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(spec.text, spec.name),
                               llvm::SMLoc());
    mlir::OwningOpRef<mlir::ModuleOp> module =
        mlir::parseSourceFile<mlir::ModuleOp>(sources, &context_);
    if (!module)
      return failure(spec.name + ": not a valid spec");
    return module;
  }

  /// Replaces the layer's schedule attribute and re-verifies the module.
  Status reschedule(mlir::ModuleOp module, const Spec &spec, const RankSchedule &schedule) {
    const std::string name = !schedule.layer.empty() && schedule.layer[0] == '@'
                                 ? schedule.layer.substr(1)
                                 : schedule.layer;
    mlir::molt::LayerOp layer;
    for (auto op : module.getOps<mlir::molt::LayerOp>())
      if (name.empty() || op.getSymName() == name) {
        layer = op;
        break;
      }
    if (!layer)
      return invalidArgument(spec.name + ": no molt.layer" + (name.empty() ? "" : " @" + name) +
                             " to set the schedule of");
    if (schedule.ranks.size() != schedule.counts.size())
      return invalidArgument("a rank schedule needs one count per rank (" +
                             std::to_string(schedule.ranks.size()) + " ranks, " +
                             std::to_string(schedule.counts.size()) + " counts)");
    auto emitError = [&] { return layer.emitError(); };
    llvm::SmallVector<mlir::molt::BucketAttr> buckets;
    for (size_t i = 0; i < schedule.ranks.size(); ++i) {
      auto bucket = mlir::molt::BucketAttr::getChecked(emitError, &context_, schedule.ranks[i],
                                                       schedule.counts[i]);
      if (!bucket)
        return failure("bad rank bucket");
      buckets.push_back(bucket);
    }
    auto attr = mlir::molt::ScheduleAttr::getChecked(
        emitError, &context_, llvm::ArrayRef<mlir::molt::BucketAttr>(buckets));
    if (!attr)
      return failure("bad rank schedule");
    layer.setScheduleAttr(attr);
    if (mlir::failed(mlir::verify(module)))
      return failure(spec.name + ": the new schedule does not verify");
    return Status::ok();
  }

  /// parse() then, when given, reschedule().
  StatusOr<mlir::OwningOpRef<mlir::ModuleOp>> load(const Spec &spec,
                                                   const std::optional<RankSchedule> &schedule) {
    auto module = parse(spec);
    if (module && schedule)
      MOLT_RETURN_IF_ERROR(reschedule(**module, spec, *schedule));
    return module;
  }

private:
  mlir::MLIRContext context_;
  std::optional<mlir::ScopedDiagnosticHandler> handler_;
  std::vector<std::string> errors_;
};

} // namespace

StatusOr<Spec> readSpec(const std::string &path) {
  auto text = readFile(path);
  if (!text)
    return text.status().withContext("cannot read the spec");
  return Spec{std::move(*text), path};
}

StatusOr<SpecFacts> describeSpec(const Spec &spec, const std::optional<RankSchedule> &schedule) {
  Session session;
  auto module = session.load(spec, schedule);
  if (!module)
    return module.status();
  return mlir::molt::describeModule(**module);
}

StatusOr<std::string> rescheduleSpec(const Spec &spec, const RankSchedule &schedule) {
  Session session;
  auto module = session.load(spec, schedule);
  if (!module)
    return module.status();
  std::string text;
  llvm::raw_string_ostream os(text);
  (*module)->print(os);
  os << "\n";
  return text;
}

Status compileSpec(const Spec &spec, const std::string &outDir, const CompileOptions &options) {
  Session session;
  auto module = session.load(spec, options.schedule);
  if (!module)
    return module.status();
  mlir::molt::MoltPipelineOptions pipeline;
  pipeline.symbol = options.symbol;
  pipeline.tuningDb = options.tuningDb;
  pipeline.outDir = outDir;
  pipeline.verifyArchs = options.verifyArchs;
  pipeline.fusionReport = options.fusionReport;
  pipeline.precision = options.precision;
  mlir::PassManager pm(&session.context());
  mlir::molt::buildMoltDefaultPipeline(pm, pipeline);
  if (mlir::failed(pm.run(**module)))
    return session.failure(spec.name + ": compilation failed");
  return Status::ok();
}

Status compileSpec(const std::string &specPath, const std::string &outDir,
                   const CompileOptions &options) {
  auto spec = readSpec(specPath);
  if (!spec)
    return spec.status();
  return compileSpec(*spec, outDir, options);
}

} // namespace molt::compiler
