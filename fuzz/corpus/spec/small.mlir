// A MOLT small enough to train in seconds on two CPU cores: used by the tests and the demo.
// 30 transforms of ranks 32..4 (256 feature-equivalents), its teacher MLP and a transcoder
// with the same parameter budget. `molt-opt --molt-describe` prints the sizes.
module {
  molt.layer @molt {
    d_model = 64,
    element_type = f32,
    schedule = #molt.schedule<ranks = [32, 16, 8, 4], counts = [2, 4, 8, 16]>,
    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    decoder_bias = true
  }

  molt.transcoder @transcoder {
    d_model = 64,
    element_type = f32,
    matched = @molt,
    activation = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    skip = false,
    decoder_bias = true
  }

  molt.mlp @teacher {d_model = 64, d_hidden = 256, activation = "gelu"}
}
