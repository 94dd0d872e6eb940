// The gate kinds: the one definition every other representation derives from or is checked
// against. The spec dialect's GateKind (dialect/MoltAttrs.td) static_asserts its values here; the
// manifest's and the kernel attrs' strings are gateKindName(); the CUDA ABI's constants
// (kernels/cuda/abi.cuh, which must stay free of host headers because bundles carry it) are
// static_asserted in kernels/cpu/encode_gate.cpp; the CPU kernels use this enum itself.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace molt {

// MOLT_GATE_KIND(id, name, abi): the enum value, its spelling in specs and manifests, and the
// constant of kernels/cuda/abi.cuh the CUDA wrapper writes for it. Values are the order here.
#define MOLT_GATE_KINDS(X)                                                                         \
  X(JumpReLU, "jumprelu", kGateJumpRelu)                                                           \
  X(ReLU, "relu", kGateRelu)                                                                       \
  X(TopK, "topk", kGateTopK)

enum class GateKind : int {
#define MOLT_GATE_ENUM(id, name, abi) id,
  MOLT_GATE_KINDS(MOLT_GATE_ENUM)
#undef MOLT_GATE_ENUM
};

/// The spelling in specs and manifests ("jumprelu", "relu", "topk").
constexpr const char *gateKindName(GateKind k) {
#define MOLT_GATE_NAME(id, name, abi)                                                              \
  if (k == GateKind::id)                                                                           \
    return name;
  MOLT_GATE_KINDS(MOLT_GATE_NAME)
#undef MOLT_GATE_NAME
  return "";
}

/// The kernels/cuda/abi.cuh constant for `k`, qualified ("molt::k::kGateRelu").
constexpr const char *gateAbiConstant(GateKind k) {
#define MOLT_GATE_ABI(id, name, abi)                                                               \
  if (k == GateKind::id)                                                                           \
    return "molt::k::" #abi;
  MOLT_GATE_KINDS(MOLT_GATE_ABI)
#undef MOLT_GATE_ABI
  return "";
}

/// The kind a spelling names, or nullopt.
inline std::optional<GateKind> parseGateKind(std::string_view name) {
#define MOLT_GATE_PARSE(id, spelled, abi)                                                          \
  if (name == spelled)                                                                             \
    return GateKind::id;
  MOLT_GATE_KINDS(MOLT_GATE_PARSE)
#undef MOLT_GATE_PARSE
  return std::nullopt;
}

/// Every spelling, in enum order.
inline std::vector<std::string> gateKindNames() {
  return {
#define MOLT_GATE_LIST(id, name, abi) name,
      MOLT_GATE_KINDS(MOLT_GATE_LIST)
#undef MOLT_GATE_LIST
  };
}

/// "jumprelu, relu or topk", for error messages.
inline std::string gateKindList() {
  const std::vector<std::string> names = gateKindNames();
  std::string all;
  for (size_t i = 0; i < names.size(); ++i)
    all += std::string(i == 0 ? "" : i + 1 == names.size() ? " or " : ", ") + names[i];
  return all;
}

} // namespace molt
