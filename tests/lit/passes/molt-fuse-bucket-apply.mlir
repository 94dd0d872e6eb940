// --molt-fuse-bucket-apply: per bucket, gather → V → scale → U → scatter-add is one kernel
// (the rank-r rows h0/hs0 never leave it), and gram(u) + gram(v) + trace_norm is frob_norm.
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-bucket-apply %s | FileCheck %s
// RUN: molt-opt --molt-expand --molt-specialize-buckets --molt-fuse-bucket-apply --molt-fusion-report %s -o /dev/null | FileCheck %s --check-prefix=REPORT

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK-LABEL: molt.program "eval"
// CHECK: molt.fused "frob_norm" attributes {args = {gram_u = "gram_u0", gram_v = "gram_v0", norm = "norm", u = "u0", v = "v0"}, bucket = 0 : i64} {
// CHECK-NEXT: molt.gram ins ["u0"]
// CHECK-NEXT: molt.gram ins ["v0"]
// CHECK-NEXT: molt.trace_norm
// CHECK-NEXT: {{^ *[}]$}}
// CHECK: molt.fused "frob_norm" attributes {args = {gram_u = "gram_u1", gram_v = "gram_v1", norm = "norm", u = "u1", v = "v1"}, bucket = 1 : i64}
// CHECK: molt.fused "bucket_apply" attributes {args = {pair_gate = "pair_gate", pair_ptr = "pair_ptr", pair_tok = "pair_tok", u = "u0", v = "v0", x = "x", yhat = "yhat"}, bucket = 0 : i64} {
// CHECK-NEXT: molt.gather_rows ins ["x", "pair_ptr", "pair_tok"] outs ["xg0"]
// CHECK-NEXT: molt.project_v ins ["xg0", "v0"] outs ["h0"] {bucket = 0 : i64, consts = {D = 16 : i64, N = 1 : i64, OFF = 0 : i64, R = 8 : i64}}
// CHECK-NEXT: molt.scale_rows ins ["h0", "pair_gate"] outs ["hs0"]
// CHECK-NEXT: molt.project_u ins ["hs0", "u0"] outs ["c0"]
// CHECK-NEXT: molt.scatter_add_rows ins ["c0", "pair_ptr", "pair_tok"] outs ["yhat"]
// CHECK-NEXT: {{^ *[}]$}}
// CHECK-NEXT: molt.fused "bucket_apply" attributes {args = {{{.*}}u = "u1", v = "v1", x = "x", yhat = "yhat"}, bucket = 1 : i64}
// CHECK: molt.add_bias
// Nothing of the forward chain is left outside a kernel (the backward is the next pass's).
// REPORT-LABEL: fusion report: forward, 7 kernels
// REPORT-NOT: [{{[0-9]}}] (unfused)
// REPORT-LABEL: fusion report: eval, 11 kernels
// REPORT-NOT: [{{[0-9]}}] (unfused)
// REPORT-LABEL: fusion report: train_step
