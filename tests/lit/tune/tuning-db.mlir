// molt-tune's database (docs/tuning.md) drives the lowering's launches: a CUDA device's entry
// replaces the heuristic for the kernel it names, CPU devices are ignored, partial entries keep
// the heuristic's other fields, and of two CUDA devices the smaller key wins.
// RUN: echo '{"format": "molt-tuning/1", "devices": {' > %t.json
// RUN: echo '"cpu|x86_64|2-thread CPU": {"kind": "cpu", "name": "c", "arch": "x86_64", "kernels": {"encode_gate(D=16,T=3,bandwidth=0.05,gate=jumprelu)": {"threads": 1}}},' >> %t.json
// RUN: echo '"cuda|sm_80|A100": {"kind": "cuda", "name": "A100", "arch": "sm_80", "kernels": {"bucket_apply(D=16,N=2,OFF=1,R=4)": {"launch": {"grid": ["cdiv(B,16)", "1", "1"]}}}},' >> %t.json
// RUN: echo '"cuda|sm_90|H100": {"kind": "cuda", "name": "H100", "arch": "sm_90", "kernels": {"bucket_apply(D=16,N=2,OFF=1,R=4)": {"launch": {"grid": ["cdiv(B,2)", "1", "1"]}}, "encode_gate(D=16,T=3,bandwidth=0.05,gate=jumprelu)": {"launch": {"block": [128, 1, 1]}}}}}}' >> %t.json
// RUN: molt-opt --molt-default-pipeline=tuning-db=%t.json %s | FileCheck %s

module {
  molt.layer @molt {d_model = 16, element_type = f32,
                    schedule = #molt.schedule<ranks = [8, 4], counts = [1, 2]>,
                    gate = #molt.gate<jumprelu threshold = 0.1, bandwidth = 0.05>,
                    penalty = #molt.penalty<tanh c = 4.0, lambda = 0.01, warmup = 0.1>}
}

// CHECK: molt_k.kernel @encode_gate {{.*}}launch = #molt_k.launch<block = [128, 1, 1], grid = ["cdiv(B,64)", "1", "1"], smem = 0, tile_m = 64, tile_n = 64, tile_k = 32
// CHECK: molt_k.kernel @bucket_apply_0 {{.*}}launch = #molt_k.launch<block = [256, 1, 1], grid = ["cdiv(B,8)", "1", "1"]
// CHECK: molt_k.kernel @bucket_apply_1 {{.*}}launch = #molt_k.launch<block = [256, 1, 1], grid = ["cdiv(B,16)", "1", "1"], smem = 0, tile_m = 64, tile_n = 16, tile_k = 32, stages = 1
