// --molt-fuse-optimizer: the per-parameter norm and Adam ops become one grad_norm and one adam
// kernel over every parameter, in declaration order.
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-optimizer %s | FileCheck %s

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK-LABEL: molt.program "forward"
// CHECK-NOT: molt.fused
// CHECK-LABEL: molt.program "train_step"
// CHECK: molt.fused "grad_norm" attributes {args = {params = "enc_w,enc_b,theta,u0,v0,u1,v1,dec_b", stats = "stats"}} {
// CHECK-COUNT-8: molt.grad_sq_norm
// CHECK-NEXT: {{^ *[}]$}}
// CHECK-NEXT: molt.fused "adam" attributes {args = {params = "enc_w,enc_b,theta,u0,v0,u1,v1,dec_b", scalars = "scalars", stats = "stats"}} {
// CHECK-COUNT-8: molt.adam_update
// CHECK-NEXT: {{^ *[}]$}}
// CHECK-NEXT: {{^ *[}]$}}
