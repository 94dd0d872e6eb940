// CpuExecutor: host memory for every tensor, and launch() dispatching each op to kernels/cpu.
#include <cstdlib>
#include <cstring>

#include "cpu/cpu_backend.h"
#include "executor_base.h"
#include "kernels/cpu/bucket_apply.h"
#include "kernels/cpu/encode_gate.h"
#include "kernels/cpu/frob_norm.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/penalty.h"
#include "kernels/cpu/transcoder.h"

namespace molt {

namespace {

using cpu::PairLists;

struct FreeDeleter {
  void operator()(void *p) const { std::free(p); }
};

class CpuExecutor final : public ExecutorBase {
public:
  using ExecutorBase::ExecutorBase;

protected:
  Status allocate(const BufferInfo &info) override {
    // 64-byte alignment: whole cache lines and AVX-512 loads for every tensor.
    size_t bytes = (info.bytes() + 63) / 64 * 64;
    void *p = std::aligned_alloc(64, bytes);
    if (!p)
      return internalError("out of host memory (" + std::to_string(bytes) + " bytes)");
    std::memset(p, 0, bytes);
    memory_[info.name].reset(p);
    return Status::ok();
  }
  Status writeBytes(const BufferInfo &info, const void *host) override {
    std::memcpy(memory_.at(info.name).get(), host, info.bytes());
    return Status::ok();
  }
  Status readBytes(const BufferInfo &info, void *host) override {
    std::memcpy(host, memory_.at(info.name).get(), info.bytes());
    return Status::ok();
  }
  Status zeroBytes(const BufferInfo &info) override {
    std::memset(memory_.at(info.name).get(), 0, info.bytes());
    return Status::ok();
  }
  Status launch(const KernelDesc &k, const Invocation &inv) override;

private:
  template <typename T> T *ptr(const Invocation &inv, const char *arg) {
    return static_cast<T *>(memory_.at(inv.args.at(arg)).get());
  }
  float *f(const Invocation &inv, const char *arg) { return ptr<float>(inv, arg); }
  PairLists<float> pairs(const Invocation &inv, bool withPre) {
    PairLists<float> p;
    p.ptr = ptr<int32_t>(inv, "pair_ptr");
    p.tok = ptr<int32_t>(inv, "pair_tok");
    p.gate = f(inv, "pair_gate");
    p.pre = withPre ? f(inv, "pair_pre") : nullptr;
    return p;
  }
  std::vector<cpu::ParamSlot<float>> slots(const Invocation &inv) {
    std::vector<cpu::ParamSlot<float>> out;
    for (const std::string &name : splitParams(inv.args.at("params"))) {
      auto mem = [&](const std::string &n) { return static_cast<float *>(memory_.at(n).get()); };
      out.push_back({mem(name), mem("d_" + name), mem("m_" + name), mem("v_" + name),
                     info(name)->numel()});
    }
    return out;
  }

