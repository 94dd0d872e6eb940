// The kernel-op vocabulary of docs/bundle.md: for each op, its argument names in canonical
// order. The plan loader checks every invocation against this table; the CPU backend
// dispatches on it; the CUDA backend passes device pointers in this order (molt::k::Args);
// the compiler's emitter writes invocations with these names. One table, one place.
#pragma once

#include <string>
#include <vector>

namespace molt {

struct OpSignature {
  const char *op;
  std::vector<const char *> args; // canonical order: inputs, then outputs
};

inline const std::vector<OpSignature> &opSignatures() {
  static const std::vector<OpSignature> table = {
      // molt layer
      {"encode_gate", {"x", "enc_w", "enc_b", "theta", "pre", "pair_ptr", "pair_tok", "pair_gate",
                       "pair_pre", "pair_count", "stats"}},
      {"frob_norm", {"u", "v", "norm", "gram_u", "gram_v"}},
      {"bucket_apply", {"x", "u", "v", "pair_ptr", "pair_tok", "pair_gate", "yhat"}},
      {"add_bias", {"dec_b", "yhat"}},
      {"mse_loss", {"yhat", "y", "d_yhat", "stats"}},
      {"penalty", {"pair_ptr", "pair_gate", "norm", "scalars", "pair_dgate", "d_norm", "stats"}},
      {"bucket_apply_bwd", {"d_yhat", "x", "u", "v", "pair_ptr", "pair_tok", "pair_gate", "d_u",
                            "d_v", "pair_dgate"}},
      {"frob_norm_bwd", {"d_norm", "norm", "u", "v", "gram_u", "gram_v", "d_u", "d_v"}},
      {"gate_bwd", {"x", "theta", "pair_ptr", "pair_tok", "pair_pre", "pair_gate", "pair_dgate",
                    "d_enc_w", "d_enc_b", "d_theta"}},
      {"bias_grad", {"d_yhat", "d_dec_b"}},
      {"grad_norm", {"params", "stats"}},
      {"adam", {"params", "scalars", "stats"}},
      // transcoder
      {"tc_encode", {"x", "enc_w", "enc_b", "theta", "pre", "pair_ptr", "pair_tok", "pair_gate",
                     "pair_pre", "pair_count", "stats"}},
      {"tc_decode", {"pair_ptr", "pair_tok", "pair_gate", "dec_w", "yhat"}},
      {"skip_apply", {"x", "skip_w", "yhat"}},
      {"tc_penalty", {"pair_ptr", "pair_gate", "dec_w", "scalars", "pair_dgate", "d_dec_w", "stats"}},
      {"tc_decode_bwd", {"d_yhat", "pair_ptr", "pair_tok", "pair_gate", "dec_w", "d_dec_w",
                         "pair_dgate"}},
      {"skip_bwd", {"d_yhat", "x", "d_skip_w"}},
      {"tc_encode_bwd", {"x", "theta", "pair_ptr", "pair_tok", "pair_pre", "pair_gate",
                         "pair_dgate", "d_enc_w", "d_enc_b", "d_theta"}},
      // Jacobian-vector products (the `jvp` entry)
      {"encode_tangent", {"x_dot", "enc_w", "pair_ptr", "pair_tok", "pair_gate", "pair_tan"}},
      {"tc_encode_tangent", {"x_dot", "enc_w", "pair_ptr", "pair_tok", "pair_gate", "pair_tan"}},
  };
  return table;
}

inline const OpSignature *findOp(const std::string &op) {
  for (const OpSignature &s : opSignatures())
    if (op == s.op)
      return &s;
  return nullptr;
}

} // namespace molt
