// --molt-fuse-input-grad: per bucket the derived input-gradient chain is one bucket_apply_dx
// (input_grad) or, with the params' gradients, one bucket_apply_bwd_dx (vjp); the gates' term
// is gate_bwd_dx over the listed pairs, its chain cloned where gate_bwd also reads it.
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-encode-gate --molt-fuse-bucket-apply --molt-fuse-input-grad %s | FileCheck %s

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK-LABEL: molt.program "input_grad"
// CHECK: molt.fused "bucket_apply_dx" attributes {args = {d_x = "d_x", d_yhat = "d_yhat", pair_dgate = "d_pair_gate", pair_gate = "pair_gate", pair_ptr = "pair_ptr", pair_tok = "pair_tok", u = "u1", v = "v1", x = "x"}, bucket = 1 : i64} {
// CHECK-NEXT: molt.gather_rows ins ["x", "pair_ptr", "pair_tok"] outs ["xg1"]
// CHECK-NEXT: molt.project_v ins ["xg1", "v1"] outs ["h1"]
// CHECK-NEXT: molt.gather_rows ins ["d_yhat", "pair_ptr", "pair_tok"] outs ["d_c1"]
// CHECK-NEXT: molt.project_u_t
// CHECK-NEXT: molt.scale_rows ins ["d_hs1", "pair_gate"] outs ["d_h1"]
// CHECK-NEXT: molt.rowdot
// CHECK-NEXT: molt.project_v_t ins ["d_h1", "v1"] outs ["d_xg1"]
// CHECK-NEXT: molt.scatter_add_rows ins ["d_xg1", "pair_ptr", "pair_tok"] outs ["d_x"]
// CHECK: molt.fused "bucket_apply_dx" {{.*}}bucket = 0 : i64
// CHECK: molt.fused "gate_bwd_dx" attributes {args = {d_x = "d_x", enc_w = "enc_w", pair_dgate = "d_pair_gate", pair_gate = "pair_gate", pair_pre = "pair_pre", pair_ptr = "pair_ptr", pair_tok = "pair_tok", theta = "theta"}} {
// CHECK-NEXT: molt.scatter_pairs
// CHECK-NEXT: molt.gate_grad
// CHECK-NEXT: molt.accumulate
// CHECK-NEXT: molt.linear_t_grad_x ins ["d_pre_lin", "enc_w"] outs ["d_x"]
// CHECK-NOT: molt.linear_t_grad_x

// CHECK-LABEL: molt.program "vjp"
// CHECK: molt.fused "bucket_apply_bwd_dx" attributes {args = {d_u = "d_u1", d_v = "d_v1", d_x = "d_x", d_yhat = "d_yhat", pair_dgate = "d_pair_gate", pair_gate = "pair_gate", pair_ptr = "pair_ptr", pair_tok = "pair_tok", u = "u1", v = "v1", x = "x"}, bucket = 1 : i64} {
// CHECK: molt.project_u_grad
// CHECK: molt.project_v_grad
// CHECK: molt.scatter_add_rows ins ["d_xg1", "pair_ptr", "pair_tok"] outs ["d_x"]
// The encoder's own gradients still read the chain, so it stays for gate_bwd:
// CHECK: molt.scatter_pairs ins ["d_pair_gate", "pair_ptr", "pair_tok"] outs ["d_g"]
// CHECK: molt.linear_t_grad_w ins ["d_pre_lin", "x"] outs ["d_enc_w"]
// CHECK-NEXT: molt.fused "gate_bwd_dx"
