// --molt-fusion-report: the kernels of each program before and after fusion.
// RUN: molt-opt --molt-default-pipeline=fusion-report=true %s -o /dev/null | FileCheck %s

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK: fusion report (before fusion): forward, 15 kernels
// CHECK-NEXT: linear_t (unfused)
// CHECK: project_v[1] (unfused)
// CHECK: fusion report (before fusion): train_step, 65 kernels
// CHECK: fusion report (after fusion): forward, 4 kernels
// CHECK-NEXT: encode_gate <- linear_t + bias_cols + gate + compact
// CHECK-NEXT: bucket_apply[0] <- gather_rows + project_v + scale_rows + project_u + scatter_add_rows
// CHECK-NEXT: bucket_apply[1] <- gather_rows + project_v + scale_rows + project_u + scatter_add_rows
// CHECK-NEXT: add_bias (unfused)
// CHECK: fusion report (after fusion): train_step, 16 kernels
// CHECK: penalty <- penalty + penalty_grad
// CHECK-NEXT: mse_loss <- mse_loss + mse_grad
// CHECK-NEXT: colsum (unfused)
// CHECK-NEXT: bucket_apply_bwd[1] <- gather_rows + project_v + scale_rows + gather_rows + project_u_t + project_u_grad + scale_rows + rowdot + project_v_grad
// CHECK-NEXT: bucket_apply_bwd[0]
// CHECK-NEXT: frob_norm_bwd[1] <- trace_norm_grad + gram_grad + gram_grad
// CHECK-NEXT: frob_norm_bwd[0]
// CHECK-NEXT: gate_bwd <- scatter_pairs + gate_grad + accumulate + colsum + linear_t_grad_w
// CHECK-NEXT: grad_norm <- grad_sq_norm
// CHECK-NEXT: adam <- adam_update
