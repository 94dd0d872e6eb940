// embed_example BUNDLE: loads a compiled bundle, runs a forward pass and one training step on
// the CPU through the public runtime API, and reads the output in place (no copy).
#include <array>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "molt/backend.h"
#include "molt/plan.h"
#include "molt/trainer.h"

namespace {

int fail(const molt::Status &s) {
  std::fprintf(stderr, "embed_example: error: %s\n", s.message().c_str());
  return 1;
}

} // namespace

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: embed_example BUNDLE_DIR\n");
    return 1;
  }
  const std::string bundle = argv[1];
  const int64_t batch = 32;

  molt::StatusOr<molt::Plan> plan = molt::loadPlan(bundle);
  if (!plan)
    return fail(plan.status());
  auto backend = molt::createBackend("cpu");
  if (!backend)
    return fail(backend.status());
  auto exec = (*backend)->prepare(*plan, bundle, batch);
  if (!exec)
    return fail(exec.status());
  molt::Executor &ex = **exec;
  if (molt::Status s = molt::writeTensors(ex, molt::initParams(*plan, /*seed=*/1)); !s)
    return fail(s);

  // Inputs: bind the executor's `x` to our own rows, so the kernels read them in place.
  const int64_t d = plan->model.d_model;
  std::vector<float> x(size_t(batch * d)), y(size_t(batch * d));
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = normal(rng);
    y[i] = 0.5f * x[i];
  }
  if (molt::Status s = ex.bind("x", x.data()); !s)
    return fail(s);
  if (molt::Status s = ex.run("forward"); !s)
    return fail(s);
  // Outputs: read `yhat` where the executor wrote it.
  const float *yhat = static_cast<const float *>(ex.storage("yhat"));
  double norm = 0;
  for (int64_t i = 0; i < batch * d; ++i)
    norm += double(yhat[i]) * yhat[i];

  // One Adam step on (x, y) with the default schedule.
  molt::Schedule schedule;
  schedule.lambda = plan->model.penalty.lambda;
  std::array<float, 8> scalars = molt::stepScalars(schedule, 1, 0, batch);
  molt::Status s = ex.write("scalars", scalars.data(), sizeof scalars);
  if (s)
    s = ex.write("y", y.data(), y.size() * sizeof(float));
  if (s)
    s = ex.run("train_step");
  std::array<float, 16> stats{};
  if (s)
    s = ex.read("stats", stats.data(), sizeof stats);
  if (s)
    s = ex.bind("x", nullptr); // x is about to go out of scope
  if (!s)
    return fail(s);
  std::printf("%s: d=%lld, |yhat| = %.4f, train_step mse = %.4f\n", plan->model.name.c_str(),
              (long long)d, std::sqrt(norm), stats[0] / double(batch));
  return std::isfinite(stats[0]) ? 0 : 1;
}
