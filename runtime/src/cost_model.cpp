// kernelCost: per op, the FLOPs and the bytes each argument must move at least once (cost_model.h).
#include "molt/cost_model.h"

#include <algorithm>
#include <sstream>

namespace molt {
namespace {

int64_t intAttr(const KernelDesc &k, const char *name, int64_t fallback = 0) {
  auto it = k.attrs.find(name);
  if (it == k.attrs.end())
    return fallback;
  if (const int64_t *v = std::get_if<int64_t>(&it->second))
    return *v;
  return fallback;
}

/// Pairs and transforms with at least one pair among lists [off, off + n) of the CSR.
struct Lists {
  double pairs = 0, active = 0;
};
Lists lists(const StepCounts &c, int64_t off, int64_t n) {
  Lists l;
  for (int64_t t = off; t < off + n && t + 1 < int64_t(c.pairPtr.size()); ++t) {
    const double m = double(c.pairPtr[size_t(t) + 1]) - double(c.pairPtr[size_t(t)]);
    l.pairs += m;
    l.active += m > 0;
  }
  return l;
}

double numel(const ParamDesc &p) {
  double n = 1;
  for (int64_t s : p.shape)
    n *= double(s);
  return n;
}

std::vector<std::string> splitList(const std::string &s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty())
      out.push_back(item);
  return out;
}

} // namespace

