// --molt-describe: sizes from dialect/MoltCounts.h, checked against hand-computed values.
// RUN: molt-opt --molt-describe %s -o /dev/null | FileCheck %s
// RUN: molt-opt --molt-describe %examples/small.mlir -o /dev/null | FileCheck %s --check-prefix=SMALL
// RUN: molt-opt --molt-describe %examples/gpt2.mlir -o /dev/null | FileCheck %s --check-prefix=GPT2
// The pass leaves the IR as it was.
// RUN: molt-opt --molt-describe %s | sed -n '/^module/,$p' > %t.after
// RUN: molt-opt %s > %t.before
// RUN: diff %t.before %t.after

// d = 64, relu (no thresholds), no decoder bias: T = 3, encoder 3*64 + 3 = 195,
// U,V 2*64*(48*1 + 16*2) = 10240, total 10435.
// CHECK-LABEL: molt.layer @plain: d_model = 64, f16, relu, l1 penalty, decoder bias off
// CHECK-NEXT:  rank count features U,V params
// CHECK-NEXT:    48     1       48       6144
// CHECK-NEXT:    16     2       32       4096
// CHECK-NEXT: transforms 3, feature-equivalents 80, parameters 10435 (encoder 195, transforms 10240, decoder bias 0)
molt.layer @plain {d_model = 64, element_type = f16,
                   schedule = #molt.schedule<ranks = [48, 16], counts = [1, 2]>,
                   gate = #molt.gate<relu>, penalty = #molt.penalty<l1 lambda = 0.01, warmup = 0.0>,
                   decoder_bias = false}

// Fixed width with skip: 10*(2*64 + 1) + 64 (b_dec) + 64*64 (skip) = 5450.
// CHECK-LABEL: molt.transcoder @fixed: d_model = 64, f32, topk k = 4, l1 penalty, skip on, decoder bias on
// CHECK-NEXT: features 10, parameters 5450{{$}}
molt.transcoder @fixed {d_model = 64, element_type = f32, features = 10,
                        activation = #molt.gate<topk k = 4>,
                        penalty = #molt.penalty<l1 lambda = 0.0, warmup = 0.0>, skip = true}

// Matched to 10435 with jumprelu (2*64 + 2 per feature) and b_dec: F = (10435 - 64) / 130 = 79,
// params 79*130 + 64 = 10334.
// CHECK-LABEL: molt.transcoder @matched: d_model = 64, f32, jumprelu, tanh penalty, skip off, decoder bias on
// CHECK-NEXT: features 79, parameters 10334 (matched to @plain: 0.9903 of its 10435)
molt.transcoder @matched {d_model = 64, element_type = f32, matched = @plain,
                          activation = #molt.gate<jumprelu threshold = 0.5, bandwidth = 0.1>,
                          penalty = #molt.penalty<tanh c = 1.0, lambda = 0.1, warmup = 0.2>}

// 2*64*256 + 256 + 64 = 33088.
// CHECK-LABEL: molt.mlp @teacher: d_model = 64, d_hidden = 256, relu
// CHECK-NEXT: parameters 33088
molt.mlp @teacher {d_model = 64, d_hidden = 256, activation = "relu"}

// 30 transforms: encoder 30*64 + 2*30 = 1980, U,V 2*64*256 = 32768, b_dec 64.
// SMALL: molt.layer @molt: d_model = 64, f32, jumprelu, tanh penalty, decoder bias on
// SMALL: transforms 30, feature-equivalents 256, parameters 34812 (encoder 1980, transforms 32768, decoder bias 64)
// (34812 - 64) / 130 = 267.
// SMALL: molt.transcoder @transcoder:
// SMALL-NEXT: features 267, parameters 34774 (matched to @molt: 0.9989 of its 34812)
// SMALL: molt.mlp @teacher: d_model = 64, d_hidden = 256, gelu
// SMALL-NEXT: parameters 33088

// Reference N = 8: 31*8 = 248 transforms, 2560*8 = 20480 feature-equivalents.
// GPT2: molt.layer @molt: d_model = 768
// GPT2:    512     8     4096    6291456
// GPT2:     32   128     4096    6291456
// GPT2: transforms 248, feature-equivalents 20480, parameters 31649008
// GPT2: molt.mlp @teacher: d_model = 768, d_hidden = 3072, gelu_tanh
// GPT2-NEXT: parameters 4722432
