// CpuExecutor<S> (runtime/src/cpu/cpu_executor.h) and the CPU Backend.
#include "cpu/cpu_executor.h"

#include <cstring>
#include <iterator>

#include "cpu/cpu_backend.h"
#include "kernels/cpu/bucket_apply.h"
#include "kernels/cpu/encode_gate.h"
#include "kernels/cpu/frob_norm.h"
#include "kernels/cpu/jvp.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/optimizer.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/penalty.h"
#include "kernels/cpu/transcoder.h"
#include "molt/ops.h"
#include "molt/tuning.h"

namespace molt {

template <typename S>
StatusOr<std::unique_ptr<CpuExecutor<S>>> CpuExecutor<S>::create(const Plan &plan, int64_t batch) {
  std::unique_ptr<CpuExecutor<S>> exec(new CpuExecutor<S>(plan, batch));
  MOLT_RETURN_IF_ERROR(exec->initialize());
  // A database that cannot be read only costs speed: the heuristic (default threads) runs.
  const std::string dbPath = defaultTuningDbPath();
  if (!dbPath.empty())
    if (auto db = loadTuningDb(dbPath)) {
      const std::string device = tuningDeviceKey("cpu", hostArch(), cpuDeviceName());
      for (const KernelDesc &k : plan.kernels)
        if (const TuningEntry *t = findTuning(*db, device, k))
          (void)exec->setKernelThreads(k.name, t->threads);
    }
  return exec;
}

template <typename S>
Status CpuExecutor<S>::setKernelThreads(const std::string &kernel, int threads) {
  if (threads > 0)
    threads_[kernel] = threads;
  else
    threads_.erase(kernel);
  return Status::ok();
}

template <typename S> S *CpuExecutor<S>::data(const std::string &name) {
  const BufferInfo *t = info(name);
  return t && t->dtype == DType::F32 ? static_cast<S *>(raw(name)) : nullptr;
}

template <typename S> int32_t *CpuExecutor<S>::intData(const std::string &name) {
  const BufferInfo *t = info(name);
  return t && t->dtype == DType::I32 ? static_cast<int32_t *>(raw(name)) : nullptr;
}

template <typename S> Status CpuExecutor<S>::bind(const std::string &name, void *external) {
  const BufferInfo *t = info(name);
  if (!t)
    return notFound("no tensor named '" + name + "'");
  if (t->dtype == DType::F32 && sizeof(S) != sizeof(float))
    return unavailable("a float64 executor cannot alias float32 memory ('" + name + "')");
  if (external)
    bound_[name] = external;
  else
    bound_.erase(name);
  return Status::ok();
}

template <typename S> Status CpuExecutor<S>::allocate(const BufferInfo &info) {
  // 64-byte alignment: whole cache lines and aligned AVX-512 loads for every tensor.
  size_t bytes = (size_t(info.numel()) * elementBytes(info) + 63) / 64 * 64;
  void *p = std::aligned_alloc(64, bytes);
  if (!p)
    return internalError("out of host memory (" + std::to_string(bytes) + " bytes)");
  std::memset(p, 0, bytes);
  memory_[info.name].reset(p);
  return Status::ok();
}

template <typename S> Status CpuExecutor<S>::writeBytes(const BufferInfo &info, const void *host) {
  if (info.dtype == DType::I32 || sizeof(S) == sizeof(float)) {
    std::memcpy(raw(info.name), host, info.bytes());
  } else {
    const float *src = static_cast<const float *>(host);
    S *dst = static_cast<S *>(raw(info.name));
    for (int64_t i = 0; i < info.numel(); ++i)
      dst[i] = S(src[i]);
  }
  return Status::ok();
}

template <typename S> Status CpuExecutor<S>::readBytes(const BufferInfo &info, void *host) {
  if (info.dtype == DType::I32 || sizeof(S) == sizeof(float)) {
    std::memcpy(host, raw(info.name), info.bytes());
  } else {
    const S *src = static_cast<const S *>(raw(info.name));
    float *dst = static_cast<float *>(host);
    for (int64_t i = 0; i < info.numel(); ++i)
      dst[i] = float(src[i]);
  }
  return Status::ok();
}

template <typename S> Status CpuExecutor<S>::zeroBytes(const BufferInfo &info) {
  std::memset(raw(info.name), 0, size_t(info.numel()) * elementBytes(info));
  return Status::ok();
}

namespace {

cpu::GateParams gateOf(const std::string &kind, double bandwidth, int64_t topk) {
  cpu::GateParams g;
  g.kind = parseGateKind(kind).value_or(GateKind::ReLU); // checked at initialize()
  g.bandwidth = bandwidth;
  g.k = topk;
  return g;
}

cpu::PenaltyParams penaltyOf(const std::string &kind, double c) {
  return {kind == "l1" ? cpu::PenaltyKind::L1 : cpu::PenaltyKind::Tanh, c};
}

// One launch as the CPU kernels see it: the sizes and parameters from the kernel's attrs and
// the bound tensors by argument name.
template <typename S> struct CpuCall {
  CpuExecutor<S> &exec;
  const Invocation &inv;
  int64_t B, D, R, N, OFF, T; // T: transforms, or features for a transcoder op
  S biasSign;                 // molt: pre = x·Eᵀ − b; transcoder: + b
  bool jumprelu;
  cpu::GateParams gate;
  cpu::PenaltyParams pen;

  S *f(const char *arg) const { return static_cast<S *>(exec.storage(inv.args.at(arg))); }
  int32_t *i32(const char *arg) const {
    return static_cast<int32_t *>(exec.storage(inv.args.at(arg)));
  }
  // θ means something only to JumpReLU; other gates bind it to a dummy.
  S *theta(const char *arg) const { return jumprelu ? f(arg) : nullptr; }
  S lamOverB() const { return f("scalars")[0] / S(B); }
  // The pair lists as far as the op binds them (penalties read no tokens).
  cpu::PairLists<S> pairs() const {
    auto bound = [&](const char *arg) { return inv.args.count(arg) > 0; };
    cpu::PairLists<S> p;
    p.ptr = i32("pair_ptr");
    p.tok = bound("pair_tok") ? i32("pair_tok") : nullptr;
    p.gate = f("pair_gate");
    p.pre = bound("pair_pre") ? f("pair_pre") : nullptr;
    return p;
  }
  std::vector<cpu::ParamSlot<S>> slots() const {
    std::vector<cpu::ParamSlot<S>> out;
    for (const std::string &name : ExecutorBase::splitParams(inv.args.at("params")))
      out.push_back({exec.data(name), exec.data("d_" + name), exec.data("m_" + name),
                     exec.data("v_" + name), exec.info(name)->numel()});
    return out;
  }
};

} // namespace

// The CPU kernel of each row of molt/ops.def, named as the op. dispatch() lists one per row,
// so a row without its function here does not compile.
namespace cpu_ops {

template <typename S> void encode_gate(const CpuCall<S> &c) {
  cpu::encodeGate(c.B, c.T, c.D, c.gate, c.biasSign, c.f("x"), c.f("enc_w"), c.f("enc_b"),
                  c.theta("theta"), c.f("pre"), c.i32("pair_ptr"), c.i32("pair_tok"),
                  c.f("pair_gate"), c.f("pair_pre"), c.i32("pair_count"), c.f("stats"));
}
template <typename S> void tc_encode(const CpuCall<S> &c) { encode_gate(c); }
template <typename S> void gate_bwd(const CpuCall<S> &c) {
  cpu::gateBwd(c.T, c.D, c.gate, c.biasSign, c.f("x"), c.theta("theta"), c.pairs(),
               c.f("pair_dgate"), c.f("d_enc_w"), c.f("d_enc_b"), c.theta("d_theta"));
}
template <typename S> void tc_encode_bwd(const CpuCall<S> &c) { gate_bwd(c); }
template <typename S> void frob_norm(const CpuCall<S> &c) {
  cpu::frobNorm(c.D, c.R, c.N, c.f("u"), c.f("v"), c.f("norm") + c.OFF, c.f("gram_u"),
                c.f("gram_v"));
}
template <typename S> void frob_norm_bwd(const CpuCall<S> &c) {
  cpu::frobNormBwd(c.D, c.R, c.N, c.f("d_norm") + c.OFF, c.f("norm") + c.OFF, c.f("u"), c.f("v"),
                   c.f("gram_u"), c.f("gram_v"), c.f("d_u"), c.f("d_v"));
}
template <typename S> void bucket_apply(const CpuCall<S> &c) {
  cpu::bucketApply(c.B, c.D, c.R, c.N, c.OFF, c.f("x"), c.f("u"), c.f("v"), c.pairs(),
                   c.f("yhat"));
}
template <typename S> void bucket_apply_bwd(const CpuCall<S> &c) {
  cpu::bucketApplyBwd(c.D, c.R, c.N, c.OFF, c.f("d_yhat"), c.f("x"), c.f("u"), c.f("v"),
                      c.pairs(), c.f("d_u"), c.f("d_v"), c.f("pair_dgate"));
}
template <typename S> void add_bias(const CpuCall<S> &c) {
  cpu::addBias(c.B, c.D, c.f("dec_b"), c.f("yhat"));
}
template <typename S> void mse_loss(const CpuCall<S> &c) {
  cpu::mseLoss(c.B, c.D, c.f("yhat"), c.f("y"), c.f("d_yhat"), c.f("stats"));
}
template <typename S> void bias_grad(const CpuCall<S> &c) {
  cpu::biasGrad(c.B, c.D, c.f("d_yhat"), c.f("d_dec_b"));
}
template <typename S> void penalty(const CpuCall<S> &c) {
  cpu::penalty(c.T, c.pen, c.pairs(), c.f("norm"), c.lamOverB(), c.f("pair_dgate"), c.f("d_norm"),
               c.f("stats"));
}
template <typename S> void grad_norm(const CpuCall<S> &c) { cpu::gradNorm(c.slots(), c.f("stats")); }
template <typename S> void adam(const CpuCall<S> &c) {
  cpu::adam(c.slots(), c.f("scalars"), c.f("stats"));
}
template <typename S> void tc_decode(const CpuCall<S> &c) {
  cpu::tcDecode(c.B, c.D, c.T, c.pairs(), c.f("dec_w"), c.f("yhat"));
}
template <typename S> void tc_decode_bwd(const CpuCall<S> &c) {
  cpu::tcDecodeBwd(c.D, c.T, c.f("d_yhat"), c.pairs(), c.f("dec_w"), c.f("d_dec_w"),
                   c.f("pair_dgate"));
}
template <typename S> void skip_apply(const CpuCall<S> &c) {
  cpu::skipApply(c.B, c.D, c.f("x"), c.f("skip_w"), c.f("yhat"));
}
template <typename S> void skip_bwd(const CpuCall<S> &c) {
  cpu::skipBwd(c.B, c.D, c.f("d_yhat"), c.f("x"), c.f("d_skip_w"));
}
template <typename S> void tc_penalty(const CpuCall<S> &c) {
  cpu::tcPenalty(c.D, c.T, c.pen, c.pairs(), c.f("dec_w"), c.lamOverB(), c.f("pair_dgate"),
                 c.f("d_dec_w"), c.f("stats"));
}
template <typename S> void encode_tangent(const CpuCall<S> &c) {
  cpu::encodeTangent(c.T, c.D, c.f("x_dot"), c.f("enc_w"), c.pairs(), c.f("pair_tan"));
}
template <typename S> void tc_encode_tangent(const CpuCall<S> &c) { encode_tangent(c); }
template <typename S> void bucket_apply_dx(const CpuCall<S> &c) {
  cpu::bucketApplyDx(c.B, c.D, c.R, c.N, c.OFF, c.f("d_yhat"), c.f("x"), c.f("u"), c.f("v"),
                     c.pairs(), static_cast<S *>(nullptr), static_cast<S *>(nullptr),
                     c.f("pair_dgate"), c.f("d_x"));
}
template <typename S> void bucket_apply_bwd_dx(const CpuCall<S> &c) {
  cpu::bucketApplyDx(c.B, c.D, c.R, c.N, c.OFF, c.f("d_yhat"), c.f("x"), c.f("u"), c.f("v"),
                     c.pairs(), c.f("d_u"), c.f("d_v"), c.f("pair_dgate"), c.f("d_x"));
}
template <typename S> void gate_bwd_dx(const CpuCall<S> &c) {
  cpu::gateBwdDx(c.B, c.T, c.D, c.gate, c.f("enc_w"), c.theta("theta"), c.pairs(),
                 c.f("pair_dgate"), c.f("d_x"));
}
template <typename S> void tc_encode_bwd_dx(const CpuCall<S> &c) { gate_bwd_dx(c); }
template <typename S> void skip_bwd_dx(const CpuCall<S> &c) {
  cpu::skipBwdDx(c.B, c.D, c.f("d_yhat"), c.f("skip_w"), c.f("d_x"));
}

#ifdef MOLT_CPU_OPS_EXTRA
#include MOLT_CPU_OPS_EXTRA // test-only: the CPU kernels of MOLT_OPS_EXTRA's rows
#endif

} // namespace cpu_ops

template <typename S> Status CpuExecutor<S>::launch(const KernelDesc &k, const Invocation &inv) {
  auto tuned = threads_.find(k.name);
  if (tuned == threads_.end())
    return dispatch(k, inv);
#ifdef _OPENMP
  // The kernels size their parallel regions from omp_get_max_threads(), so this is the knob.
  const int before = omp_get_max_threads();
  omp_set_num_threads(tuned->second);
  Status s = dispatch(k, inv);
  omp_set_num_threads(before);
  return s;
#else
  return dispatch(k, inv);
#endif
}

template <typename S> Status CpuExecutor<S>::dispatch(const KernelDesc &k, const Invocation &inv) {
  const OpSignature *sig = findOp(k.op);
  if (!sig)
    return internalError("the CPU backend has no kernel for op '" + k.op + "'");
  const bool tc = sig->kind == OpKind::Transcoder;
  const CpuCall<S> call{*this,
                        inv,
                        rows(),
                        plan().model.d_model,
                        intAttr(k, "R"),
                        intAttr(k, "N"),
                        intAttr(k, "OFF"),
                        tc ? intAttr(k, "F") : intAttr(k, "T"),
                        tc ? S(1) : S(-1),
                        stringAttr(k, "gate") == "jumprelu",
                        gateOf(stringAttr(k, "gate"), floatAttr(k, "bandwidth"), intAttr(k, "k")),
                        penaltyOf(stringAttr(k, "kind"), floatAttr(k, "c"))};
  // One CPU kernel per row of molt/ops.def, indexed by OpId.
  using Kernel = void (*)(const CpuCall<S> &);
  static constexpr Kernel kernels[] = {
#define MOLT_OP(name, ...) &cpu_ops::name<S>,
#include "molt/ops.def"
  };
  static_assert(std::size(kernels) == size_t(OpId::Count), "one CPU kernel per op");
  kernels[size_t(sig->id)](call);
  return Status::ok();
}

template class CpuExecutor<float>;
template class CpuExecutor<double>;

std::string cpuDeviceName() {
#ifdef MOLT_HAVE_BLAS
  const char *blas = "OpenBLAS";
#else
  const char *blas = "no BLAS";
#endif
  return std::to_string(cpu::threadCount()) + "-thread CPU (" + blas + ")";
}

namespace {

class CpuBackend final : public Backend {
public:
  std::string name() const override { return "cpu"; }
  std::string deviceName() const override { return cpuDeviceName(); }
  StatusOr<std::unique_ptr<Executor>> prepare(const Plan &plan, const std::string &,
                                              int64_t batch) override {
    auto exec = CpuExecutor<float>::create(plan, batch);
    if (!exec)
      return exec.status();
    return std::unique_ptr<Executor>(std::move(*exec));
  }
};

} // namespace

std::unique_ptr<Backend> createCpuBackend() { return std::make_unique<CpuBackend>(); }

} // namespace molt
