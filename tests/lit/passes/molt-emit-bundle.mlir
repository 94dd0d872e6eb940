// --molt-emit-bundle: the manifest (docs/bundle.md), one .cu per kernel with its constants, and
// the device headers, from the kernel-level module.
// RUN: rm -rf %t && molt-opt --molt-default-pipeline=out-dir=%t %s -o /dev/null
// RUN: FileCheck %s --input-file=%t/manifest.json
// RUN: FileCheck %s --check-prefix=CU --input-file=%t/bucket_apply_1.cu
// RUN: ls %t/molt_kernels | FileCheck %s --check-prefix=HEADERS
// RUN: not molt-opt --molt-emit-bundle=out-dir=%t %s 2>&1 | FileCheck %s --check-prefix=UNLOWERED

module {
  molt.layer @small {d_model = 16, element_type = f32,
                     schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                     gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                     penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK: "format": "molt-bundle"
// CHECK: "model":
// CHECK-DAG: "kind": "molt"
// CHECK-DAG: "name": "small"
// CHECK-DAG: "d_model": 16
// CHECK: "params":
// CHECK: "name": "enc_w"
// CHECK: "name": "u1"
// CHECK: "buffers":
// CHECK: "kernels":
// CHECK: "entry_points":

// CU: #include "molt_kernels/bucket_apply.cuh"
// CU: static constexpr long long D = 16LL;
// CU: static constexpr long long N = 2LL;
// CU: static constexpr long long OFF = 1LL;
// CU: static constexpr long long R = 4LL;
// CU: extern "C" __global__ void __launch_bounds__(256) molt_bucket_apply_1(molt::k::Args a)
// CU-NOT: for

// HEADERS: abi.cuh
// HEADERS: bucket_apply.cuh

// UNLOWERED: error: is not lowered
