// Pass declarations of molt-opt (one def per pass; each pass lives in passes/<Name>.cpp).
#ifndef MOLT_PASSES_TD
#define MOLT_PASSES_TD

include "mlir/Pass/PassBase.td"

def MoltDescribe : Pass<"molt-describe", "::mlir::ModuleOp"> {
  let summary = "Print the size of every molt spec op as a table on stdout";
  let description = [{
    For each `molt.layer`: d_model, the transforms, feature-equivalents (count * rank) and
    parameters per bucket, and their totals. For each `molt.transcoder`: its feature count
    (computed when `matched`) and parameters, with the ratio to the matched layer. For each
    `molt.mlp`: its parameters. The IR is left unchanged. All numbers come from
    dialect/MoltCounts.h.

    ```
    $ molt-opt --molt-describe examples/specs/small.mlir -o /dev/null
    molt.layer @molt: d_model = 64, f32, jumprelu, tanh penalty, decoder bias on
      rank  count  features  params
      ...
    ```
  }];
  let dependentDialects = ["::mlir::molt::MoltDialect"];
}

#endif // MOLT_PASSES_TD
