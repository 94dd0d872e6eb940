// The single emitter of CUDA wrapper text and default launch geometry for a kernel of a plan.
//
// The compiler's emission pass and the hand-built test fixtures both call these, so the
// `<kernel>.cu` files of a bundle and the launch the manifest records always agree with the
// device templates in kernels/cuda/*.cuh (see kernels/cuda/README.md). Pure C++; no CUDA.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <variant>
#include <vector>

#include "molt/plan.h"
#include "molt/status.h"

namespace molt {

/// The device header (under molt_kernels/) that defines an op's template, or "" if unknown.
inline std::string cudaKernelHeader(const std::string &op) {
  static const char *const table[][2] = {
      {"encode_gate", "encode_gate.cuh"},       {"tc_encode", "encode_gate.cuh"},
      {"frob_norm", "frob_norm.cuh"},           {"frob_norm_bwd", "frob_norm.cuh"},
      {"bucket_apply", "bucket_apply.cuh"},     {"bucket_apply_bwd", "bucket_apply.cuh"},
      {"add_bias", "loss.cuh"},                 {"mse_loss", "loss.cuh"},
      {"bias_grad", "loss.cuh"},                {"penalty", "penalty.cuh"},
      {"tc_penalty", "penalty.cuh"},            {"gate_bwd", "gate_bwd.cuh"},
      {"tc_encode_bwd", "gate_bwd.cuh"},        {"grad_norm", "optimizer.cuh"},
      {"adam", "optimizer.cuh"},                {"tc_decode", "transcoder.cuh"},
      {"tc_decode_bwd", "transcoder.cuh"},      {"skip_apply", "transcoder.cuh"},
      {"skip_bwd", "transcoder.cuh"},           {"encode_tangent", "jvp.cuh"},
      {"tc_encode_tangent", "jvp.cuh"},
  };
  for (const auto &row : table)
    if (op == row[0])
      return row[1];
  return "";
}

/// Every header a bundle's molt_kernels/ folder must hold (copied from kernels/cuda/).
inline const std::vector<std::string> &cudaKernelHeaderFiles() {
  static const std::vector<std::string> files = {
      "abi.cuh",      "common.cuh",  "tile.cuh",        "encode_gate.cuh", "frob_norm.cuh",
      "bucket_apply.cuh",
      "loss.cuh",     "penalty.cuh", "gate_bwd.cuh",    "optimizer.cuh", "transcoder.cuh",
      "jvp.cuh",      "topk.cuh"};
  return files;
}

namespace detail {
inline int64_t attrInt(const KernelDesc &k, const char *name, int64_t fallback) {
  auto it = k.attrs.find(name);
  if (it == k.attrs.end())
    return fallback;
  if (auto *v = std::get_if<int64_t>(&it->second))
    return *v;
  if (auto *d = std::get_if<double>(&it->second))
    return int64_t(*d);
  return fallback;
}
inline std::string cdivText(int64_t x, int64_t n) { return std::to_string((x + n - 1) / n); }
inline bool isIdentifier(const std::string &s) {
  if (s.empty() || (s[0] >= '0' && s[0] <= '9'))
    return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}
} // namespace detail

/// 32-bit words of zeroed device scratch (Args::work) a kernel needs at a batch of `batch`
/// tokens; 0 for most ops. A TopK tc_encode parks two words per token (encode_gate.cuh).
inline int64_t cudaWorkWords(const KernelDesc &k, int64_t batch) {
  if (k.op == "encode_gate")
    return 16 + detail::attrInt(k, "T", 0);
  if (k.op == "tc_encode") {
    auto gate = k.attrs.find("gate");
    const bool topk = gate != k.attrs.end() && std::holds_alternative<std::string>(gate->second) &&
                      std::get<std::string>(gate->second) == "topk";
    return 16 + detail::attrInt(k, "F", 0) + (topk ? 2 * batch : 0);
  }
  if (k.op == "frob_norm")
    return 16 + 2 * detail::attrInt(k, "N", 0);
  return 0;
}

/// The default launch for an op with the given attrs: what the lowering's heuristic records
/// when molt-tune has nothing better. Every kernel walks its work with a grid-stride or ticket
/// loop, so any grid is correct; these are the sizes that fill an H100 at the reference shapes.
inline LaunchConfig cudaDefaultLaunch(const KernelDesc &k) {
  LaunchConfig l;
  l.block[0] = 256;
  const int64_t D = detail::attrInt(k, "D", 1), T = detail::attrInt(k, "T", 1);
  const int64_t R = detail::attrInt(k, "R", 1), N = detail::attrInt(k, "N", 1);
  const int64_t F = detail::attrInt(k, "F", 1);
  auto grid = [&](std::string x, std::string y = "1") {
    l.grid[0] = std::move(x);
    l.grid[1] = std::move(y);
    l.grid[2] = "1";
  };
  const std::string &op = k.op;
  if (op == "encode_gate" || op == "tc_encode") {
    grid("cdiv(B,64)", detail::cdivText(op == "encode_gate" ? T : F, 64));
    l.tile_m = 64, l.tile_n = 64, l.tile_k = 32;
  } else if (op == "frob_norm") {
    grid(std::to_string(N * ((R + 63) / 64) * ((R + 63) / 64)));
    l.tile_m = 64, l.tile_n = 64, l.tile_k = 32;
  } else if (op == "frob_norm_bwd") {
    int64_t items = 2 * N * ((D + 63) / 64) * ((R + 63) / 64);
    grid(std::to_string(items < 4096 ? items : 4096));
    l.tile_m = 64, l.tile_n = 64, l.tile_k = 32;
  } else if (op == "bucket_apply" || op == "bucket_apply_bwd") {
    grid("cdiv(B,8)");
    l.tile_m = 64, l.tile_n = R < 64 ? ((R + 15) / 16) * 16 : 64, l.tile_k = 32;
  } else if (op == "add_bias" || op == "mse_loss") {
    grid("cdiv(B,4)");
  } else if (op == "bias_grad") {
    grid(detail::cdivText(D, 32));
  } else if (op == "penalty") {
    grid(detail::cdivText(T, 8));
  } else if (op == "tc_penalty") {
    grid(detail::cdivText(F, 8));
  } else if (op == "gate_bwd" || op == "encode_tangent") {
    grid(std::to_string(T));
  } else if (op == "tc_encode_tangent") {
    grid(std::to_string(F));
  } else if (op == "tc_encode_bwd" || op == "tc_decode" || op == "tc_decode_bwd") {
    grid(std::to_string(F));
  } else if (op == "grad_norm") {
    grid("264");
  } else if (op == "adam") {
    grid("1056");
  } else if (op == "skip_apply") {
    grid("cdiv(B,64)", detail::cdivText(D, 64));
  } else if (op == "skip_bwd") {
    grid(detail::cdivText(D, 64), detail::cdivText(D, 64));
  }
  return l;
}

/// The whole `<kernel>.cu` text for a kernel: a config struct of its attrs and launch, and the
/// `extern "C" __global__` entry that calls the op's device template with it. `precision` is the
/// plan's (Plan::precision); a bf16 plan adds `Cfg::precision` (fp32 wrappers stay as they were).
inline StatusOr<std::string> cudaWrapperSource(const KernelDesc &k,
                                               const std::string &precision = "f32") {
  if (precision != "f32" && precision != "bf16")
    return invalidArgument("kernel '" + k.name + "': unknown precision '" + precision + "'");
  const std::string header = cudaKernelHeader(k.op);
  if (header.empty())
    return invalidArgument("kernel '" + k.name + "': no CUDA template for op '" + k.op + "'");
  if (!detail::isIdentifier(k.entry))
    return invalidArgument("kernel '" + k.name + "': entry '" + k.entry + "' is not a C identifier");
  const int threads = k.launch.block[0] * k.launch.block[1] * k.launch.block[2];
  std::string s;
  s += "// " + k.name + ": " + k.op + ", generated by molt::cudaWrapperSource; do not edit.\n";
  s += "#include \"molt_kernels/" + header + "\"\n\n";
  s += "struct Cfg {\n";
  for (const auto &[name, value] : k.attrs) {
    if (!detail::isIdentifier(name))
      return invalidArgument("kernel '" + k.name + "': attr '" + name + "' is not a C identifier");
    if (auto *i = std::get_if<int64_t>(&value)) {
      s += "  static constexpr long long " + name + " = " + std::to_string(*i) + "LL;\n";
    } else if (auto *d = std::get_if<double>(&value)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.9e", *d); // round-trips a float exactly
      s += "  static constexpr float " + name + " = " + buf + "f;\n";
    } else {
      const std::string &v = std::get<std::string>(value);
      const char *mapped = nullptr;
      if (name == "gate")
        mapped = v == "jumprelu" ? "molt::k::kGateJumpRelu"
                 : v == "relu"   ? "molt::k::kGateRelu"
                 : v == "topk"   ? "molt::k::kGateTopK"
                                 : nullptr;
      else if (name == "kind")
        mapped = v == "tanh" ? "molt::k::kPenaltyTanh" : v == "l1" ? "molt::k::kPenaltyL1" : nullptr;
      if (!mapped)
        return invalidArgument("kernel '" + k.name + "': attr " + name + "='" + v +
                               "' has no CUDA meaning");
      s += "  static constexpr int " + name + " = " + mapped + ";\n";
    }
  }
  s += "  static constexpr int threads = " + std::to_string(threads) + ";\n";
  s += "  static constexpr int tile_m = " + std::to_string(k.launch.tile_m) + ";\n";
  s += "  static constexpr int tile_n = " + std::to_string(k.launch.tile_n) + ";\n";
  s += "  static constexpr int tile_k = " + std::to_string(k.launch.tile_k) + ";\n";
  s += "  static constexpr int stages = " + std::to_string(k.launch.stages) + ";\n";
  if (precision == "bf16")
    s += "  static constexpr int precision = molt::k::kPrecisionBf16;\n";
  s += "};\n\n";
  s += "extern \"C\" __global__ void __launch_bounds__(" + std::to_string(threads) + ") " + k.entry +
       "(molt::k::Args a) {\n";
  s += "  molt::k::" + k.op + "<Cfg>(a);\n}\n";
  return s;
}

} // namespace molt
