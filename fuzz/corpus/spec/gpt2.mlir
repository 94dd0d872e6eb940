// A MOLT for one MLP of GPT-2 small (d = 768): the reference schedule at N = 8 (248 transforms
// of ranks 512..32, 20480 feature-equivalents), its teacher MLP (tanh-approximated GELU, as in
// GPT-2) and a parameter-matched transcoder.
module {
  molt.layer @molt {
    d_model = 768,
    element_type = f32,
    schedule = #molt.schedule<reference N = 8>,
    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    decoder_bias = true
  }

  molt.transcoder @transcoder {
    d_model = 768,
    element_type = f32,
    matched = @molt,
    activation = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    skip = false,
    decoder_bias = true
  }

  molt.mlp @teacher {d_model = 768, d_hidden = 3072, activation = "gelu_tanh"}
}
