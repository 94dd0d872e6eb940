// The program ops of the `molt` dialect: what `--molt-expand` turns a spec into, before kernels.
#ifndef MOLT_PROGRAM_OPS_TD
#define MOLT_PROGRAM_OPS_TD

include "dialect/MoltDialect.td"
include "mlir/IR/OpBase.td"
include "mlir/IR/BuiltinAttributes.td"

//===----------------------------------------------------------------------===//
// The gradient rule interface
//===----------------------------------------------------------------------===//

def Molt_DifferentiableOpInterface : OpInterface<"DifferentiableOp"> {
  let cppNamespace = "::mlir::molt";
  let description = [{
    A program op that knows its own gradient rule. `--molt-expand` derives every backward
    pass by walking the forward ops in reverse and asking each op for its adjoint: the op
    emits, through the AdjointBuilder, the ops that accumulate `d_<input>` from
    `d_<output>` for each input the builder says needs a gradient.
  }];
  let methods = [
    InterfaceMethod<"Emit the ops that propagate this op's output adjoints to its inputs.",
      "void", "buildAdjoint", (ins "::mlir::molt::AdjointBuilder &":$builder)>,
  ];
}

//===----------------------------------------------------------------------===//
// Declarations and containers
//===----------------------------------------------------------------------===//

def Molt_ParamOp : Molt_Op<"param"> {
  let summary = "a trainable tensor of a program";
  let description = [{
    Declares the parameter `name` with its shape and initialiser. A dimension is an integer
    or, before `--molt-specialize-buckets`, one of the symbols `D` (d_model), `T`
    (transforms), `F` (features), `T+1`, `F+1`, `R`/`N` (rank and count of bucket `bucket`).
    Parameters are listed in declaration order in the bundle (the optimiser's order).

    ```mlir
    molt.param "u0" {bucket = 0, shape = ["N", "D", "R"], init = "normal", scale = 0.17}
    ```
  }];
  let arguments = (ins StrAttr:$name, ArrayAttr:$shape, StrAttr:$init, F64Attr:$scale,
                       OptionalAttr<I64Attr>:$bucket);
  let assemblyFormat = "$name attr-dict";
  let hasVerifier = 1;
}

def Molt_BufferOp : Molt_Op<"buffer"> {
  let summary = "a non-trainable tensor of a program";
  let description = [{
    Declares a buffer a program reads or writes. Dimensions as for `molt.param`, plus the
    batch symbols `B` (tokens) and `P` (pair capacity), which stay symbolic until run time.

    ```mlir
    molt.buffer "pair_tok" {shape = ["P"], dtype = "i32"}
    ```
  }];
  let arguments = (ins StrAttr:$name, ArrayAttr:$shape, StrAttr:$dtype,
                       OptionalAttr<I64Attr>:$bucket);
  let assemblyFormat = "$name attr-dict";
  let hasVerifier = 1;
}

def Molt_ProgramOp : Molt_Op<"program", [SingleBlock, NoTerminator]> {
  let summary = "an entry point of a spec as straight-line tensor ops";
  let description = [{
    One entry point (`forward`, `eval`, `train_step`) of the spec op `spec`. Ops in the
    body read and write named params and buffers in order; an op that writes a buffer
    another op wrote before it accumulates (`+=`) only where its description says so.

    ```mlir
    molt.program "forward" of @molt {
      molt.linear_t ins ["x", "enc_w"] outs ["pre_lin"]
      ...
    }
    ```
  }];
  let arguments = (ins StrAttr:$entry, FlatSymbolRefAttr:$spec);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$entry `of` $spec attr-dict-with-keyword $body";
}

def Molt_FusedOp : Molt_Op<"fused", [SingleBlock, NoTerminator]> {
  let summary = "ops that one kernel computes together";
  let description = [{
    Made by the fusion passes: the body's ops run as the kernel op `kernel`, whose
    canonical arguments (core/include/molt/ops.h) are bound to params and buffers by
    `args`. Buffers written and read only inside the body live on chip.

    ```mlir
    molt.fused "bucket_apply" {args = {x = "x", u = "u0", ...}, consts = {...}} {
      molt.gather_rows ins ["x", "pair_ptr", "pair_tok"] outs ["xg0"] {bucket = 0}
      ...
    }
    ```
  }];
  let arguments = (ins StrAttr:$kernel, DictionaryAttr:$args,
                       OptionalAttr<DictionaryAttr>:$consts, OptionalAttr<I64Attr>:$bucket);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$kernel attr-dict-with-keyword $body";
}

//===----------------------------------------------------------------------===//
// Tensor ops. Every op reads the buffers `ins` and writes the buffers `outs` (by name);
// `bucket` names the rank bucket of a per-bucket op; `consts` holds the compile-time
// constants that `--molt-specialize-buckets` fixes (D, T/F, R, N, OFF).
//===----------------------------------------------------------------------===//

class Molt_TensorOp<string mnemonic, int nIns, int nOuts, list<Trait> traits = [],
                    dag extraArgs = (ins)>
    : Molt_Op<mnemonic, traits> {
  let arguments = !con((ins StrArrayAttr:$ins, StrArrayAttr:$outs,
                            OptionalAttr<I64Attr>:$bucket,
                            OptionalAttr<DictionaryAttr>:$consts), extraArgs);
  let assemblyFormat = "`ins` $ins `outs` $outs attr-dict";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    static constexpr unsigned kNumIns = }] # nIns # [{, kNumOuts = }] # nOuts # [{;
    ::llvm::StringRef in(unsigned i) {
      return ::llvm::cast<::mlir::StringAttr>(getIns()[i]).getValue();
    }
    ::llvm::StringRef out(unsigned i) {
      return ::llvm::cast<::mlir::StringAttr>(getOuts()[i]).getValue();
    }
  }];
  let extraClassDefinition = [{
    ::mlir::LogicalResult $cppClass::verify() {
      return ::mlir::molt::verifyTensorOpArity(getOperation(), kNumIns, kNumOuts);
    }
  }];
}

