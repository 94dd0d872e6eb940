// molt-check-run: exits 0 when RUN's checkpoint loads and checks against RUN/bundle (fault tests).
#include <cstdio>
#include <string>

#include "molt/checkpoint.h"
#include "molt/plan.h"

int main(int argc, char **argv) {
  if (argc != 2 || std::string(argv[1]) == "--help") {
    std::fprintf(stderr, "usage: molt-check-run RUN\n"
                         "Loads RUN/checkpoint.safetensors against RUN/bundle; prints its step.\n");
    return argc == 2 ? 0 : 1;
  }
  const std::string run = argv[1];
  molt::StatusOr<molt::Plan> plan = molt::loadPlan(run + "/bundle");
  if (!plan) {
    std::fprintf(stderr, "molt-check-run: error: %s\n", plan.status().message().c_str());
    return 1;
  }
  molt::StatusOr<molt::Checkpoint> ckpt = molt::loadCheckpoint(run + "/checkpoint.safetensors", *plan);
  if (!ckpt) {
    std::fprintf(stderr, "molt-check-run: error: %s\n", ckpt.status().message().c_str());
    return 1;
  }
  std::printf("%lld\n", static_cast<long long>(ckpt->state.step));
  return 0;
}
