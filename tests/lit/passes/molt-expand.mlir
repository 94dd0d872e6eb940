// --molt-expand: params and buffers with symbolic shapes, one op per bucket, and a train step
// whose backward is derived from the forward ops' gradient rules.
// RUN: molt-opt --molt-expand %s | FileCheck %s
// RUN: molt-opt --molt-expand=symbol=@tc %s | FileCheck %s --check-prefix=TC
// RUN: molt-opt --molt-expand=symbol=@teacher --molt-specialize-buckets %s | FileCheck %s --check-prefix=MLP
// RUN: not molt-opt --molt-expand=symbol=@nope %s 2>&1 | FileCheck %s --check-prefix=NOSYM

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
                    decoder_bias = true}
  molt.transcoder @tc {d_model = 16, element_type = f32, features = 24, skip = true,
                       activation = #molt.gate<topk k = 4>,
                       penalty = #molt.penalty<l1 lambda = 0.001, warmup = 0.0>}
  molt.mlp @teacher {d_model = 16, d_hidden = 64, activation = "gelu"}
}

// Params in optimiser order; ranks and counts are still symbols.
// CHECK: molt.param "enc_w" {{.*}}shape = ["T", "D"]
// CHECK: molt.param "enc_b" {{.*}}init = "zeros"
// CHECK: molt.param "theta" {init = "const", scale = 1.000000e-01 : f64, shape = ["T"]}
// CHECK: molt.param "u0" {bucket = 0 : i64, {{.*}}shape = ["N", "D", "R"]}
// CHECK: molt.param "v0" {bucket = 0 : i64, {{.*}}shape = ["N", "R", "D"]}
// CHECK: molt.param "u1" {bucket = 1 : i64
// CHECK: molt.param "dec_b"
// CHECK: molt.buffer "pair_ptr" {dtype = "i32", shape = ["T+1"]}

// CHECK-LABEL: molt.program "forward" of @molt {
// CHECK-NEXT: molt.linear_t ins ["x", "enc_w"] outs ["pre_lin"]
// CHECK-NEXT: molt.bias_cols ins ["pre_lin", "enc_b"] outs ["pre"] {negate}
// CHECK-NEXT: molt.gate ins ["pre", "theta"] outs ["g"] {{.*}}kind = "jumprelu"
// CHECK-NEXT: molt.compact ins ["g", "pre"] outs ["pair_ptr", "pair_tok", "pair_gate", "pair_pre", "pair_count"]
// CHECK-NEXT: molt.gather_rows ins ["x", "pair_ptr", "pair_tok"] outs ["xg0"] {bucket = 0 : i64}
// The Gram norms are the penalty's: eval and train_step compute them, forward does not.
// CHECK-LABEL: molt.program "eval" of @molt {
// CHECK: molt.gram ins ["u0"] outs ["gram_u0"] {bucket = 0 : i64}
// CHECK-NEXT: molt.gram ins ["v0"] outs ["gram_v0"] {bucket = 0 : i64, transpose}
// CHECK-NEXT: molt.trace_norm ins ["gram_u0", "gram_v0"] outs ["norm"] {bucket = 0 : i64}
// CHECK: molt.gather_rows ins ["x", "pair_ptr", "pair_tok"] outs ["xg1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.project_v ins ["xg1", "v1"] outs ["h1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.scale_rows ins ["h1", "pair_gate"] outs ["hs1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.project_u ins ["hs1", "u1"] outs ["c1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.scatter_add_rows ins ["c1", "pair_ptr", "pair_tok"] outs ["yhat"] {bucket = 1 : i64}
// CHECK-NEXT: molt.add_bias ins ["dec_b"] outs ["yhat"]
// CHECK-NEXT: molt.mse_loss ins ["yhat", "y"] outs ["stats"]
// CHECK-NEXT: molt.penalty ins ["pair_ptr", "pair_gate", "norm", "scalars"] outs ["stats"] {c = 4.000000e+00 : f64, kind = "tanh"}
// CHECK-NEXT: {{^ *[}]$}}