class Molt_DiffOp<string mnemonic, int nIns, int nOuts, dag extraArgs = (ins)>
    : Molt_TensorOp<mnemonic, nIns, nOuts,
                    [DeclareOpInterfaceMethods<Molt_DifferentiableOpInterface>], extraArgs>;

// --- encoder, gate, compaction -------------------------------------------------------------

def Molt_LinearTOp : Molt_DiffOp<"linear_t", 2, 1> {
  let summary = "out[B,T] = x[B,D] · w[T,D]ᵀ";
  let description = [{
    The encoder matmul. Gradient: `d_w += d_outᵀ · x` (linear_t_grad_w) and, where the
    input gradient is asked for, `d_x += d_out · w` (linear_t_grad_x).
    `molt.linear_t ins ["x", "enc_w"] outs ["pre_lin"]`
  }];
}

def Molt_BiasColsOp : Molt_DiffOp<"bias_cols", 2, 1, (ins UnitAttr:$negate)> {
  let summary = "out = a ± b per column";
  let description = [{
    Adds (or with `negate` subtracts) a per-column bias. Gradient: `d_a += d_out`,
    `d_b += ± colsum(d_out)`.
    `molt.bias_cols ins ["pre_lin", "enc_b"] outs ["pre"] {negate}`
  }];
}

def Molt_GateOp : Molt_DiffOp<"gate", 2, 1,
    (ins StrAttr:$kind, F64Attr:$bandwidth, I64Attr:$k)> {
  let summary = "g = φ(pre) with threshold θ (jumprelu), relu, or top-k per token";
  let description = [{
    Gradient (gate_grad): `d_pre += d_g·H(pre − θ)` (relu: `[pre > 0]`) and, for jumprelu,
    the straight-through rectangle `d_θ += d_g·(−θ/ε)·[|pre − θ| < ε/2]`.
    `molt.gate ins ["pre", "theta"] outs ["g"] {kind = "jumprelu", bandwidth = 0.05, k = 0}`
  }];
}

