// Fuzz target: the safetensors reader, and the activation-shard loader and batch stream on top.
#include "molt/data.h"
#include "molt/safetensors.h"

#include "fuzz_input.h"

#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  std::string path = molt::fuzz::inputFile(data, size);
  molt::StatusOr<std::unique_ptr<molt::SafetensorsFile>> file = molt::SafetensorsFile::open(path);
  if (!file)
    return 0;
  // Touch every byte the reader vouched for, so ASan sees any range it got wrong.
  std::vector<float> row;
  for (const molt::TensorView &t : (*file)->tensors()) {
    MOLT_FUZZ_CHECK(t.bytes == size_t(t.numel()) * molt::dtypeSize(t.dtype));
    if (molt::isFloatDtype(t.dtype) && t.numel() <= (1 << 20)) {
      row.resize(size_t(t.numel()));
      molt::toF32(t, 0, t.numel(), row.data());
      (void)(*file)->readF32(t.name, t.shape);
    }
  }
  // The same bytes as a data shard: open, normalise and stream a few batches, wrapping.
  molt::StatusOr<std::unique_ptr<molt::ShardSet>> shards = molt::ShardSet::open(path, 0);
  if (!shards || (*shards)->d() > 4096)
    return 0;
  const molt::ShardSet &set = **shards;
  molt::Normalization norm = molt::computeNormalization(set, 256);
  molt::BatchStream stream(set, /*seed=*/7, /*windowRows=*/16, /*shuffle=*/true, /*wrap=*/true,
                           norm);
  const int64_t batch = 4;
  std::vector<float> x(size_t(batch * set.d())), y(x.size());
  for (int i = 0; i < 8; ++i)
    if (!stream.next(batch, x.data(), y.data()))
      break;
  return 0;
}
