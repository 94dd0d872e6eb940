// --molt-reuse-forward: backward / input_grad / vjp drop their recorded copy of the forward, so
// they run after `forward` and read its pair lists; the `forward` itself computes no Gram norms.
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-encode-gate --molt-fuse-bucket-apply --molt-fuse-input-grad --molt-fuse-backward --molt-reuse-forward %s | FileCheck %s
// RUN: molt-opt --molt-expand %s | FileCheck %s --check-prefix=RECORDED

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// RECORDED-LABEL: molt.program "forward"
// RECORDED-NOT: molt.gram
// RECORDED: molt.program "eval"
// RECORDED: molt.gram
// RECORDED-LABEL: molt.program "backward"
// RECORDED-NEXT: molt.linear_t ins ["x", "enc_w"] outs ["pre_lin"] {recorded}

// CHECK-LABEL: molt.program "backward"
// CHECK-NOT: "encode_gate"
// CHECK-NOT: "bucket_apply"
// CHECK: molt.fused "bucket_apply_bwd"
// CHECK-LABEL: molt.program "input_grad"
// CHECK-NOT: "encode_gate"
// CHECK: molt.fused "bucket_apply_dx"
// CHECK-LABEL: molt.program "vjp"
// CHECK-NOT: "encode_gate"
// CHECK: molt.fused "bucket_apply_bwd_dx"