def Molt_CompactOp : Molt_DiffOp<"compact", 2, 5, (ins StrAttr:$kind, F64Attr:$bandwidth)> {
  let summary = "lists the (token, transform) pairs of g per transform (CSR)";
  let description = [{
    ins: g, pre; outs: pair_ptr, pair_tok, pair_gate, pair_pre, pair_count. A pair is
    listed when its gate is open or near the threshold (docs/bundle.md). Gradient:
    `d_g += scatter of d_pair_gate` (scatter_pairs).
  }];
}

// --- transforms ------------------------------------------------------------------------------

def Molt_GramOp : Molt_DiffOp<"gram", 1, 1, (ins UnitAttr:$transpose)> {
  let summary = "per transform: UᵀU (or V Vᵀ with `transpose`), r × r";
  let description = [{
    Gradient: `d_m += m·(d_g + d_gᵀ)` (`(d_g + d_gᵀ)·m` with `transpose`), by gram_grad.
    `molt.gram ins ["u0"] outs ["gram_u0"] {bucket = 0}`
  }];
}

def Molt_TraceNormOp : Molt_DiffOp<"trace_norm", 2, 1> {
  let summary = "norm_t = sqrt(trace(gram_u_t · gram_v_t)) = ‖U_t V_t‖_F";
  let description = [{
    Writes the bucket's slice of `norm`. Gradient (trace_norm_grad):
    `d_gram_u += d_n/(2n)·gram_v`, `d_gram_v += d_n/(2n)·gram_u` (0 where n = 0).
  }];
}

def Molt_GatherRowsOp : Molt_DiffOp<"gather_rows", 3, 1> {
  let summary = "out[p] = src[pair_tok[p]] for the bucket's pairs";
  let description = [{
    ins: src, pair_ptr, pair_tok. Gradient: `d_src += scatter_add_rows(d_out)`.
  }];
}

def Molt_ProjectVOp : Molt_DiffOp<"project_v", 2, 1> {
  let summary = "h[p] = V_t · xg[p] (rank-r)";
  let description = [{
    Gradient: `d_v_t += Σ_p d_h[p] xg[p]ᵀ` (project_v_grad), `d_xg += V_tᵀ d_h` (project_v_t).
  }];
}

def Molt_ScaleRowsOp : Molt_DiffOp<"scale_rows", 2, 1> {
  let summary = "out[p] = gate[p] · h[p]";
  let description = [{
    Gradient: `d_h += gate · d_out` (scale_rows), `d_gate[p] += h[p] · d_out[p]` (rowdot).
  }];
}

def Molt_ProjectUOp : Molt_DiffOp<"project_u", 2, 1> {
  let summary = "c[p] = U_t · h[p] (back to width d)";
  let description = [{
    Gradient: `d_h += U_tᵀ d_c` (project_u_t), `d_u_t += Σ_p d_c[p] h[p]ᵀ` (project_u_grad).
  }];
}

def Molt_ScatterAddRowsOp : Molt_DiffOp<"scatter_add_rows", 3, 1> {
  let summary = "out[pair_tok[p]] += c[p] (accumulates)";
  let description = [{
    ins: c, pair_ptr, pair_tok. Gradient: `d_c += gather_rows(d_out)`.
  }];
}

def Molt_AddBiasOp : Molt_DiffOp<"add_bias", 1, 1> {
  let summary = "y += b per token (accumulates)";
  let description = [{ Gradient: `d_b += colsum(d_y)`. }];
}

// --- losses ----------------------------------------------------------------------------------

def Molt_MseLossOp : Molt_DiffOp<"mse_loss", 2, 1> {
  let summary = "stats += Σ(ŷ − y)², Σy², Σy (the loss seed)";
  let description = [{ Gradient (mse_grad): `d_ŷ = 2(ŷ − y)/B`. }];
}

