// The default compilation pipeline (spec -> bundle), as a function and as `--molt-default-pipeline`.
#ifndef MOLT_PASSES_PIPELINES_H
#define MOLT_PASSES_PIPELINES_H

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace mlir::molt {

struct MoltPipelineOptions : public PassPipelineOptions<MoltPipelineOptions> {
  Option<std::string> symbol{*this, "symbol",
                             llvm::cl::desc("the spec op to compile (default: the first layer)"),
                             llvm::cl::init("")};
  Option<std::string> tuningDb{*this, "tuning-db",
                               llvm::cl::desc("launch configurations to prefer (JSON)"),
                               llvm::cl::init("")};
  Option<std::string> outDir{*this, "out-dir",
                             llvm::cl::desc("write the bundle here (empty: stop at molt_k)"),
                             llvm::cl::init("")};
  Option<std::string> verifyArchs{*this, "verify-archs",
                                  llvm::cl::desc("compile every kernel with NVRTC for these"),
                                  llvm::cl::init("")};
  Option<std::string> precision{*this, "precision",
                                llvm::cl::desc("f32 or bf16 (tile products and streamed storage)"),
                                llvm::cl::init("f32")};
  Option<bool> fusionReport{*this, "fusion-report",
                            llvm::cl::desc("print the kernels before and after fusion"),
                            llvm::cl::init(false)};
};

/// expand → specialise buckets → fuse (encode/gate, bucket apply, backward, optimiser) →
/// lower to molt_k → (with out-dir) emit the bundle.
void buildMoltDefaultPipeline(OpPassManager &pm, const MoltPipelineOptions &options);

/// Registers `--molt-default-pipeline` with molt-opt.
void registerMoltPipelines();

} // namespace mlir::molt

#endif // MOLT_PASSES_PIPELINES_H
