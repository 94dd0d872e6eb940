// The schedule search's testbed (docs/tuning.md): small.mlir's MOLT (ranks 32..4, counts
// 2,4,8,16: 256 feature-equivalents) against the rank-groups teacher
// `molt-synth --d 64 --rank-groups 32:2,16:4,8:8,4:16`, whose local maps have exactly the
// reference schedule's ranks (one cluster per transform), so the search can tell whether a
// rank schedule that matches the teacher's beats uniform ranks at the same parameter count.
// λ = 0.3 (small.mlir: 0.01) puts the reference at L0 ≈ 1.2 after 30000 steps, the teacher's
// own sparsity (one group active per token); at 0.01 every candidate sits at L0 4-25.
module {
  molt.layer @molt {
    d_model = 64,
    element_type = f32,
    schedule = #molt.schedule<ranks = [32, 16, 8, 4], counts = [2, 4, 8, 16]>,
    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.3, warmup = 0.1>,
    decoder_bias = true
  }

  molt.mlp @teacher {d_model = 64, d_hidden = 512, activation = "gelu"}
}