def Molt_PenaltyOp : Molt_DiffOp<"penalty", 4, 1, (ins StrAttr:$kind, F64Attr:$c)> {
  let summary = "stats += Σ S(g · n_t) over listed pairs (before λ)";
  let description = [{
    ins: pair_ptr, pair_gate, norm, scalars. Gradient (penalty_grad):
    `d_pair_gate = λ/B·S'(p)·n_t`, `d_norm_t = λ/B·Σ S'(p)·g`.
  }];
}

// --- transcoder ------------------------------------------------------------------------------

def Molt_DecodeRowsOp : Molt_DiffOp<"decode_rows", 4, 1> {
  let summary = "ŷ[tok] += act · dec_w[f] for every listed pair (accumulates)";
  let description = [{
    ins: pair_ptr, pair_tok, pair_gate, dec_w. Gradient: `d_pair_gate += d_ŷ[tok]·dec_w[f]`,
    `d_dec_w[f] += Σ act·d_ŷ[tok]` (decode_rows_grad).
  }];
}

def Molt_SkipApplyOp : Molt_DiffOp<"skip_apply", 2, 1> {
  let summary = "ŷ += x · skip_wᵀ (accumulates)";
  let description = [{ Gradient (skip_grad): `d_skip_w = d_ŷᵀ x`; `d_x += d_ŷ · skip_w` (skip_grad_x). }];
}

def Molt_FeaturePenaltyOp : Molt_DiffOp<"feature_penalty", 4, 1, (ins StrAttr:$kind, F64Attr:$c)> {
  let summary = "stats += Σ S(act · ‖dec_w_f‖)";
  let description = [{
    ins: pair_ptr, pair_gate, dec_w, scalars. Gradient (feature_penalty_grad) reaches
    both the activations and the decoder rows.
  }];
}

// --- Jacobian-vector products ----------------------------------------------------------------

def Molt_PairTangentOp : Molt_TensorOp<"pair_tangent", 5, 1> {
  let summary = "pair_tan[p] = [pair_gate[p] > 0] · (enc_w[t] · x_dot[pair_tok[p]])";
  let description = [{
    The tangent of the gate values along x_dot, per listed pair of the transform (or feature)
    t: every gate has slope 1 where it is open (g > 0) and 0 elsewhere (docs/jacobian.md).
    ins: x_dot, enc_w, pair_ptr, pair_tok, pair_gate; outs: pair_tan (overwritten). Only the
    `jvp` program uses it, which is never differentiated.
    `molt.pair_tangent ins ["x_dot", "enc_w", "pair_ptr", "pair_tok", "pair_gate"] outs ["pair_tan"]`
  }];
}

// --- teacher MLP ---------------------------------------------------------------------------

