// ExecutorBase: the part of every backend's executor that does not touch a device — naming and
// sizing every tensor, checking the plan's invocations, and running an entry point in order.
//
// A backend supplies storage (allocate / writeBytes / readBytes / zeroBytes) and launch(). The
// CPU and CUDA executors both derive from this, so buffer layout, zeroing rules and entry-point
// order cannot drift between them.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "molt/backend.h"

namespace molt {

class ExecutorBase : public Executor {
public:
  ExecutorBase(Plan plan, int64_t batch);

  /// Sizes every param (and its d_/m_/v_), every buffer (B = batch, P = B×T, Pk = B×N_k),
  /// checks each invocation against the op table, molt/ops.def (every argument bound once, to a
  /// tensor of the dtype and shape its row gives for the kernel's attrs), then allocates. Call
  /// once, from the factory.
  Status initialize();

  const Plan &plan() const override { return plan_; }
  int64_t batch() const override { return batch_; }
  int64_t rows() const override { return rows_; }
  Status setRows(int64_t rows) override;
  const BufferInfo *info(const std::string &name) const override;
  std::vector<std::string> names() const override;
  Status write(const std::string &name, const void *host, size_t bytes) override;
  Status read(const std::string &name, void *host, size_t bytes) override;
  Status zero(const std::string &name) override;
  /// Zeroes every tensor an invocation binds to an accumulating (Acc) argument of its op, such
  /// as `stats` and `yhat`, and, for train_step, every d_p; then launches each invocation.
  /// A row of x or y holding NaN or Inf (docs/reliability.md, "Non-finite input"): an entry
  /// that updates params (adam) is not run and reports itself skipped (stats[5] = 1, stats[0] =
  /// NaN); any other entry runs, and then that row of each row output (yhat, y_dot), the loss
  /// stats[0] and every d_p it wrote are NaN. The check reads x and y back (a host copy on the
  /// CPU; a device-to-host copy on CUDA) unless vouchFiniteInputs(true).
  Status run(const std::string &entryPoint) override;
  Status synchronize() override { return Status::ok(); }
  void vouchFiniteInputs(bool on) override { vouchedFinite_ = on; }

  /// The param names a `params` argument lists, in order.
  static std::vector<std::string> splitParams(const std::string &list);
  void setProfiling(bool on) override { profiling_ = on; }
  std::map<std::string, double> profile() const override { return profile_; }

  /// Pair capacity P (= B × T) at the active rows.
  int64_t pairCapacity() const { return rows_ * plan_.model.numTransforms(); }

protected:
  virtual Status allocate(const BufferInfo &info) = 0;
  virtual Status writeBytes(const BufferInfo &info, const void *host) = 0;
  virtual Status readBytes(const BufferInfo &info, void *host) = 0;
  virtual Status zeroBytes(const BufferInfo &info) = 0;
  virtual Status launch(const KernelDesc &kernel, const Invocation &invocation) = 0;

  /// A bf16 plan streams x and the weights as bf16 copies (docs/bundle.md, "Precision"): a GPU
  /// executor (cuda, cuda-emu) keeps one beside x and each fp32 master param, refreshed by write()
  /// and by adam.
  bool keepsBf16Copy(const std::string &name) const {
    return plan_.precision == "bf16" && (name == "x" || plan_.findParam(name));
  }

  /// Whether caller memory may stand in for `name` (bind) or be handed out (storage): not for a
  /// tensor with a bf16 copy, which writes through that memory would leave stale.
  Status checkBindable(const std::string &name) const {
    if (!info(name))
      return notFound("no tensor named '" + name + "'");
    if (keepsBf16Copy(name))
      return unavailable("'" + name + "' has a bf16 copy in this bf16 plan, which caller memory "
                         "would leave stale; write() it instead");
    return Status::ok();
  }

  /// `t` at the active rows (its leading row dimension cut to rows(); static shapes as they are).
  BufferInfo live(const BufferInfo &t) const;

  /// A kernel attribute as an integer / float / string; kernels were checked at initialize().
  static int64_t intAttr(const KernelDesc &k, const std::string &name);
  static double floatAttr(const KernelDesc &k, const std::string &name);
  static std::string stringAttr(const KernelDesc &k, const std::string &name);

private:
  Status addTensor(BufferInfo info);
  StatusOr<BufferInfo> copyTarget(const std::string &name, size_t bytes, const char *verb) const;
  Status checkInvocation(const std::string &entry, const Invocation &inv) const;
  /// bad[r] = 1 when row r of a row input (bound as `x` or `y`) holds a NaN or Inf.
  Status findNonFiniteRows(const std::vector<Invocation> &invocations, std::vector<char> &bad);
  StatusOr<int64_t> readRowTensor(const std::string &name);
  Status markStepSkipped();
  Status allocationFailure(const BufferInfo &t, const Status &cause) const;
  Status poisonOutputs(const std::vector<Invocation> &invocations, const std::vector<char> &bad);

  Plan plan_;
  int64_t batch_;
  int64_t rows_;
  std::vector<BufferInfo> tensors_;
  std::map<std::string, size_t> index_;
  bool profiling_ = false;
  std::map<std::string, double> profile_;
  std::vector<float> rowScratch_; // host copy for the non-finite row check
  bool vouchedFinite_ = false;    // vouchFiniteInputs(): skip that check
};

} // namespace molt
