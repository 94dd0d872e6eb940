// The `jvp` program of --molt-expand (y_dot = J(x)·x_dot) and what it becomes after fusion and
// lowering: the forward's encoder, the gate tangents, and the forward's own decoder kernels
// run on tangents (bucket_apply twice per bucket; tc_decode and skip_apply for a transcoder).
// RUN: molt-opt --molt-expand %s | FileCheck %s
// RUN: molt-opt --molt-expand=symbol=@tc %s | FileCheck %s --check-prefix=TC
// RUN: molt-opt --molt-default-pipeline %s | FileCheck %s --check-prefix=KERNELS
// RUN: molt-opt --molt-default-pipeline=symbol=@tc %s | FileCheck %s --check-prefix=TCKERNELS

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
                    decoder_bias = true}
  molt.transcoder @tc {d_model = 16, element_type = f32, features = 24, skip = true,
                       activation = #molt.gate<topk k = 4>,
                       penalty = #molt.penalty<l1 lambda = 0.001, warmup = 0.0>}
}

// CHECK-DAG: molt.buffer "x_dot" {dtype = "f32", shape = ["B", "D"]}
// CHECK-DAG: molt.buffer "y_dot" {dtype = "f32", shape = ["B", "D"]}
// CHECK-DAG: molt.buffer "pair_tan" {dtype = "f32", shape = ["P"]}
// CHECK-LABEL: molt.program "jvp" of @molt {
// CHECK-NEXT: molt.linear_t ins ["x", "enc_w"] outs ["pre_lin"]
// CHECK-NEXT: molt.bias_cols ins ["pre_lin", "enc_b"] outs ["pre"] {negate}
// CHECK-NEXT: molt.gate ins ["pre", "theta"] outs ["g"]
// CHECK-NEXT: molt.compact ins ["g", "pre"]
// CHECK-NEXT: molt.pair_tangent ins ["x_dot", "enc_w", "pair_ptr", "pair_tok", "pair_gate"] outs ["pair_tan"]
// g_t U_t V_t x_dot, then (e_t·x_dot) U_t V_t x, per bucket.
// CHECK-NEXT: molt.gather_rows ins ["x_dot", "pair_ptr", "pair_tok"] outs ["xg0"] {bucket = 0 : i64}
// CHECK-NEXT: molt.project_v
// CHECK-NEXT: molt.scale_rows ins ["h0", "pair_gate"]
// CHECK-NEXT: molt.project_u
// CHECK-NEXT: molt.scatter_add_rows ins ["c0", "pair_ptr", "pair_tok"] outs ["y_dot"] {bucket = 0 : i64}
// CHECK-NEXT: molt.gather_rows ins ["x", "pair_ptr", "pair_tok"] outs ["xg0"] {bucket = 0 : i64}
// CHECK-NEXT: molt.project_v
// CHECK-NEXT: molt.scale_rows ins ["h0", "pair_tan"]
// CHECK-NEXT: molt.project_u
// CHECK-NEXT: molt.scatter_add_rows ins ["c0", "pair_ptr", "pair_tok"] outs ["y_dot"] {bucket = 0 : i64}
// CHECK: molt.scatter_add_rows ins ["c1", "pair_ptr", "pair_tok"] outs ["y_dot"] {bucket = 1 : i64}
// No decoder bias in a derivative.
// CHECK-NOT: molt.add_bias
// CHECK: }

// TC-LABEL: molt.program "jvp" of @tc {
// TC: molt.gate ins ["pre", "theta_unused"] outs ["g"] {bandwidth = 0.000000e+00 : f64, k = 4 : i64, kind = "topk"}
// TC: molt.pair_tangent ins ["x_dot", "enc_w", "pair_ptr", "pair_tok", "pair_gate"] outs ["pair_tan"]
// TC-NEXT: molt.decode_rows ins ["pair_ptr", "pair_tok", "pair_tan", "dec_w"] outs ["y_dot"]
// TC-NEXT: molt.skip_apply ins ["x_dot", "skip_w"] outs ["y_dot"]
// TC-NEXT: }

// KERNELS-DAG: molt_k.kernel @encode_tangent {attrs = {D = 16 : i64, T = 3 : i64}
// KERNELS-LABEL: molt_k.entry "jvp"
// KERNELS-NEXT: molt_k.launch @encode_gate
// KERNELS-NEXT: molt_k.launch @encode_tangent {args = {enc_w = "enc_w", pair_gate = "pair_gate", pair_ptr = "pair_ptr", pair_tan = "pair_tan", pair_tok = "pair_tok", x_dot = "x_dot"}}
// KERNELS-NEXT: molt_k.launch @bucket_apply_0 {args = {pair_gate = "pair_gate", pair_ptr = "pair_ptr", pair_tok = "pair_tok", u = "u0", v = "v0", x = "x_dot", yhat = "y_dot"}}
// KERNELS-NEXT: molt_k.launch @bucket_apply_0 {args = {pair_gate = "pair_tan", pair_ptr = "pair_ptr", pair_tok = "pair_tok", u = "u0", v = "v0", x = "x", yhat = "y_dot"}}
// KERNELS-NEXT: molt_k.launch @bucket_apply_1 {args = {pair_gate = "pair_gate", {{.*}} x = "x_dot", yhat = "y_dot"}}
// KERNELS-NEXT: molt_k.launch @bucket_apply_1 {args = {pair_gate = "pair_tan", {{.*}} x = "x", yhat = "y_dot"}}
// KERNELS-NEXT: }

// TCKERNELS-DAG: molt_k.kernel @tc_encode_tangent {attrs = {D = 16 : i64, F = 24 : i64}
// TCKERNELS-LABEL: molt_k.entry "jvp"
// TCKERNELS-NEXT: molt_k.launch @tc_encode
// TCKERNELS-NEXT: molt_k.launch @tc_encode_tangent
// TCKERNELS-NEXT: molt_k.launch @tc_decode {args = {dec_w = "dec_w", pair_gate = "pair_tan", pair_ptr = "pair_ptr", pair_tok = "pair_tok", yhat = "y_dot"}}
// TCKERNELS-NEXT: molt_k.launch @skip_apply {args = {skip_w = "skip_w", x = "x_dot", yhat = "y_dot"}}
// TCKERNELS-NEXT: }
