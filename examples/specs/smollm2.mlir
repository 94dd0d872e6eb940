// A MOLT for one MLP of SmolLM2-135M (d = 576, SwiGLU of width 1536) and a parameter-matched
// transcoder. The schedule is the reference one at N = 1 (1 of rank 512, 2 of 256, 4 of 128,
// 8 of 64, 16 of 32: 31 transforms); scale N for larger budgets. The teacher is not declared
// here: molt-harvest --model smollm2 writes it (teacher.safetensors, activation "swiglu").
module {
  molt.layer @molt {
    d_model = 576,
    element_type = f32,
    schedule = #molt.schedule<geometric N = 1, ranks = [512, 256, 128, 64, 32]>,
    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    decoder_bias = true
  }

  molt.transcoder @transcoder {
    d_model = 576,
    element_type = f32,
    matched = @molt,
    activation = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
    skip = false,
    decoder_bias = true
  }
}
