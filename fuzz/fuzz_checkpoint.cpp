// Fuzz target: the checkpoint loader, against the tiny MOLT and transcoder fixture bundles.
#include "molt/checkpoint.h"
#include "molt/plan.h"

#include "fuzz_input.h"

#include <vector>

namespace {

const std::vector<molt::Plan> &plans() {
  static const std::vector<molt::Plan> loaded = [] {
    std::vector<molt::Plan> out;
    for (const char *name : {"tiny-molt", "tiny-transcoder"}) {
      molt::StatusOr<molt::Plan> p =
          molt::loadPlan(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/" + name);
      if (!p)
        std::abort(); // the fixtures are part of the tree: a missing one is a broken checkout
      out.push_back(std::move(*p));
    }
    return out;
  }();
  return loaded;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string path = molt::fuzz::inputFile(data, size);
  for (const molt::Plan &plan : plans()) {
    molt::StatusOr<molt::Checkpoint> ckpt = molt::loadCheckpoint(path, plan);
    if (!ckpt)
      continue;
    // An accepted checkpoint holds every param at its manifest shape.
    for (const molt::ParamDesc &p : plan.params) {
      auto it = ckpt->tensors.find(p.name);
      MOLT_FUZZ_CHECK(it != ckpt->tensors.end());
      size_t numel = 1;
      for (int64_t n : p.shape)
        numel *= size_t(n);
      MOLT_FUZZ_CHECK(it->second.size() == numel);
    }
  }
  return 0;
}