  std::map<std::string, std::unique_ptr<void, FreeDeleter>> memory_;
};

cpu::GateParams gateOf(const KernelDesc &k, double bandwidth, int64_t topk) {
  cpu::GateParams g;
  std::string kind = std::get<std::string>(k.attrs.at("gate"));
  g.kind = kind == "jumprelu" ? cpu::GateKind::JumpReLU
           : kind == "topk"   ? cpu::GateKind::TopK
                              : cpu::GateKind::ReLU;
  g.bandwidth = bandwidth;
  g.k = topk;
  return g;
}

cpu::PenaltyParams penaltyOf(const std::string &kind, double c) {
  return {kind == "l1" ? cpu::PenaltyKind::L1 : cpu::PenaltyKind::Tanh, c};
}

Status CpuExecutor::launch(const KernelDesc &k, const Invocation &inv) {
  const std::string &op = k.op;
  const int64_t B = batch(), D = plan().model.d_model;
  const int64_t R = intAttr(k, "R"), N = intAttr(k, "N"), OFF = intAttr(k, "OFF");
  const bool tc = op.rfind("tc_", 0) == 0;
  const int64_t T = tc ? intAttr(k, "F") : intAttr(k, "T");
  const float biasSign = tc ? 1.0f : -1.0f;
  const bool jumprelu = k.attrs.count("gate") && stringAttr(k, "gate") == "jumprelu";
  // θ is only meaningful for JumpReLU; other gates bind it to a dummy.
  auto theta = [&](const char *arg) { return jumprelu ? f(inv, arg) : nullptr; };
  auto lamOverB = [&] { return f(inv, "scalars")[0] / float(B); };

  if (op == "encode_gate" || op == "tc_encode") {
    cpu::encodeGate(B, T, D, gateOf(k, floatAttr(k, "bandwidth"), intAttr(k, "k")), biasSign,
                    f(inv, "x"), f(inv, "enc_w"), f(inv, "enc_b"), theta("theta"), f(inv, "pre"),
                    ptr<int32_t>(inv, "pair_ptr"), ptr<int32_t>(inv, "pair_tok"),
                    f(inv, "pair_gate"), f(inv, "pair_pre"), ptr<int32_t>(inv, "pair_count"),
                    f(inv, "stats"));
  } else if (op == "gate_bwd" || op == "tc_encode_bwd") {
    cpu::gateBwd(T, D, gateOf(k, floatAttr(k, "bandwidth"), intAttr(k, "k")), biasSign,
                 f(inv, "x"), theta("theta"), pairs(inv, true), f(inv, "pair_dgate"),
                 f(inv, "d_enc_w"), f(inv, "d_enc_b"), theta("d_theta"));
  } else if (op == "frob_norm") {
    cpu::frobNorm(D, R, N, f(inv, "u"), f(inv, "v"), f(inv, "norm") + OFF, f(inv, "gram_u"),
                  f(inv, "gram_v"));
  } else if (op == "frob_norm_bwd") {
    cpu::frobNormBwd(D, R, N, f(inv, "d_norm") + OFF, f(inv, "norm") + OFF, f(inv, "u"),
                     f(inv, "v"), f(inv, "gram_u"), f(inv, "gram_v"), f(inv, "d_u"), f(inv, "d_v"));
  } else if (op == "bucket_apply") {
    cpu::bucketApply(B, D, R, N, OFF, f(inv, "x"), f(inv, "u"), f(inv, "v"), pairs(inv, false),
                     f(inv, "yhat"));
  } else if (op == "bucket_apply_bwd") {
    cpu::bucketApplyBwd(D, R, N, OFF, f(inv, "d_yhat"), f(inv, "x"), f(inv, "u"), f(inv, "v"),
                        pairs(inv, false), f(inv, "d_u"), f(inv, "d_v"), f(inv, "pair_dgate"));
  } else if (op == "add_bias") {
    cpu::addBias(B, D, f(inv, "dec_b"), f(inv, "yhat"));
  } else if (op == "mse_loss") {
    cpu::mseLoss(B, D, f(inv, "yhat"), f(inv, "y"), f(inv, "d_yhat"), f(inv, "stats"));
  } else if (op == "bias_grad") {
    cpu::biasGrad(B, D, f(inv, "d_yhat"), f(inv, "d_dec_b"));
  } else if (op == "penalty") {
    cpu::penalty(T, penaltyOf(stringAttr(k, "kind"), floatAttr(k, "c")), pairs(inv, false),
                 f(inv, "norm"), lamOverB(), f(inv, "pair_dgate"), f(inv, "d_norm"),
                 f(inv, "stats"));
  } else if (op == "grad_norm") {
    cpu::gradNorm(slots(inv), f(inv, "stats"));
  } else if (op == "adam") {
    cpu::adam(slots(inv), f(inv, "scalars"), f(inv, "stats"));
  } else if (op == "tc_decode") {
    cpu::tcDecode(B, D, T, pairs(inv, false), f(inv, "dec_w"), f(inv, "yhat"));
  } else if (op == "tc_decode_bwd") {
    cpu::tcDecodeBwd(D, T, f(inv, "d_yhat"), pairs(inv, false), f(inv, "dec_w"),
                     f(inv, "d_dec_w"), f(inv, "pair_dgate"));
  } else if (op == "skip_apply") {
    cpu::skipApply(B, D, f(inv, "x"), f(inv, "skip_w"), f(inv, "yhat"));
  } else if (op == "skip_bwd") {
    cpu::skipBwd(B, D, f(inv, "d_yhat"), f(inv, "x"), f(inv, "d_skip_w"));
  } else if (op == "tc_penalty") {
    cpu::tcPenalty(D, T, penaltyOf(stringAttr(k, "kind"), floatAttr(k, "c")), pairs(inv, false),
                   f(inv, "dec_w"), lamOverB(), f(inv, "pair_dgate"), f(inv, "d_dec_w"),
                   f(inv, "stats"));
  } else {
    return internalError("the CPU backend has no kernel for op '" + op + "'");
  }
  return Status::ok();
}

class CpuBackend final : public Backend {
public:
  std::string name() const override { return "cpu"; }
  std::string deviceName() const override {
#ifdef MOLT_HAVE_BLAS
    const char *blas = "OpenBLAS";
#else
    const char *blas = "no BLAS";
#endif
    return std::to_string(cpu::threadCount()) + "-thread CPU (" + blas + ")";
  }
  StatusOr<std::unique_ptr<Executor>> prepare(const Plan &plan, const std::string &,
                                              int64_t batch) override {
    auto exec = std::make_unique<CpuExecutor>(plan, batch);
    MOLT_RETURN_IF_ERROR(exec->initialize());
    return std::unique_ptr<Executor>(std::move(exec));
  }
};

} // namespace

std::unique_ptr<Backend> createCpuBackend() { return std::make_unique<CpuBackend>(); }

} // namespace molt
