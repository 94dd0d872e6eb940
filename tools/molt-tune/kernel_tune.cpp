// molt-tune kernels (kernel_tune.h): candidate enumeration, the cost model, timing, the database.
#include "tools/molt-tune/kernel_tune.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <unistd.h>

#include "cpu/cpu_executor.h"
#include "kernels/cpu/parallel.h"
#include "molt/cuda_wrapper.h"
#include "molt/backend.h"
#include "molt/io.h"
#include "molt/ops.h"
#include "molt/trainer.h"
#include "molt/tuning.h"

namespace molt::tune {

namespace {

/// "cdiv(B,8)" -> 8 (the tokens per block); 0 when the grid is not of that form.
int64_t tokensPerBlock(const std::string &grid) {
  if (grid.rfind("cdiv(B,", 0) != 0 || grid.back() != ')')
    return 0;
  return std::atoll(grid.c_str() + 7);
}

bool isNumber(const std::string &s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

double median(std::vector<double> v) {
  if (v.empty())
    return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string speedup(double heuristic, double best) {
  char text[64];
  std::snprintf(text, sizeof text, "%.2fx", best > 0 ? heuristic / best : 1.0);
  return text;
}

/// Real-shaped inputs: standard normal x and y (the shapes and value scale training sees after
/// normalisation), fixed by a seed so every candidate sees the same tokens.
struct Inputs {
  std::vector<float> x, y;
  TensorMap params;
};

Inputs makeInputs(const Plan &plan, int64_t batch) {
  Inputs in;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> normal;
  const size_t n = size_t(batch * plan.model.d_model);
  in.x.resize(n);
  in.y.resize(n);
  for (float &v : in.x)
    v = normal(rng);
  for (float &v : in.y)
    v = normal(rng);
  in.params = initParams(plan, 0);
  return in;
}

/// Writes the params, inputs and a mid-run `scalars` (so Adam and the penalty do real work).
Status loadInputs(Executor &exec, const Inputs &in) {
  MOLT_RETURN_IF_ERROR(writeTensors(exec, in.params));
  MOLT_RETURN_IF_ERROR(exec.write("x", in.x.data(), in.x.size() * 4));
  MOLT_RETURN_IF_ERROR(exec.write("y", in.y.data(), in.y.size() * 4));
  std::array<float, 8> scalars = stepScalars(Schedule{}, 100, 99, exec.batch());
  return exec.write("scalars", scalars.data(), sizeof scalars);
}

/// A configuration of every kernel: kernel name -> candidate (absent: the heuristic).
using Choice = std::map<std::string, Candidate>;

/// Runs train_step for each choice in turn, `warmup` untimed rounds then `repeats` timed ones,
/// so a load spike on a shared machine hits every choice alike. Returns, per choice, each
/// kernel's median seconds per step (when profiling: ExecutorBase syncs after each launch, so
/// on CUDA this is launch-to-completion wall time) and the step's median wall time (under "").
class Bench {
public:
  Bench(const Plan &plan, std::string bundle, std::string device, int64_t batch)
      : plan_(plan), bundle_(std::move(bundle)), device_(std::move(device)), batch_(batch) {}

  Status open() {
    if (device_ == "cpu") {
      auto exec = CpuExecutor<float>::create(plan_, batch_);
      if (!exec)
        return exec.status();
      cpu_ = std::move(*exec);
      deviceName_ = cpuDeviceName();
      arch_ = hostArch();
      return Status::ok();
    }
    auto backend = createBackend(device_);
    if (!backend)
      return backend.status();
    backend_ = std::move(*backend);
    deviceName_ = backend_->deviceName();
    // CudaBackend names itself "<GPU> (sm_XY)": the arch is the part in parentheses.
    size_t open = deviceName_.rfind(" (sm_");
    arch_ = open == std::string::npos ? "cuda"
                                      : deviceName_.substr(open + 2, deviceName_.size() - open - 3);
    return Status::ok();
  }

  const std::string &deviceName() const { return deviceName_; }
  const std::string &arch() const { return arch_; }

  StatusOr<std::vector<std::map<std::string, double>>>
  time(const std::vector<Choice> &choices, const Inputs &in, int warmup, int repeats,
       bool profile = true) {
    // CPU: one executor whose thread counts change between steps. CUDA: the launch is compiled
    // into each kernel's wrapper, so every choice is its own bundle and executor.
    std::vector<std::unique_ptr<Executor>> owned;
    std::vector<ExecutorBase *> execs;
    for (size_t i = 0; i < choices.size(); ++i) {
      if (cpu_) {
        execs.push_back(cpu_.get());
        continue;
      }
      auto exec = cudaExecutor(choices[i], i);
      if (!exec)
        return exec.status();
      owned.push_back(std::move(*exec));
      execs.push_back(dynamic_cast<ExecutorBase *>(owned.back().get()));
      if (!execs.back())
        return internalError("the CUDA executor does not expose its profile");
    }
    for (size_t i = 0; i < (cpu_ ? 1 : execs.size()); ++i) { // the CPU executor is shared
      MOLT_RETURN_IF_ERROR(loadInputs(*execs[i], in));
      execs[i]->setProfiling(profile);
    }
    std::vector<std::map<std::string, std::vector<double>>> samples(choices.size());
    for (int round = 0; round < warmup + repeats; ++round)
      for (size_t i = 0; i < choices.size(); ++i) {
        ExecutorBase &exec = *execs[i];
        if (cpu_)
          for (const KernelDesc &k : plan_.kernels) {
            auto c = choices[i].find(k.name);
            cpu_->setKernelThreads(k.name, c == choices[i].end() ? 0 : c->second.threads);
          }
        std::map<std::string, double> before = exec.profile();
        auto start = std::chrono::steady_clock::now();
        MOLT_RETURN_IF_ERROR(exec.run("train_step"));
        MOLT_RETURN_IF_ERROR(exec.synchronize());
        double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        if (round < warmup)
          continue;
        samples[i][""].push_back(wall);
        for (const auto &[name, total] : exec.profile())
          samples[i][name].push_back(total - before[name]);
      }
    std::vector<std::map<std::string, double>> out(choices.size());
    for (size_t i = 0; i < choices.size(); ++i)
      for (auto &[name, v] : samples[i])
        out[i][name] = median(v);
    return out;
  }

private:
  StatusOr<std::unique_ptr<Executor>> cudaExecutor(const Choice &choice, size_t index) {
    Plan p = plan_;
    const std::string dir = bundle_ + ".tune-" + std::to_string(index);
    MOLT_RETURN_IF_ERROR(copyTree(bundle_, dir));
    for (KernelDesc &k : p.kernels) {
      auto c = choice.find(k.name);
      if (c == choice.end())
        continue;
      k.launch = c->second.launch;
      if (k.source.empty()) { // a manifest-only bundle: the executor would use the heuristic
        k.source = k.name + ".cu";
        k.entry = k.entry.empty() ? "molt_" + k.name : k.entry;
      }
      auto source = cudaWrapperSource(k);
      if (!source)
        return source.status();
      MOLT_RETURN_IF_ERROR(writeFileAtomic(dir + "/" + k.source, *source));
    }
    MOLT_RETURN_IF_ERROR(writePlan(p, dir));
    return backend_->prepare(p, dir, batch_);
  }

  const Plan &plan_;
  std::string bundle_, device_;
  int64_t batch_;
  std::unique_ptr<CpuExecutor<float>> cpu_;
  std::unique_ptr<Backend> backend_;
  std::string deviceName_, arch_;
};

} // namespace

std::vector<Candidate> candidates(const KernelDesc &k, const std::string &device, int64_t batch,
                                  int64_t dModel, int hardwareThreads) {
  std::vector<Candidate> out;
  if (device == "cpu") {
    out.push_back({0, {}, "heuristic"});
    const double work = opWork(k, batch, dModel);
    for (int t = 1; t <= hardwareThreads; t *= 2) {
      // Pruned: more threads than the kernel gives a parallel region's worth of work each.
      if (t > 1 && work / t < double(cpu::kParallelWork))
        break;
      out.push_back({t, {}, std::to_string(t) + " threads"});
    }
    if ((hardwareThreads & (hardwareThreads - 1)) != 0 &&
        work / hardwareThreads >= double(cpu::kParallelWork))
      out.push_back({hardwareThreads, {}, std::to_string(hardwareThreads) + " threads"});
    return out;
  }
  // CUDA: every template needs 256 threads (128 for the tile kernels) and any grid is correct
  // (grid-stride loops, kernels/cuda/README.md), so the grid's x size is the main knob.
  const LaunchConfig base = cudaDefaultLaunch(k);
  out.push_back({0, base, "heuristic"});
  const std::string &gx = base.grid[0];
  for (int scale : {-2, 2, 4}) {
    LaunchConfig l = base;
    if (int64_t per = tokensPerBlock(gx)) {
      int64_t n = scale > 0 ? per * scale : per / 2;
      if (n < 1 || batch / n < 1)
        continue;
      l.grid[0] = "cdiv(B," + std::to_string(n) + ")";
    } else if (isNumber(gx)) {
      int64_t blocks = std::atoll(gx.c_str());
      int64_t n = scale > 0 ? blocks / scale : blocks * 2;
      // Pruned: fewer than 8 blocks starves the GPU; more blocks than work items only idles.
      if (n < 8 || n > int64_t(opWork(k, batch, dModel)))
        continue;
      l.grid[0] = std::to_string(n);
    } else {
      continue;
    }
    out.push_back({0, l, "grid " + l.grid[0]});
  }
  if (base.tile_m > 0) { // the tile kernels also accept 128-thread blocks
    LaunchConfig l = base;
    l.block[0] = 128;
    out.push_back({0, l, "block 128"});
  }
  return out;
}

Status tuneKernels(const KernelTuneOptions &o) {
  auto plan = loadPlan(o.bundle);
  if (!plan)
    return plan.status();
  auto db = loadTuningDb(o.db);
  if (!db)
    return db.status();
  Bench bench(*plan, o.bundle, o.device, o.batch);
  MOLT_RETURN_IF_ERROR(bench.open());
  const std::string key = tuningDeviceKey(o.device, bench.arch(), bench.deviceName());
  DeviceTuning &dev = db->devices[key];
  dev.kind = o.device;
  dev.name = bench.deviceName();
  dev.arch = bench.arch();
  const Inputs in = makeInputs(*plan, o.batch);
  const int hw = cpu::threadCount();
  if (!o.quiet)
    std::printf("device %s, batch %lld, %zu kernels, database %s\n", key.c_str(),
                (long long)o.batch, plan->kernels.size(), o.db.c_str());

  std::map<std::string, Candidate> tuned; // kernel name -> the winner, for the final step time
  size_t index = 0;
  for (const KernelDesc &k : plan->kernels) {
    ++index;
    const std::string sig = kernelSignature(k);
    auto have = dev.kernels.find(sig);
    if (have != dev.kernels.end() && !o.retune && have->second.batch == o.batch) {
      tuned[k.name] = {have->second.threads, have->second.launch, "from database"};
      if (!o.quiet)
        std::printf("[%zu/%zu] %s: in the database, skipped\n", index, plan->kernels.size(),
                    k.name.c_str());
      continue;
    }
    std::vector<Candidate> cands = candidates(k, o.device, o.batch, plan->model.d_model, hw);
    std::vector<Choice> choices;
    for (const Candidate &c : cands)
      choices.push_back({{k.name, c}});
    auto times = bench.time(choices, in, o.warmup, o.repeats);
    if (!times)
      return times.status().withContext("kernel " + k.name);
    const double heuristic = (*times)[0][k.name];
    double best = heuristic;
    Candidate winner = cands.front();
    for (size_t i = 1; i < cands.size(); ++i)
      if ((*times)[i][k.name] < best)
        best = (*times)[i][k.name], winner = cands[i];
    TuningEntry &e = dev.kernels[sig];
    e.threads = winner.threads;
    e.launch = winner.launch;
    e.batch = o.batch;
    e.heuristicUs = heuristic * 1e6;
    e.bestUs = best * 1e6;
    tuned[k.name] = winner;
    // Saved after every kernel: an interrupted run keeps what it measured and resumes here.
    MOLT_RETURN_IF_ERROR(saveTuningDb(*db, o.db));
    if (!o.quiet) {
      std::printf("[%zu/%zu] %-20s %zu candidates  heuristic %9.1f us  best %9.1f us (%s)  %s\n",
                  index, plan->kernels.size(), k.name.c_str(), cands.size(), e.heuristicUs,
                  e.bestUs, winner.label.c_str(), speedup(heuristic, best).c_str());
      std::fflush(stdout);
    }
  }
  // The whole step, without profiling's syncs: the heuristic, the per-kernel winners, and (on
  // the CPU) every kernel at one thread count. Per-kernel times miss how kernels interact (an
  // OpenMP team resized between kernels stalls on a loaded machine), so the step decides.
  std::vector<Choice> steps{Choice{}, tuned};
  std::vector<std::string> labels{"heuristic", "per-kernel"};
  if (o.device == "cpu")
    for (int t = 1; t <= hw; t = t * 2 > hw && t != hw ? hw : t * 2) {
      Choice all;
      for (const KernelDesc &k : plan->kernels)
        all[k.name] = {t, {}, std::to_string(t) + " threads"};
      steps.push_back(all);
      labels.push_back("all at " + std::to_string(t) + " threads");
    }
  auto times = bench.time(steps, in, o.warmup, o.repeats * 2, false);
  if (!times)
    return times.status();
  size_t best = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    if ((*times)[i][""] < (*times)[best][""])
      best = i;
    std::printf("train_step %-22s %9.3f ms\n", labels[i].c_str(), (*times)[i][""] * 1e3);
  }
  if (best != 1) { // the database keeps what made the step fastest
    for (const KernelDesc &k : plan->kernels) {
      auto c = steps[best].find(k.name);
      TuningEntry &e = dev.kernels[kernelSignature(k)];
      e.threads = c == steps[best].end() ? 0 : c->second.threads;
      e.launch = c == steps[best].end() ? cudaDefaultLaunch(k) : c->second.launch;
    }
    MOLT_RETURN_IF_ERROR(saveTuningDb(*db, o.db));
  }
  const double before = (*times)[0][""], after = (*times)[best][""];
  std::printf("train_step: heuristic %.3f ms, tuned %.3f ms (%s, %s)\n", before * 1e3,
              after * 1e3, labels[best].c_str(), speedup(before, after).c_str());
  return Status::ok();
}

} // namespace molt::tune
