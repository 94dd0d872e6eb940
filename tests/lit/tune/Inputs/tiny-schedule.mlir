// A layer small enough for a whole schedule search in seconds (tests/lit/tune/schedule.test):
// 7 transforms of ranks 4, 2, 1 on d = 8 (12 feature-equivalents), beside its teacher.
module {
  molt.layer @molt {
    d_model = 8,
    element_type = f32,
    schedule = #molt.schedule<ranks = [4, 2, 1], counts = [1, 2, 4]>,
    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    decoder_bias = true
  }

  molt.mlp @teacher {d_model = 8, d_hidden = 32, activation = "gelu"}
}
