// --molt-fuse-encode-gate: linear_t + bias_cols + gate + compact become one encode_gate kernel
// (tc_encode for a transcoder) whose arguments bind the canonical names of ops.h.
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-encode-gate %s | FileCheck %s
// RUN: molt-opt --molt-expand=symbol=@tc --molt-specialize-buckets --molt-fuse-encode-gate %s | FileCheck %s --check-prefix=TC

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
  molt.transcoder @tc {d_model = 16, element_type = f32, features = 24,
                       activation = #molt.gate<relu>,
                       penalty = #molt.penalty<l1 lambda = 0.001, warmup = 0.0>}
}

// CHECK-LABEL: molt.program "forward"
// CHECK-NEXT: molt.fused "encode_gate" attributes {args = {enc_b = "enc_b", enc_w = "enc_w", pair_count = "pair_count", pair_gate = "pair_gate", pair_pre = "pair_pre", pair_ptr = "pair_ptr", pair_tok = "pair_tok", pre = "pre", stats = "stats", theta = "theta", x = "x"}} {
// CHECK-NEXT: molt.linear_t
// CHECK-NEXT: molt.bias_cols
// CHECK-NEXT: molt.gate
// CHECK-NEXT: molt.compact
// CHECK-NEXT: {{^ *[}]$}}
// CHECK-NEXT: molt.gather_rows
// The backward reads the compacted lists, so it is left for --molt-fuse-backward.
// CHECK-LABEL: molt.program "train_step"
// CHECK-NEXT: molt.fused "encode_gate"
// CHECK: molt.scatter_pairs

// TC-LABEL: molt.program "forward"
// TC-NEXT: molt.fused "tc_encode" attributes {args = {{{.*}}theta = "theta_unused", x = "x"}}
// TC: molt.decode_rows
