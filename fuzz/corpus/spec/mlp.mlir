// Round-trip of molt.mlp with each activation.
// RUN: molt-opt %s | FileCheck %s
// RUN: molt-opt %s | molt-opt | FileCheck %s
// RUN: molt-opt %s --mlir-print-op-generic | molt-opt | FileCheck %s

// CHECK: molt.mlp @gelu {d_model = 64, d_hidden = 256, activation = "gelu"}
molt.mlp @gelu {d_model = 64, d_hidden = 256, activation = "gelu"}
// CHECK: molt.mlp @gelu_tanh {d_model = 768, d_hidden = 3072, activation = "gelu_tanh"}
molt.mlp @gelu_tanh {activation = "gelu_tanh", d_hidden = 3072, d_model = 768}
// CHECK: molt.mlp @relu {d_model = 1, d_hidden = 1, activation = "relu"}
molt.mlp @relu {d_model = 1, d_hidden = 1, activation = "relu"}
