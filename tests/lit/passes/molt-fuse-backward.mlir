// --molt-fuse-backward: losses join their gradients; per bucket the derived apply backward is
// one bucket_apply_bwd that recomputes h and the gated h from cloned forward ops; the norm
// backward is frob_norm_bwd; the encoder backward is gate_bwd.
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-encode-gate --molt-fuse-bucket-apply --molt-fuse-backward %s | FileCheck %s

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK-LABEL: molt.program "train_step"
// CHECK: molt.fused "penalty" attributes {args = {d_norm = "d_norm", norm = "norm", pair_dgate = "d_pair_gate", pair_gate = "pair_gate", pair_ptr = "pair_ptr", scalars = "scalars", stats = "stats"}} {
// CHECK-NEXT: molt.penalty ins
// CHECK-NEXT: molt.penalty_grad ins
// CHECK: molt.fused "mse_loss" attributes {args = {d_yhat = "d_yhat", stats = "stats", y = "y", yhat = "yhat"}} {
// CHECK-NEXT: molt.mse_loss
// CHECK-NEXT: molt.mse_grad
// CHECK: molt.colsum ins ["d_yhat"] outs ["d_dec_b"]
// CHECK: molt.fused "bucket_apply_bwd" attributes {args = {d_u = "d_u1", d_v = "d_v1", d_yhat = "d_yhat", pair_dgate = "d_pair_gate", pair_gate = "pair_gate", pair_ptr = "pair_ptr", pair_tok = "pair_tok", u = "u1", v = "v1", x = "x"}, bucket = 1 : i64} {
// CHECK-NEXT: molt.gather_rows ins ["x", "pair_ptr", "pair_tok"] outs ["xg1"]
// CHECK-NEXT: molt.project_v ins ["xg1", "v1"] outs ["h1"]
// CHECK-NEXT: molt.scale_rows ins ["h1", "pair_gate"] outs ["hs1"]
// CHECK-NEXT: molt.gather_rows ins ["d_yhat", "pair_ptr", "pair_tok"] outs ["d_c1"]
// CHECK-NEXT: molt.project_u_t
// CHECK-NEXT: molt.project_u_grad
// CHECK-NEXT: molt.scale_rows ins ["d_hs1", "pair_gate"] outs ["d_h1"]
// CHECK-NEXT: molt.rowdot
// CHECK-NEXT: molt.project_v_grad
// CHECK-NEXT: {{^ *[}]$}}
// CHECK: molt.fused "bucket_apply_bwd" {{.*}}bucket = 0 : i64}
// CHECK: molt.fused "frob_norm_bwd" attributes {args = {d_norm = "d_norm", d_u = "d_u1", d_v = "d_v1", gram_u = "gram_u1", gram_v = "gram_v1", norm = "norm", u = "u1", v = "v1"}, bucket = 1 : i64} {
// CHECK-NEXT: molt.trace_norm_grad
// CHECK-NEXT: molt.gram_grad
// CHECK-NEXT: molt.gram_grad
// CHECK: molt.fused "frob_norm_bwd" {{.*}}bucket = 0 : i64}
// CHECK: molt.fused "gate_bwd" attributes {args = {d_enc_b = "d_enc_b", d_enc_w = "d_enc_w", d_theta = "d_theta", pair_dgate = "d_pair_gate", pair_gate = "pair_gate", pair_pre = "pair_pre", pair_ptr = "pair_ptr", pair_tok = "pair_tok", theta = "theta", x = "x"}} {
// CHECK-NEXT: molt.scatter_pairs
// CHECK-NEXT: molt.gate_grad
// CHECK-NEXT: molt.accumulate
// CHECK-NEXT: molt.colsum
// CHECK-NEXT: molt.linear_t_grad_w
// CHECK-NEXT: {{^ *[}]$}}
// CHECK-NEXT: molt.grad_sq_norm
