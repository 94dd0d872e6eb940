// Attributes of the `molt` dialect: rank buckets, rank schedules, gates and penalties.
#ifndef MOLT_ATTRS_TD
#define MOLT_ATTRS_TD

include "dialect/MoltDialect.td"
include "mlir/IR/EnumAttr.td"

//===----------------------------------------------------------------------===//
// Kinds. Only the C++ enums and their string conversions are generated: the attributes
// below carry them as parameters and spell them as bare keywords.
//===----------------------------------------------------------------------===//

// Values are the contract's (core/include/molt/gate.h; MoltAttrs.cpp static_asserts them), and a
// bundle's gate spelling is taken from the contract's table.
def Molt_GateKind : I32EnumAttr<"GateKind", "gate nonlinearity", [
    I32EnumAttrCase<"jumprelu", 0>, I32EnumAttrCase<"relu", 1>, I32EnumAttrCase<"topk", 2>]> {
  let cppNamespace = "::mlir::molt";
  let genSpecializedAttr = 0;
}

def Molt_PenaltyKind : I32EnumAttr<"PenaltyKind", "sparsity penalty shape", [
    I32EnumAttrCase<"tanh", 0>, I32EnumAttrCase<"l1", 1>]> {
  let cppNamespace = "::mlir::molt";
  let genSpecializedAttr = 0;
}

def Molt_Activation : I32EnumAttr<"Activation", "teacher MLP activation", [
    I32EnumAttrCase<"gelu", 0>, I32EnumAttrCase<"gelu_tanh", 1>, I32EnumAttrCase<"relu", 2>]> {
  let cppNamespace = "::mlir::molt";
  let genSpecializedAttr = 0;
}

class Molt_Attr<string name, string attrMnemonic, list<Trait> traits = []>
    : AttrDef<Molt_Dialect, name, traits> {
  let mnemonic = attrMnemonic;
  let genVerifyDecl = 1;
}

//===----------------------------------------------------------------------===//
// Buckets and schedules
//===----------------------------------------------------------------------===//

def Molt_BucketAttr : Molt_Attr<"Bucket", "bucket"> {
  let summary = "`count` transforms of rank `rank`";
  let description = [{
    One rank bucket of a MOLT: `count` linear transforms U_t V_t, each of rank `rank`.
    Both must be positive; whether the rank fits the layer is checked by `molt.layer`.

    ```mlir
    #molt.bucket<rank = 32, count = 16>
    ```
  }];
  let parameters = (ins "int64_t":$rank, "int64_t":$count);
  let assemblyFormat = "`<` `rank` `=` $rank `,` `count` `=` $count `>`";
}

def Molt_ScheduleAttr : Molt_Attr<"Schedule", "schedule"> {
  let summary = "the rank buckets of a MOLT layer";
  let description = [{
    A non-empty list of rank buckets with distinct ranks. Three spellings denote the same
    attribute; the printer picks the shortest that applies:

    ```mlir
    // N x (512, 256, 128, 64, 32) with counts N x (1, 2, 4, 8, 16): 31N transforms.
    #molt.schedule<reference N = 8>
    // Any ranks, counts doubling from N: here (64 x 2, 32 x 4, 16 x 8).
    #molt.schedule<geometric N = 2, ranks = [64, 32, 16]>
    // Anything else.
    #molt.schedule<ranks = [48, 16], counts = [3, 5]>
    ```
  }];
  let parameters = (ins ArrayRefParameter<"::mlir::molt::BucketAttr", "buckets">:$buckets);
  let hasCustomAssemblyFormat = 1;
  let extraClassDeclaration = [{
    /// The buckets as plain numbers, in declaration order.
    ::llvm::SmallVector<::mlir::molt::Bucket> getBucketValues() const;
  }];
}

//===----------------------------------------------------------------------===//
// Gate and penalty
//===----------------------------------------------------------------------===//

def Molt_GateAttr : Molt_Attr<"Gate", "gate"> {
  let summary = "the gate nonlinearity phi of a transform or feature";
  let description = [{
    `jumprelu` learns a threshold per transform (initialised to `threshold`, which must be
    finite and non-negative) and trains it through a straight-through estimator whose
    rectangle kernel has width `bandwidth` (finite, positive). `relu` has no parameters.
    `topk` keeps the `k` largest pre-activations per token; it is valid on
    `molt.transcoder` only, with `k` at most its feature count.

    ```mlir
    #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>
    #molt.gate<relu>
    #molt.gate<topk k = 32>
    ```
  }];
  let parameters = (ins "::mlir::molt::GateKind":$kind, APFloatParameter<"">:$threshold,
                        APFloatParameter<"">:$bandwidth, "int64_t":$k);
  let hasCustomAssemblyFormat = 1;
  let extraClassDeclaration = [{
    static GateAttr getJumpReLU(::mlir::MLIRContext *context, double threshold, double bandwidth);
    static GateAttr getReLU(::mlir::MLIRContext *context);
    static GateAttr getTopK(::mlir::MLIRContext *context, int64_t k);
    bool isJumpReLU() const { return getKind() == GateKind::jumprelu; }
    double getThresholdValue() const { return getThreshold().convertToDouble(); }
    double getBandwidthValue() const { return getBandwidth().convertToDouble(); }
  }];
}

def Molt_PenaltyAttr : Molt_Attr<"Penalty", "penalty"> {
  let summary = "the sparsity penalty lambda * sum_t S(g_t * |U_t V_t|_F)";
  let description = [{
    `tanh` uses S(s) = tanh(c s) with `c` finite and positive; `l1` uses S(s) = s.
    `lambda` (finite, non-negative) is reached by a linear ramp over the first `warmup`
    fraction of training (in [0, 1]).

    ```mlir
    #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>
    #molt.penalty<l1 lambda = 0.001, warmup = 0.0>
    ```
  }];
  let parameters = (ins "::mlir::molt::PenaltyKind":$kind, APFloatParameter<"">:$c,
                        APFloatParameter<"">:$lambda, APFloatParameter<"">:$warmup);
  let hasCustomAssemblyFormat = 1;
  let extraClassDeclaration = [{
    static PenaltyAttr getTanh(::mlir::MLIRContext *context, double c, double lambda, double warmup);
    static PenaltyAttr getL1(::mlir::MLIRContext *context, double lambda, double warmup);
    double getCValue() const { return getC().convertToDouble(); }
    double getLambdaValue() const { return getLambda().convertToDouble(); }
    double getWarmupValue() const { return getWarmup().convertToDouble(); }
  }];
}

#endif // MOLT_ATTRS_TD
