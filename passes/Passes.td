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

    With `format=json` the same facts print as one JSON object (docs/spec.md), for scripts:
    `molt-opt --molt-describe=format=json SPEC -o /dev/null`.
  }];
  let options = [
    Option<"format", "format", "std::string", "\"text\"", "text (a table) or json">,
  ];
  let dependentDialects = ["::mlir::molt::MoltDialect"];
}

//===----------------------------------------------------------------------===//
// The compiler: spec -> programs -> specialised, fused kernels -> bundle
//===----------------------------------------------------------------------===//

def MoltExpand : Pass<"molt-expand", "::mlir::ModuleOp"> {
  let summary = "Expand a molt.layer or molt.transcoder into forward, eval, train_step and jvp programs";
  let description = [{
    Declares the spec's params (`molt.param`, with initialisers) and buffers (`molt.buffer`)
    and writes four `molt.program`s of tensor ops: `forward`, `eval` (forward + MSE and
    sparsity losses), `train_step` (eval + backward + one clipped Adam step) and `jvp`
    (y_dot = J(x)·x_dot: the encoder, the gates' tangents, the decoder on tangents). The backward
    is derived, not written: passes/Differentiate.cpp walks the forward ops in reverse and
    asks each op for its gradient rule. Shapes keep the symbols D, T/F, R, N until
    `--molt-specialize-buckets`; there is one op instance per rank bucket.

    ```
    molt-opt --molt-expand examples/specs/small.mlir
    ```
  }];
  let options = [
    Option<"symbol", "symbol", "std::string", "\"\"",
           "the spec op to expand (default: the first molt.layer, else the first molt.transcoder)">,
  ];
  let dependentDialects = ["::mlir::molt::MoltDialect"];
}

def MoltSpecializeBuckets : Pass<"molt-specialize-buckets", "::mlir::ModuleOp"> {
  let summary = "Make d, transform counts, ranks, counts and offsets static per bucket";
  let description = [{
    Replaces the shape symbols of every `molt.param` / `molt.buffer` by numbers (only the
    batch symbols B and P stay) and records on every tensor op its compile-time constants
    `consts = {D, T | F}` or, for a per-bucket op, `{D, R, N, OFF}`: the numbers the
    kernels are specialised on.
  }];
}

def MoltFuseEncodeGate : Pass<"molt-fuse-encode-gate", "::mlir::ModuleOp"> {
  let summary = "Fuse encoder matmul + bias + gate + pair compaction into one kernel";
  let description = [{
    `linear_t → bias_cols → gate → compact` becomes one `molt.fused "encode_gate"`
    (`"tc_encode"` for a transcoder): the dense gate values never reach memory, only the
    per-transform token lists do.
  }];
}

def MoltFuseBucketApply : Pass<"molt-fuse-bucket-apply", "::mlir::ModuleOp"> {
  let summary = "Fuse each bucket's gather → V → gate scale → U → scatter-add, and its Gram norms";
  let description = [{
    Per bucket, `gather_rows → project_v → scale_rows → project_u → scatter_add_rows`
    becomes one `molt.fused "bucket_apply"`, so the rank-r intermediate stays on chip; and
    `gram(u), gram(v) → trace_norm` becomes one `molt.fused "frob_norm"`.
  }];
}

def MoltFuseInputGrad : Pass<"molt-fuse-input-grad", "::mlir::ModuleOp"> {
  let summary = "Fuse the derived input-gradient ops into the input-gradient kernels";
  let description = [{
    Runs before --molt-fuse-backward. Per bucket, `gather_rows(d_yhat) → project_u_t →
    scale_rows → project_v_t → scatter_add_rows(d_x)` with its `rowdot` becomes
    `bucket_apply_dx`, or, where `project_u_grad` and `project_v_grad` read the same chain
    (the `vjp` entry), the whole bucket backward becomes `bucket_apply_bwd_dx`. The gate term
    `scatter_pairs → gate_grad → accumulate → linear_t_grad_x` becomes `gate_bwd_dx`
    (`tc_encode_bwd_dx`): a sum over the listed pairs, never the dense [B, T] product.
  }];
}

def MoltReuseForward : Pass<"molt-reuse-forward", "::mlir::ModuleOp"> {
  let summary = "Drop the recorded forward of the caller-seeded programs";
  let description = [{
    The `backward`, `input_grad` and `vjp` programs start with the `forward` entry's ops,
    marked `recorded` (what the gradient rules and fusions read). Once fused, those top-level
    ops are dropped: each such entry runs after `forward` on the same rows and reads the
    pair lists it left. Fails when a recorded op is not one of the `forward` program's ops,
    or when a program has no `forward` to follow.
  }];
}

def MoltFuseBackward : Pass<"molt-fuse-backward", "::mlir::ModuleOp"> {
  let summary = "Fuse the derived backward ops into the backward kernels";
  let description = [{
    Per bucket: `gather_rows(d_yhat) → project_u_t → scale_rows → project_v_grad` with
    `project_u_grad` and `rowdot` becomes `bucket_apply_bwd` (h and the gated h are
    recomputed on chip from cloned forward ops, never stored); `trace_norm_grad` and the two
    `gram_grad`s become `frob_norm_bwd`; `scatter_pairs → gate_grad → accumulate/colsum →
    linear_t_grad_w` becomes `gate_bwd` (`tc_encode_bwd`). Each loss joins its gradient
    (`mse_loss`, `penalty`, `tc_penalty`).
  }];
}

def MoltFuseOptimizer : Pass<"molt-fuse-optimizer", "::mlir::ModuleOp"> {
  let summary = "One gradient-norm kernel and one Adam kernel over all parameters";
  let description = [{
    The per-parameter `grad_sq_norm` and `adam_update` ops of a train step become one
    `grad_norm` and one `adam` kernel whose `params` argument lists every parameter.
  }];
}

def MoltFusionReport : Pass<"molt-fusion-report", "::mlir::ModuleOp"> {
  let summary = "Print the kernels each program would launch (one per top-level op)";
  let description = [{
    Prints, per program, one line per kernel: a fused group with the ops it holds, or a
    single op. Run before and after the fusion passes to see what fused
    (`molt-compile --fusion-report` does both).
  }];
  let options = [
    Option<"label", "label", "std::string", "\"\"", "a word printed in the header (e.g. before)">,
  ];
}

def MoltLowerToKernels : Pass<"molt-lower-to-kernels", "::mlir::ModuleOp"> {
  let summary = "Lower fused programs to molt_k kernels with launch configuration";
  let description = [{
    Every top-level op of a specialised, fused program becomes a `molt_k.launch` of a
    `molt_k.kernel` (deduplicated by name), whose attrs are the op's compile-time
    constants and whose `#molt_k.launch` comes from the tuning database when it has the
    kernel, else from the default heuristic (core/include/molt/cuda_wrapper.h). Programs are
    replaced by `molt_k.entry`s.
  }];
  let options = [
    Option<"tuningDb", "tuning-db", "std::string", "\"\"",
           "a JSON object mapping op(attr=value,...) keys to launch fields, preferred over the heuristic">,
    Option<"precision", "precision", "std::string", "\"f32\"",
           "f32 or bf16: the kernels' tile products and streamed storage (recorded as the module's molt_k.precision)">,
  ];
  let dependentDialects = ["::mlir::molt_k::MoltKDialect"];
}

def MoltEmitBundle : Pass<"molt-emit-bundle", "::mlir::ModuleOp"> {
  let summary = "Write the bundle: manifest.json, one .cu per kernel, molt_kernels/ headers";
  let description = [{
    Builds the runtime's `molt::Plan` from the kernel-level module and writes it with
    `molt::writePlan` (docs/bundle.md), one CUDA source per kernel (from
    core/include/molt/cuda_wrapper.h) and a copy of the device headers, so the bundle compiles with
    only the CUDA include path. `verify-archs` compiles every kernel with NVRTC.
  }];
  let options = [
    Option<"outDir", "out-dir", "std::string", "\"\"", "the bundle directory (created)">,
    Option<"verifyArchs", "verify-archs", "std::string", "\"\"",
           "comma-separated archs (e.g. sm_80,sm_90a) every kernel must compile for with NVRTC">,
  ];
}

#endif // MOLT_PASSES_TD