// The backward, in reverse order of the forward: losses, decoder bias, buckets last to first
// (no gradient reaches x or the integer pair lists), norms, then the encoder.
// CHECK-LABEL: molt.program "train_step" of @molt {
// CHECK: molt.penalty_grad ins ["pair_ptr", "pair_gate", "norm", "scalars"] outs ["d_pair_gate", "d_norm"]
// CHECK-NEXT: molt.mse_grad ins ["yhat", "y"] outs ["d_yhat"]
// CHECK-NEXT: molt.colsum ins ["d_yhat"] outs ["d_dec_b"]
// CHECK-NEXT: molt.gather_rows ins ["d_yhat", "pair_ptr", "pair_tok"] outs ["d_c1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.project_u_t ins ["d_c1", "u1"] outs ["d_hs1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.project_u_grad ins ["d_c1", "hs1"] outs ["d_u1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.scale_rows ins ["d_hs1", "pair_gate"] outs ["d_h1"] {bucket = 1 : i64}
// CHECK-NEXT: molt.rowdot ins ["h1", "d_hs1"] outs ["d_pair_gate"] {bucket = 1 : i64}
// CHECK-NEXT: molt.project_v_grad ins ["d_h1", "xg1"] outs ["d_v1"] {bucket = 1 : i64}
// CHECK-NOT: project_v_t
// CHECK: molt.trace_norm_grad ins ["d_norm", "norm", "gram_u0", "gram_v0"] outs ["d_gram_u0", "d_gram_v0"] {bucket = 0 : i64}
// CHECK-NEXT: molt.gram_grad ins ["v0", "d_gram_v0"] outs ["d_v0"] {bucket = 0 : i64, transpose}
// CHECK-NEXT: molt.gram_grad ins ["u0", "d_gram_u0"] outs ["d_u0"] {bucket = 0 : i64}
// CHECK-NEXT: molt.scatter_pairs ins ["d_pair_gate", "pair_ptr", "pair_tok"] outs ["d_g"]
// CHECK-NEXT: molt.gate_grad ins ["pre", "theta", "d_g"] outs ["d_pre", "d_theta"]
// CHECK-NEXT: molt.accumulate ins ["d_pre"] outs ["d_pre_lin"]
// CHECK-NEXT: molt.colsum ins ["d_pre"] outs ["d_enc_b"] {negate}
// CHECK-NEXT: molt.linear_t_grad_w ins ["d_pre_lin", "x"] outs ["d_enc_w"]
// CHECK-NEXT: molt.grad_sq_norm ins ["d_enc_w"] outs ["stats"]
// CHECK: molt.adam_update ins ["enc_w", "d_enc_w", "scalars", "stats"] outs ["enc_w"]
// CHECK: molt.adam_update ins ["dec_b", "d_dec_b", "scalars", "stats"] outs ["dec_b"]
// CHECK-NEXT: {{^ *[}]$}}

// A top-k transcoder with a skip connection: no θ (a dummy), decoder rows, skip, its own penalty.
// TC-NOT: molt.param "theta"
// TC: molt.param "dec_w" {{.*}}shape = ["F", "D"]
// TC: molt.param "skip_w" {{.*}}shape = ["D", "D"]
// TC: molt.buffer "theta_unused"
// TC-LABEL: molt.program "forward" of @tc {
// TC: molt.bias_cols ins ["pre_lin", "enc_b"] outs ["pre"]{{$}}
// TC-NEXT: molt.gate ins ["pre", "theta_unused"] outs ["g"] {bandwidth = 0.000000e+00 : f64, k = 4 : i64, kind = "topk"}
// TC: molt.decode_rows ins ["pair_ptr", "pair_tok", "pair_gate", "dec_w"] outs ["yhat"]
// TC-NEXT: molt.skip_apply ins ["x", "skip_w"] outs ["yhat"]
// TC-LABEL: molt.program "train_step" of @tc {
// TC: molt.feature_penalty_grad ins ["pair_ptr", "pair_gate", "dec_w", "scalars"] outs ["d_pair_gate", "d_dec_w"] {c = 0.000000e+00 : f64, kind = "l1"}
// TC: molt.skip_grad ins ["d_yhat", "x"] outs ["d_skip_w"]
// TC-NEXT: molt.decode_rows_grad ins ["d_yhat", "pair_ptr", "pair_tok", "pair_gate", "dec_w"] outs ["d_dec_w", "d_pair_gate"]
// TC: molt.gate_grad ins ["pre", "theta_unused", "d_g"] outs ["d_pre", "d_theta_unused"]

// The teacher: a forward program only, its weights loaded from a file.
// MLP: molt.param "w_in" {init = "zeros", scale = 0.000000e+00 : f64, shape = [64, 16]}
// MLP: molt.param "w_out" {{.*}}shape = [16, 64]}
// MLP-LABEL: molt.program "forward" of @teacher {
// MLP-NEXT: molt.linear_t ins ["x", "w_in"] outs ["t_pre_lin"] {consts = {D = 16 : i64, H = 64 : i64}}
// MLP-NEXT: molt.bias_cols ins ["t_pre_lin", "b_in"] outs ["t_pre"]
// MLP-NEXT: molt.activation ins ["t_pre"] outs ["t_h"] {consts = {{.*}}, kind = "gelu"}
// MLP-NEXT: molt.linear_t ins ["t_h", "w_out"] outs ["t_out_lin"]
// MLP-NEXT: molt.bias_cols ins ["t_out_lin", "b_out"] outs ["yhat"]
// MLP-NEXT: {{^ *[}]$}}
// MLP-NOT: molt.program
// NOSYM: error: no spec op @nope in the module
