// The `molt` dialect definition, shared by the attribute and op TableGen files.
#ifndef MOLT_DIALECT_TD
#define MOLT_DIALECT_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"

def Molt_Dialect : Dialect {
  let name = "molt";
  let cppNamespace = "::mlir::molt";
  let summary = "Specs for sparse mixtures of linear transforms (MOLTs) and their baselines";
  let description = [{
    The `molt` dialect describes what to train: a MOLT layer (`molt.layer`), a transcoder
    baseline (`molt.transcoder`) and the teacher MLP both replace (`molt.mlp`). Each is a
    symbol in a builtin module; its hyper-parameters are typed attributes (rank schedule,
    gate, penalty) checked by verifiers, so that a spec that parses is a spec that can run.

    ```mlir
    molt.layer @molt {d_model = 64, element_type = f32,
                      schedule = #molt.schedule<geometric N = 2, ranks = [32, 16, 8, 4]>,
                      gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                      penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
                      decoder_bias = true}
    ```
  }];
  let useDefaultAttributePrinterParser = 1;
  let extraClassDeclaration = [{
    void registerAttributes();
  }];
}

class Molt_Op<string mnemonic, list<Trait> traits = []>
    : Op<Molt_Dialect, mnemonic, traits>;

#endif // MOLT_DIALECT_TD