def Molt_ActivationOp : Molt_DiffOp<"activation", 1, 1, (ins StrAttr:$kind)> {
  let summary = "out = act(in) elementwise: gelu (erf), gelu_tanh or relu";
  let description = [{
    The teacher MLP's nonlinearity. Gradient (activation_grad): `d_in += act'(in)·d_out`.
    `molt.activation ins ["t_pre"] outs ["t_h"] {kind = "gelu"}`
  }];
}

// --- optimiser -------------------------------------------------------------------------------

def Molt_GradSqNormOp : Molt_TensorOp<"grad_sq_norm", 1, 1> {
  let summary = "stats[4] += ‖d_p‖² for one parameter gradient";
  let description = [{ `molt.grad_sq_norm ins ["d_enc_w"] outs ["stats"]` }];
}

def Molt_AdamUpdateOp : Molt_TensorOp<"adam_update", 4, 1> {
  let summary = "one clipped Adam step of one parameter";
  let description = [{
    ins: p, d_p, scalars, stats; outs: p. Skipped when stats flags a non-finite value.
  }];
}

//===----------------------------------------------------------------------===//
// Backward ops (emitted by the gradient rules above). All accumulate into their outputs
// unless said otherwise; the runtime zeroes parameter gradients before a step.
//===----------------------------------------------------------------------===//

class Molt_BwdOp<string mnemonic, int nIns, int nOuts, string what, dag extraArgs = (ins)>
    : Molt_TensorOp<mnemonic, nIns, nOuts, [], extraArgs> {
  let summary = what;
  let description = [{ A gradient op; see the gradient rule of the op it differentiates. }];
}

def Molt_ActivationGradOp : Molt_BwdOp<"activation_grad", 2, 1, "(in, d_out) → d_in",
                                      (ins StrAttr:$kind)>;
def Molt_LinearTGradWOp : Molt_BwdOp<"linear_t_grad_w", 2, 1, "d_w += d_outᵀ · x">;
def Molt_LinearTGradXOp : Molt_BwdOp<"linear_t_grad_x", 2, 1, "(d_out, w) → d_x += d_out · w">;
def Molt_AccumulateOp : Molt_BwdOp<"accumulate", 1, 1, "out += in">;
def Molt_ColSumOp : Molt_BwdOp<"colsum", 1, 1, "out += ± column sums of in",
                               (ins UnitAttr:$negate)>;
def Molt_GateGradOp : Molt_BwdOp<"gate_grad", 3, 2,
    "(pre, θ, d_g) → d_pre, d_θ through the gate (straight-through for θ)",
    (ins StrAttr:$kind, F64Attr:$bandwidth, I64Attr:$k)>;
def Molt_ScatterPairsOp : Molt_BwdOp<"scatter_pairs", 3, 1,
    "(d_pair_gate, pair_ptr, pair_tok) → dense d_g">;
def Molt_GramGradOp : Molt_BwdOp<"gram_grad", 2, 1, "(m, d_gram) → d_m",
                                 (ins UnitAttr:$transpose)>;
def Molt_TraceNormGradOp : Molt_BwdOp<"trace_norm_grad", 4, 2,
    "(d_norm, norm, gram_u, gram_v) → d_gram_u, d_gram_v">;
def Molt_ProjectVGradOp : Molt_BwdOp<"project_v_grad", 2, 1, "(d_h, xg) → d_v">;
def Molt_ProjectVTOp : Molt_BwdOp<"project_v_t", 2, 1, "(d_h, v) → d_xg = Vᵀ d_h">;
def Molt_RowDotOp : Molt_BwdOp<"rowdot", 2, 1, "(h, d_out) → d_gate[p] += h[p]·d_out[p]">;
def Molt_ProjectUTOp : Molt_BwdOp<"project_u_t", 2, 1, "(d_c, u) → d_h = Uᵀ d_c">;
def Molt_ProjectUGradOp : Molt_BwdOp<"project_u_grad", 2, 1, "(d_c, h) → d_u">;
def Molt_MseGradOp : Molt_BwdOp<"mse_grad", 2, 1, "(ŷ, y) → d_ŷ = 2(ŷ − y)/B (overwrites)">;
def Molt_PenaltyGradOp : Molt_BwdOp<"penalty_grad", 4, 2,
    "(pair_ptr, pair_gate, norm, scalars) → d_pair_gate (overwrites), d_norm (overwrites)",
    (ins StrAttr:$kind, F64Attr:$c)>;
def Molt_DecodeRowsGradOp : Molt_BwdOp<"decode_rows_grad", 5, 2,
    "(d_ŷ, pair_ptr, pair_tok, pair_gate, dec_w) → d_dec_w, d_pair_gate">;
def Molt_SkipGradOp : Molt_BwdOp<"skip_grad", 2, 1, "(d_ŷ, x) → d_skip_w (overwrites)">;
def Molt_SkipGradXOp : Molt_BwdOp<"skip_grad_x", 2, 1, "(d_ŷ, skip_w) → d_x += d_ŷ · skip_w">;
def Molt_FeaturePenaltyGradOp : Molt_BwdOp<"feature_penalty_grad", 4, 2,
    "(pair_ptr, pair_gate, dec_w, scalars) → d_pair_gate, d_dec_w (overwrite)",
    (ins StrAttr:$kind, F64Attr:$c)>;

#endif // MOLT_PROGRAM_OPS_TD
