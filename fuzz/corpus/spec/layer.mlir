// Round-trip of molt.layer: every field, defaults, and annotations from other dialects.
// RUN: molt-opt %s | FileCheck %s
// RUN: molt-opt %s | molt-opt | FileCheck %s
// RUN: molt-opt %s --mlir-print-op-generic | molt-opt | FileCheck %s

// Fields print in a fixed order, whatever order they were written in.
// CHECK: molt.layer @molt {d_model = 64, element_type = f32, schedule = #molt.schedule<geometric N = 2, ranks = [32, 16, 8, 4]>, gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>, penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>, decoder_bias = true}
molt.layer @molt {
  penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>,
  gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
  schedule = #molt.schedule<ranks = [32, 16, 8, 4], counts = [2, 4, 8, 16]>,
  element_type = f32,
  d_model = 64
}

// CHECK: molt.layer @big {d_model = 768, element_type = bf16, schedule = #molt.schedule<reference N = 8>, gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.5, warmup = 0.0>, decoder_bias = false}
molt.layer @big {d_model = 768, element_type = bf16, schedule = #molt.schedule<reference N = 8>,
                 gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.5, warmup = 0.0>,
                 decoder_bias = false}

// A rank equal to d_model is allowed; a field from another dialect is kept.
// CHECK: molt.layer @full {d_model = 16, element_type = f16, schedule = #molt.schedule<ranks = [16], counts = [1]>, gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>, decoder_bias = true, test.note = "kept"}
molt.layer @full {d_model = 16, element_type = f16, schedule = #molt.schedule<ranks = [16], counts = [1]>,
                  gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>,
                  test.note = "kept"}
