// The spec ops of the `molt` dialect: molt.layer, molt.transcoder and molt.mlp.
#ifndef MOLT_OPS_TD
#define MOLT_OPS_TD

include "dialect/MoltAttrs.td"
include "mlir/IR/SymbolInterfaces.td"
include "mlir/IR/BuiltinAttributes.td"

// A size field such as `d_model = 64`: an i64 read back as a signed int64_t, so that a negative
// value reaches the verifier (and its message) as negative.
def Molt_SizeAttr : TypedSignlessIntegerAttrBase<I64, "int64_t", "64-bit integer"> {
  let convertFromStorage = "$_self.getValue().getSExtValue()";
}

// Spec ops are top-level symbols of a builtin module: passes find them by name. They read
// `@name {field = value, ...}`; the printer writes the fields in a fixed order (see
// printSpecFields in MoltOps.cpp).
class Molt_SpecOp<string mnemonic, list<Trait> traits = []>
    : Molt_Op<mnemonic, !listconcat([Symbol, HasParent<"::mlir::ModuleOp">], traits)> {
  let hasCustomAssemblyFormat = 1;
  let hasVerifier = 1;
}

def Molt_LayerOp : Molt_SpecOp<"layer"> {
  let summary = "a MOLT layer: a sparse mixture of low-rank linear transforms";
  let description = [{
    Replaces an MLP of width `d_model` by y = sum_t g_t(x) U_t V_t x + b_dec, with the
    transforms grouped into the rank buckets of `schedule`. `gate` is `jumprelu` or `relu`
    (never `topk`), `penalty` the sparsity penalty, `decoder_bias` switches b_dec (default
    on), `element_type` is the storage type of the weights (f32, f16 or bf16).

    ```mlir
    molt.layer @molt {d_model = 768, element_type = f32,
                      schedule = #molt.schedule<reference N = 8>,
                      gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                      penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, Molt_SizeAttr:$d_model, TypeAttr:$element_type,
                       Molt_ScheduleAttr:$schedule, Molt_GateAttr:$gate,
                       Molt_PenaltyAttr:$penalty,
                       DefaultValuedAttr<BoolAttr, "true">:$decoder_bias);
}

def Molt_TranscoderOp : Molt_SpecOp<"transcoder",
    [DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "a transcoder baseline: one wide layer of sparse features";
  let description = [{
    y = W_dec phi(W_enc x + b_enc) + b_dec (+ W_skip x when `skip`). The width is either
    `features`, or `matched = @layer`: the largest feature count whose parameter count does
    not exceed that `molt.layer`'s (which must have the same `d_model`). `activation` is
    any gate, `topk` included; `decoder_bias` defaults to on, `skip` to off.

    ```mlir
    molt.transcoder @transcoder {d_model = 768, element_type = f32, matched = @molt,
                                 activation = #molt.gate<topk k = 32>,
                                 penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, Molt_SizeAttr:$d_model, TypeAttr:$element_type,
                       OptionalAttr<Molt_SizeAttr>:$features, OptionalAttr<FlatSymbolRefAttr>:$matched,
                       Molt_GateAttr:$activation, Molt_PenaltyAttr:$penalty,
                       DefaultValuedAttr<BoolAttr, "false">:$skip,
                       DefaultValuedAttr<BoolAttr, "true">:$decoder_bias);
  let extraClassDeclaration = [{
    /// The layer this transcoder is matched to, or null (no `matched`, or no such layer).
    LayerOp getMatchedLayer(::mlir::SymbolTableCollection *symbols = nullptr);
    /// `features`, or the matched feature count; fails (without a diagnostic) when the
    /// matched layer is missing or too small to match.
    ::mlir::FailureOr<int64_t> getFeatureCount(::mlir::SymbolTableCollection *symbols = nullptr);
  }];
}

def Molt_MlpOp : Molt_SpecOp<"mlp"> {
  let summary = "the teacher MLP that a MOLT or transcoder replaces";
  let description = [{
    y = W_out act(W_in x + b_in) + b_out with W_in of shape `d_hidden` x `d_model`.
    `activation` is "gelu" (exact erf form), "gelu_tanh" (the tanh approximation, GPT-2)
    or "relu". The weights come from a safetensors file; the op only fixes their shapes.

    ```mlir
    molt.mlp @teacher {d_model = 768, d_hidden = 3072, activation = "gelu_tanh"}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, Molt_SizeAttr:$d_model, Molt_SizeAttr:$d_hidden,
                       StrAttr:$activation);
  let extraClassDeclaration = [{
    /// The activation as an enum (the verifier guarantees it is a known one).
    Activation getActivationKind();
  }];
}

#endif // MOLT_OPS_TD
