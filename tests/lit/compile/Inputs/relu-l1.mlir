// A ReLU layer with an L1 penalty and no decoder bias, and a top-k transcoder with a skip.
module {
  molt.layer @relu {d_model = 32, element_type = f32,
                    schedule = #molt.schedule<ranks = [16, 8, 2], counts = [1, 3, 5]>,
                    gate = #molt.gate<relu>,
                    penalty = #molt.penalty<l1 lambda = 0.002, warmup = 0.0>,
                    decoder_bias = false}
  molt.transcoder @tc {d_model = 32, element_type = f32, features = 40, skip = true,
                       activation = #molt.gate<topk k = 4>,
                       penalty = #molt.penalty<tanh c = 2.0, lambda = 0.01, warmup = 0.2>}
}
