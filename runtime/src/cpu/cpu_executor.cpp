// CpuExecutor<S> (runtime/src/cpu/cpu_executor.h) and the CPU Backend.
#include "cpu/cpu_executor.h"

#include <cstring>

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

} // namespace

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
  const std::string &op = k.op;
  const int64_t B = batch(), D = plan().model.d_model;
  const int64_t R = intAttr(k, "R"), N = intAttr(k, "N"), OFF = intAttr(k, "OFF");
  const bool tc = op.rfind("tc_", 0) == 0;
  const int64_t T = tc ? intAttr(k, "F") : intAttr(k, "T");
  const S biasSign = tc ? S(1) : S(-1); // molt: pre = x·Eᵀ − b; transcoder: + b
  const bool jumprelu = stringAttr(k, "gate") == "jumprelu";
  const cpu::GateParams gate = gateOf(stringAttr(k, "gate"), floatAttr(k, "bandwidth"), intAttr(k, "k"));
  const cpu::PenaltyParams pen = penaltyOf(stringAttr(k, "kind"), floatAttr(k, "c"));

  auto f = [&](const char *arg) { return static_cast<S *>(raw(inv.args.at(arg))); };
  auto i32 = [&](const char *arg) { return static_cast<int32_t *>(raw(inv.args.at(arg))); };
  // θ means something only to JumpReLU; other gates bind it to a dummy.
  auto theta = [&](const char *arg) { return jumprelu ? f(arg) : nullptr; };
  auto lamOverB = [&] { return f("scalars")[0] / S(B); };
  // The pair lists as far as the op binds them (penalties read no tokens).
  auto pairs = [&] {
    auto bound = [&](const char *arg) { return inv.args.count(arg) > 0; };
    cpu::PairLists<S> p;
    p.ptr = i32("pair_ptr");
    p.tok = bound("pair_tok") ? i32("pair_tok") : nullptr;
    p.gate = f("pair_gate");
    p.pre = bound("pair_pre") ? f("pair_pre") : nullptr;
    return p;
  };
  auto slots = [&] {
    std::vector<cpu::ParamSlot<S>> out;
    for (const std::string &name : splitParams(inv.args.at("params")))
      out.push_back({data(name), data("d_" + name), data("m_" + name), data("v_" + name),
                     info(name)->numel()});
    return out;
  };

  if (op == "encode_gate" || op == "tc_encode")
    cpu::encodeGate(B, T, D, gate, biasSign, f("x"), f("enc_w"), f("enc_b"), theta("theta"),
                    f("pre"), i32("pair_ptr"), i32("pair_tok"), f("pair_gate"), f("pair_pre"),
                    i32("pair_count"), f("stats"));
  else if (op == "gate_bwd" || op == "tc_encode_bwd")
    cpu::gateBwd(T, D, gate, biasSign, f("x"), theta("theta"), pairs(), f("pair_dgate"),
                 f("d_enc_w"), f("d_enc_b"), theta("d_theta"));
  else if (op == "frob_norm")
    cpu::frobNorm(D, R, N, f("u"), f("v"), f("norm") + OFF, f("gram_u"), f("gram_v"));
  else if (op == "frob_norm_bwd")
    cpu::frobNormBwd(D, R, N, f("d_norm") + OFF, f("norm") + OFF, f("u"), f("v"), f("gram_u"),
                     f("gram_v"), f("d_u"), f("d_v"));
  else if (op == "bucket_apply")
    cpu::bucketApply(B, D, R, N, OFF, f("x"), f("u"), f("v"), pairs(), f("yhat"));
  else if (op == "bucket_apply_bwd")
    cpu::bucketApplyBwd(D, R, N, OFF, f("d_yhat"), f("x"), f("u"), f("v"), pairs(), f("d_u"),
                        f("d_v"), f("pair_dgate"));
  else if (op == "add_bias")
    cpu::addBias(B, D, f("dec_b"), f("yhat"));
  else if (op == "mse_loss")
    cpu::mseLoss(B, D, f("yhat"), f("y"), f("d_yhat"), f("stats"));
  else if (op == "bias_grad")
    cpu::biasGrad(B, D, f("d_yhat"), f("d_dec_b"));
  else if (op == "penalty")
    cpu::penalty(T, pen, pairs(), f("norm"), lamOverB(), f("pair_dgate"), f("d_norm"),
                 f("stats"));
  else if (op == "grad_norm")
    cpu::gradNorm(slots(), f("stats"));
  else if (op == "adam")
    cpu::adam(slots(), f("scalars"), f("stats"));
  else if (op == "tc_decode")
    cpu::tcDecode(B, D, T, pairs(), f("dec_w"), f("yhat"));
  else if (op == "tc_decode_bwd")
    cpu::tcDecodeBwd(D, T, f("d_yhat"), pairs(), f("dec_w"), f("d_dec_w"), f("pair_dgate"));
  else if (op == "skip_apply")
    cpu::skipApply(B, D, f("x"), f("skip_w"), f("yhat"));
  else if (op == "skip_bwd")
    cpu::skipBwd(B, D, f("d_yhat"), f("x"), f("d_skip_w"));
  else if (op == "encode_tangent" || op == "tc_encode_tangent")
    cpu::encodeTangent(T, D, f("x_dot"), f("enc_w"), pairs(), f("pair_tan"));
  else if (op == "tc_penalty")
    cpu::tcPenalty(D, T, pen, pairs(), f("dec_w"), lamOverB(), f("pair_dgate"), f("d_dec_w"),
                   f("stats"));
  else
    return internalError("the CPU backend has no kernel for op '" + op + "'");
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
