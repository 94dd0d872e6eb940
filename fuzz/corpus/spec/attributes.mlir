// Round-trip of every molt attribute and of each spelling of the schedule.
// RUN: molt-opt %s | FileCheck %s
// RUN: molt-opt %s | molt-opt | FileCheck %s
// RUN: molt-opt %s --mlir-print-op-generic | molt-opt | FileCheck %s

// CHECK-LABEL: module attributes
module attributes {
  // CHECK-SAME: test.bucket = #molt.bucket<rank = 32, count = 16>
  test.bucket = #molt.bucket<rank = 32, count = 16>,
  // The reference form, and the same buckets written out, print as `reference`.
  // CHECK-SAME: test.dense_ref = #molt.schedule<reference N = 3>
  test.dense_ref = #molt.schedule<ranks = [512, 256, 128, 64, 32], counts = [3, 6, 12, 24, 48]>,
  // CHECK-SAME: test.gate_jumprelu = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>
  test.gate_jumprelu = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
  // CHECK-SAME: test.gate_relu = #molt.gate<relu>
  test.gate_relu = #molt.gate<relu>,
  // CHECK-SAME: test.gate_topk = #molt.gate<topk k = 32>
  test.gate_topk = #molt.gate<topk k = 32>,
  // Shortest exact decimals, always with a '.'.
  // CHECK-SAME: test.gate_zero = #molt.gate<jumprelu threshold = 0.0, bandwidth = 1.0e-10>
  test.gate_zero = #molt.gate<jumprelu threshold = 0.0, bandwidth = 0.0000000001>,
  // CHECK-SAME: test.geometric = #molt.schedule<geometric N = 2, ranks = [32, 16, 8, 4]>
  test.geometric = #molt.schedule<geometric N = 2, ranks = [32, 16, 8, 4]>,
  // Other counts print as explicit lists; a single bucket is never called geometric.
  // CHECK-SAME: test.irregular = #molt.schedule<ranks = [48, 16, 8], counts = [3, 5, 9]>
  test.irregular = #molt.schedule<ranks = [48, 16, 8], counts = [3, 5, 9]>,
  // CHECK-SAME: test.l1 = #molt.penalty<l1 lambda = 0.001, warmup = 0.0>
  test.l1 = #molt.penalty<l1 lambda = 1.0e-3, warmup = 0.0>,
  // CHECK-SAME: test.one = #molt.schedule<ranks = [8], counts = [4]>
  test.one = #molt.schedule<ranks = [8], counts = [4]>,
  // CHECK-SAME: test.reference = #molt.schedule<reference N = 8>
  test.reference = #molt.schedule<reference N = 8>,
  // CHECK-SAME: test.tanh = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 1.0>
  test.tanh = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 1.0>,
  // Written as explicit lists, doubling counts print in the geometric form.
  // CHECK-SAME: test.written_out = #molt.schedule<geometric N = 1, ranks = [64, 32]>
  test.written_out = #molt.schedule<ranks = [64, 32], counts = [1, 2]>
} {
}
