// Fuzz target: the bundle manifest loader (parsePlan) and its writer's round trip.
#include "molt/plan.h"

#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string text(reinterpret_cast<const char *>(data), size);
  molt::StatusOr<molt::Plan> plan = molt::parsePlan(text);
  if (!plan)
    return 0;
  // Whatever the loader accepts, the writer must write back into something it accepts again,
  // unchanged: bundles are rewritten by the tools, and a manifest that stops loading after a
  // rewrite would lose a run.
  std::string once = molt::planToJson(*plan);
  molt::StatusOr<molt::Plan> again = molt::parsePlan(once);
  MOLT_FUZZ_CHECK(bool(again));
  MOLT_FUZZ_CHECK(molt::planToJson(*again) == once);
  return 0;
}
