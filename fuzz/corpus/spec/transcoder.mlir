// Round-trip of molt.transcoder: fixed width, matched width, every gate, skip.
// RUN: molt-opt %s | FileCheck %s
// RUN: molt-opt %s | molt-opt | FileCheck %s
// RUN: molt-opt %s --mlir-print-op-generic | molt-opt | FileCheck %s

molt.layer @molt {d_model = 64, element_type = f32,
                  schedule = #molt.schedule<ranks = [32, 16, 8, 4], counts = [2, 4, 8, 16]>,
                  gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                  penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// Defaults (skip off, decoder bias on) are printed.
// CHECK: molt.transcoder @matched {d_model = 64, element_type = f32, matched = @molt, activation = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>, skip = false, decoder_bias = true}
molt.transcoder @matched {d_model = 64, element_type = f32, matched = @molt,
                          activation = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                          penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}

// CHECK: molt.transcoder @topk {d_model = 64, element_type = f32, features = 512, activation = #molt.gate<topk k = 512>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>, skip = true, decoder_bias = false}
molt.transcoder @topk {d_model = 64, element_type = f32, features = 512,
                       activation = #molt.gate<topk k = 512>,
                       penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>,
                       skip = true, decoder_bias = false}

// CHECK: molt.transcoder @relu {d_model = 64, element_type = f32, matched = @molt, activation = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.002, warmup = 0.5>, skip = true, decoder_bias = true}
molt.transcoder @relu {d_model = 64, element_type = f32, matched = @molt, activation = #molt.gate<relu>,
                       penalty = #molt.penalty<l1 lambda = 0.002, warmup = 0.5>, skip = true}
