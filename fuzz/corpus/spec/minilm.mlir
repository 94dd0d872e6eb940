// A MOLT for one MLP of a MiniLM-sized model (d = 384), its teacher and a parameter-matched
// transcoder. The schedule keeps the reference proportions at N = 2 (counts 2, 4, 8, 16, 32:
// 62 transforms) with the reference ranks halved, because rank 512 exceeds d_model = 384 and
// the verifier rejects a transform wider than the layer.
module {
  molt.layer @molt {
    d_model = 384,
    element_type = f32,
    schedule = #molt.schedule<geometric N = 2, ranks = [256, 128, 64, 32, 16]>,
    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    decoder_bias = true
  }

  molt.transcoder @transcoder {
    d_model = 384,
    element_type = f32,
    matched = @molt,
    activation = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    skip = false,
    decoder_bias = true
  }

  molt.mlp @teacher {d_model = 384, d_hidden = 1536, activation = "gelu"}
}
