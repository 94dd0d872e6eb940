// The launch marshalling the CUDA and cuda-emu executors share (device_executor.h).
#include "device_executor.h"

#include "molt/cuda_wrapper.h"
#include "molt/ops.h"

namespace molt {

StatusOr<std::vector<k::ParamEntry>> DeviceExecutor::paramRows(const std::string &list) {
  std::vector<k::ParamEntry> rows;
  for (const std::string &p : splitParams(list)) {
    const BufferInfo *t = info(p);
    if (!t)
      return invalidArgument("params list names unknown tensor '" + p + "'");
    auto f = [&](const std::string &n) { return static_cast<float *>(deviceAddress(n)); };
    rows.push_back({f(p), f("d_" + p), f("m_" + p), f("v_" + p), t->numel(),
                    const_cast<unsigned short *>(bf16Copy(p))});
  }
  return rows;
}

StatusOr<DeviceExecutor::Launch> DeviceExecutor::marshal(const KernelDesc &kd,
                                                         const Invocation &inv,
                                                         const LaunchConfig &L) {
  const OpSignature *sig = findOp(kd.op);
  if (!sig)
    return invalidArgument("kernel '" + kd.name + "': unknown op '" + kd.op + "'");
  Launch out;
  k::Args &args = out.args;
  int slot = 0;
  for (const char *name : sig->args) {
    if (std::string(name) == "params")
      continue; // its tensors travel in the ParamEntry table
    if (slot == k::kMaxArgs)
      return internalError("op '" + kd.op + "' has more arguments than molt::k::Args holds");
    const std::string &tensor = inv.args.at(name);
    args.lp[slot] = bf16Copy(tensor);
    args.p[slot++] = deviceAddress(tensor);
  }
  args.B = rows();
  args.P = pairCapacity();
  args.d_model = int(plan().model.d_model);
  if (auto it = inv.args.find("params"); it != inv.args.end()) {
    auto table = paramTable(it->second);
    if (!table)
      return table.status();
    args.params = table->first;
    args.nparams = table->second;
  }
  if (cudaWorkWords(kd, rows()) > 0) {
    auto work = workScratch(size_t(cudaWorkZeroedWords(kd, rows())));
    if (!work)
      return work.status();
    args.work = *work;
  }
  auto grid = launchGrid(plan(), L, rows());
  if (!grid)
    return grid.status().withContext("kernel '" + kd.name + "'");
  out.grid = *grid;
  return out;
}

} // namespace molt
