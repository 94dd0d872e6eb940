// --molt-specialize-buckets: every shape but the batch symbols becomes a number, and every op
// records the constants its kernel is specialised on (per bucket: D, R, N, OFF).
// RUN: molt-opt --molt-expand --molt-specialize-buckets %s | FileCheck %s
// RUN: not molt-opt --molt-specialize-buckets %s 2>&1 | FileCheck %s --check-prefix=UNEXPANDED

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<relu>,
                    penalty = #molt.penalty<l1 lambda = 0.01, warmup = 0.0>,
                    decoder_bias = false}
}

// CHECK: molt.param "enc_w" {{.*}}shape = [3, 16]}
// CHECK: molt.param "u0" {bucket = 0 : i64, {{.*}}shape = [1, 16, 8]}
// CHECK: molt.param "v1" {bucket = 1 : i64, {{.*}}shape = [2, 4, 16]}
// CHECK-NOT: molt.param "dec_b"
// CHECK: molt.buffer "x" {dtype = "f32", shape = ["B", 16]}
// CHECK: molt.buffer "pair_ptr" {dtype = "i32", shape = [4]}
// CHECK: molt.buffer "pair_tok" {dtype = "i32", shape = ["P"]}
// CHECK: molt.buffer "theta_unused" {dtype = "f32", shape = [1]}
// CHECK: molt.buffer "gram_u1" {bucket = 1 : i64, dtype = "f32", shape = [2, 4, 4]}
// CHECK: molt.buffer "h1" {bucket = 1 : i64, dtype = "f32", shape = ["P", 4]}
// CHECK-LABEL: molt.program "forward"
// CHECK: molt.linear_t ins ["x", "enc_w"] outs ["pre_lin"] {consts = {D = 16 : i64, T = 3 : i64}}
// CHECK: molt.project_v ins ["xg0", "v0"] outs ["h0"] {bucket = 0 : i64, consts = {D = 16 : i64, N = 1 : i64, OFF = 0 : i64, R = 8 : i64}}
// CHECK: molt.project_v ins ["xg1", "v1"] outs ["h1"] {bucket = 1 : i64, consts = {D = 16 : i64, N = 2 : i64, OFF = 1 : i64, R = 4 : i64}}
// No symbolic model dimension survives.
// CHECK-NOT: "R"
// CHECK-NOT: "N"
// CHECK-NOT: "D"

// UNEXPANDED: error: has no molt.program to specialise (run --molt-expand first)
