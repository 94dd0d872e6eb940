// The default compilation pipeline (see Pipelines.h).
#include "passes/Pipelines.h"

#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"

using namespace mlir;
using namespace mlir::molt;

void mlir::molt::buildMoltDefaultPipeline(OpPassManager &pm, const MoltPipelineOptions &options) {
  pm.addPass(createMoltExpand(MoltExpandOptions{options.symbol}));
  pm.addPass(createMoltSpecializeBuckets());
  if (options.fusionReport)
    pm.addPass(createMoltFusionReport(MoltFusionReportOptions{"before fusion"}));
  pm.addPass(createMoltFuseEncodeGate());
  pm.addPass(createMoltFuseBucketApply());
  pm.addPass(createMoltFuseInputGrad());
  pm.addPass(createMoltFuseBackward());
  pm.addPass(createMoltFuseOptimizer());
  pm.addPass(createMoltReuseForward());
  if (options.fusionReport)
    pm.addPass(createMoltFusionReport(MoltFusionReportOptions{"after fusion"}));
  pm.addPass(createMoltLowerToKernels(MoltLowerToKernelsOptions{options.tuningDb, options.precision}));
  if (!options.outDir.empty())
    pm.addPass(createMoltEmitBundle(MoltEmitBundleOptions{options.outDir, options.verifyArchs}));
}

void mlir::molt::registerMoltPipelines() {
  PassPipelineRegistration<MoltPipelineOptions>(
      "molt-default-pipeline",
      "Compile a molt spec to kernels (and, with out-dir, write the bundle)",
      buildMoltDefaultPipeline);
}