StatusOr<KernelCost> kernelCost(const Plan &plan, const Invocation &inv, const StepCounts &c) {
  const KernelDesc *kd = plan.findKernel(inv.kernel);
  if (!kd)
    return notFound("no kernel '" + inv.kernel + "' in the plan");
  const KernelDesc &k = *kd;
  const std::string &op = k.op;
  const double B = double(c.batch), D = double(intAttr(k, "D", plan.model.d_model));
  const double T = double(intAttr(k, "T", intAttr(k, "F", int64_t(c.pairPtr.size()) - 1)));
  const double R = double(intAttr(k, "R")), N = double(intAttr(k, "N"));
  const double P = c.pairPtr.empty() ? 0 : double(c.pairPtr.back());
  const bool bf16 = plan.precision == "bf16";
  const double E = bf16 ? 2 : 4; // x, u, v, skip_w as the tile kernels stream them (Operand)
  const Lists b = lists(c, intAttr(k, "OFF"), intAttr(k, "N"));
  KernelCost m;
  auto gather = [&](double bytes) {
    m.loadBytes += bytes;
    m.gatherBytes += bytes;
  };
  auto reduce = [&](double bytes) {
    m.atomicBytes += bytes;
    m.reductionBytes += bytes;
  };

  if (op == "encode_gate" || op == "tc_encode") {
    // x . enc_w^T + bias, gate, the CSR lists; `pre` is an output of the contract.
    m.flops = 2 * B * T * D;
    m.loadBytes = 4 * B * D + 4 * T * D + 8 * T;
    m.storeBytes = 4 * B * T + 4 * (T + 1) + 12 * P + 4;
  } else if (op == "frob_norm") {
    // Both Gram matrices (stored whole), their norms; half of each product is enough.
    m.flops = 2 * N * R * R * D;
    m.loadBytes = 2 * N * R * D * E;
    m.storeBytes = 4 * N + 8 * N * R * R;
  } else if (op == "bucket_apply") {
    m.flops = 4 * b.pairs * R * D;
    gather(b.pairs * D * E);
    m.loadBytes += 2 * b.active * R * D * E + 8 * b.pairs + 4 * (N + 1);
    reduce(4 * b.pairs * D);
  } else if (op == "bucket_apply_bwd") {
    // h and z recomputed (the contract stores no g.h), d_u and d_v of every transform written
    // once (zeros where no pair is listed), h.z added into pair_dgate. One owner per d_u / d_v
    // tile sums over all of a transform's pairs, so h and z of every pair make one fp32 round
    // trip through memory between the per-pair phase and the per-tile phase (no design that
    // keeps them on chip has one owner per output tile without recomputing them per tile).
    m.flops = 8 * b.pairs * R * D;
    gather(b.pairs * D * (4 + E));
    m.loadBytes += 2 * b.active * R * D * E + 8 * b.pairs + 4 * (N + 1) + 8 * b.pairs * R;
    m.storeBytes = 8 * N * R * D + 8 * b.pairs * R;
    m.atomicBytes = 4 * b.pairs;
  } else if (op == "frob_norm_bwd") {
    // The Gram term added into d_u and d_v, for the transforms whose norm has a gradient: the
    // penalty's d_norm is zero for a transform with no listed pair, and the kernel skips it.
    const double A = b.active;
    m.flops = 4 * A * R * R * D;
    m.loadBytes = 8 * N + 2 * A * R * D * E + 8 * A * R * R;
    m.atomicBytes = 8 * A * R * D;
  } else if (op == "add_bias") {
    m.flops = B * D;
    m.loadBytes = 4 * B * D + 4 * D;
    m.storeBytes = 4 * B * D;
  } else if (op == "mse_loss") {
    m.flops = 3 * B * D;
    m.loadBytes = 8 * B * D;
    m.storeBytes = 4 * B * D;
    m.atomicBytes = 4;
  } else if (op == "bias_grad") {
    m.flops = B * D;
    m.loadBytes = 4 * B * D;
    m.storeBytes = 4 * D;
  } else if (op == "penalty") {
    m.flops = 4 * P;
    m.loadBytes = 4 * (T + 1) + 4 * P + 4 * T + 32;
    m.storeBytes = 4 * P + 4 * T;
    m.atomicBytes = 4;
  } else if (op == "tc_penalty") {
    const double F = T;
    m.flops = 2 * F * D + 4 * P;
    m.loadBytes = 4 * (F + 1) + 4 * P + 4 * F * D + 32;
    m.storeBytes = 4 * P;
    m.atomicBytes = 4 * F * D + 4;
  } else if (op == "gate_bwd" || op == "tc_encode_bwd") {
    // d enc_w = sum over a list's pairs of dgate . x[tok]: x gathered once per pair.
    m.flops = 2 * P * D;
    gather(4 * P * D);
    m.loadBytes += 4 * (T + 1) + 16 * P + 4 * T;
    m.storeBytes = 4 * T * D + 8 * T;
  } else if (op == "tc_decode") {
    const Lists all = lists(c, 0, int64_t(T));
    m.flops = 2 * P * D;
    m.loadBytes = 4 * (T + 1) + 8 * P + 4 * all.active * D;
    reduce(4 * P * D);
  } else if (op == "tc_decode_bwd") {
    const Lists all = lists(c, 0, int64_t(T));
    m.flops = 4 * P * D;
    gather(4 * P * D);
    m.loadBytes += 4 * (T + 1) + 8 * P + 4 * all.active * D;
    m.storeBytes = 4 * T * D;
    m.atomicBytes = 4 * P;
  } else if (op == "skip_apply") {
    m.flops = 2 * B * D * D;
    m.loadBytes = E * B * D + E * D * D;
    m.atomicBytes = 4 * B * D;
  } else if (op == "skip_bwd") {
    m.flops = 2 * B * D * D;
    m.loadBytes = 4 * B * D + E * B * D;
    m.storeBytes = 4 * D * D;
  } else if (op == "encode_tangent" || op == "tc_encode_tangent") {
    m.flops = 2 * P * D;
    gather(4 * P * D);
    m.loadBytes += 4 * (T + 1) + 8 * P + 4 * T * D;
    m.storeBytes = 4 * P;
  } else if (op == "grad_norm" || op == "adam") {
    // grad_norm reads every gradient; adam reads p, d_p, m, v and writes p, m, v (and the bf16
    // copy of a weight in a bf16 plan). The ParamEntry table is 48 bytes per param.
    auto it = inv.args.find("params");
    if (it == inv.args.end())
      return invalidArgument("kernel '" + k.name + "' has no params list");
    const bool adam = op == "adam";
    for (const std::string &name : splitList(it->second)) {
      const ParamDesc *p = plan.findParam(name);
      if (!p)
        return notFound("kernel '" + k.name + "': no param '" + name + "'");
      const double n = numel(*p);
      m.flops += (adam ? 12 : 2) * n;
      m.loadBytes += (adam ? 16 : 4) * n + 48;
      m.storeBytes += adam ? 12 * n + (bf16 ? 2 * n : 0) : 0;
    }
    m.loadBytes += adam ? 32 + 64 : 0; // scalars, stats
    m.atomicBytes = 4;
  } else {
    return notFound("no cost model for op '" + op + "'");
  }
  return m;
}

DevicePeak h200Peak(const std::string &precision) {
  return precision == "bf16" ? DevicePeak{"H200 bf16 dense", 790e12, 4.8e12}
                             : DevicePeak{"H200 fp32 SIMT", 67e12, 4.8e12};
}

double floorSeconds(const KernelCost &cost, const DevicePeak &peak) {
  return std::max(cost.flops / peak.flops, cost.totalBytes() / peak.bytesPerSecond);
}

} // namespace molt
