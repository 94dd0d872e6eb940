// --molt-lower-to-kernels: each fused or single op becomes a launch of a molt_k.kernel whose
// attrs are the specialised constants and whose launch comes from the heuristic, or from the
// tuning database when it names the kernel.
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-encode-gate --molt-fuse-bucket-apply --molt-fuse-input-grad --molt-fuse-backward --molt-fuse-optimizer --molt-reuse-forward --molt-lower-to-kernels %s | FileCheck %s
// RUN: echo '{"bucket_apply(D=16,N=2,OFF=1,R=4)": {"block": [128, 1, 1], "tile_n": 4, "stages": 2}}' > %t.json
// RUN: molt-opt --molt-default-pipeline=tuning-db=%t.json %s | FileCheck %s --check-prefix=TUNED
// RUN: not molt-opt --molt-expand --molt-lower-to-kernels %s 2>&1 | FileCheck %s --check-prefix=UNFUSED
// RUN: not molt-opt --molt-default-pipeline=tuning-db=%t.missing %s 2>&1 | FileCheck %s --check-prefix=NODB

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK: module attributes {molt_k.spec = @molt}
// CHECK-NOT: molt.program
// CHECK: molt_k.kernel @encode_gate {attrs = {D = 16 : i64, T = 3 : i64, bandwidth = 5.000000e-02 : f64, gate = "jumprelu"}, entry = "molt_encode_gate", launch = #molt_k.launch<block = [256, 1, 1], grid = ["cdiv(B,64)", "1", "1"]
// CHECK: molt_k.kernel @bucket_apply_1 {attrs = {D = 16 : i64, N = 2 : i64, OFF = 1 : i64, R = 4 : i64}, entry = "molt_bucket_apply_1", launch = #molt_k.launch<block = [256, 1, 1], grid = ["cdiv(B,8)", "1", "1"], smem = 0, tile_m = 64, tile_n = 16, tile_k = 32, stages = 1, split = "none">, op = "bucket_apply"}
// CHECK: molt_k.kernel @penalty {attrs = {T = 3 : i64, c = 4.000000e+00 : f64, kind = "tanh"}
// CHECK: molt_k.kernel @gate_bwd {attrs = {D = 16 : i64, T = 3 : i64, bandwidth = 5.000000e-02 : f64, gate = "jumprelu"}
// CHECK: molt_k.kernel @adam {attrs = {}
// CHECK-LABEL: molt_k.entry "forward" {
// CHECK-NEXT: molt_k.launch @encode_gate
// CHECK-NEXT: molt_k.launch @bucket_apply_0
// CHECK-NEXT: molt_k.launch @bucket_apply_1
// CHECK-NEXT: molt_k.launch @add_bias {args = {dec_b = "dec_b", yhat = "yhat"}}
// CHECK-NEXT: {{^ *[}]$}}
// In eval the Gram norms come first (only the penalty reads them); the losses are single ops; they lower to the same kernels as in train_step.
// CHECK-LABEL: molt_k.entry "eval" {
// CHECK-NEXT: molt_k.launch @encode_gate
// CHECK-NEXT: molt_k.launch @frob_norm_0 {args = {gram_u = "gram_u0", gram_v = "gram_v0", norm = "norm", u = "u0", v = "v0"}}
// CHECK: molt_k.launch @mse_loss {args = {d_yhat = "d_yhat", stats = "stats", y = "y", yhat = "yhat"}}
// CHECK-NEXT: molt_k.launch @penalty
// CHECK-NEXT: {{^ *[}]$}}
// CHECK-LABEL: molt_k.entry "train_step" {
// CHECK: molt_k.launch @bias_grad {args = {d_dec_b = "d_dec_b", d_yhat = "d_yhat"}}
// CHECK: molt_k.launch @adam {args = {params = "enc_w,enc_b,theta,u0,v0,u1,v1,dec_b", scalars = "scalars", stats = "stats"}}
// CHECK-NEXT: {{^ *[}]$}}

// TUNED: molt_k.kernel @bucket_apply_0 {{.*}}launch = #molt_k.launch<block = [256, 1, 1]
// TUNED: molt_k.kernel @bucket_apply_1 {{.*}}launch = #molt_k.launch<block = [128, 1, 1], grid = ["cdiv(B,8)", "1", "1"], smem = 0, tile_m = 64, tile_n = 4, tile_k = 32, stages = 2, split = "none">

// UNFUSED: error: has no kernel: run the fusion passes before lowering
// NODB: error: cannot read tuning database
