// Our own safetensors reader (memory-mapped, fully validated) and writer (atomic).
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
// then the data. Offsets are relative to the end of the header, must be in range, must not
// overlap and must cover the data exactly.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "molt/status.h"

namespace molt {

/// One tensor of an open file; `data` points into the mapping (valid while the file is open).
struct TensorView {
  std::string name;
  std::string dtype; // safetensors spelling: "F32", "F16", "BF16", "I32", "I64", "U8", ...
  std::vector<int64_t> shape;
  const uint8_t *data = nullptr;
  size_t bytes = 0;
  int64_t numel() const;
};

/// Bytes per element of a safetensors dtype, or 0 for an unknown one.
size_t dtypeSize(const std::string &dtype);
/// True for the dtypes that convert to f32 (F32, F16, BF16).
bool isFloatDtype(const std::string &dtype);

/// Converts `count` elements of a float tensor (F32/F16/BF16) starting at element `first`.
void toF32(const TensorView &t, int64_t first, int64_t count, float *out);

class SafetensorsFile {
public:
  /// Maps and validates PATH: NotFound, DataLoss (truncated/corrupt) or InvalidArgument.
  static StatusOr<std::unique_ptr<SafetensorsFile>> open(const std::string &path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile &) = delete;
  SafetensorsFile &operator=(const SafetensorsFile &) = delete;

  const std::string &path() const { return path_; }
  /// The file's size when it was opened (all of it is mapped).
  size_t fileSize() const { return mapSize_; }
  const std::vector<TensorView> &tensors() const { return tensors_; }
  const std::map<std::string, std::string> &metadata() const { return metadata_; }
  const TensorView *find(const std::string &name) const;
  /// A whole float tensor as f32 with the expected shape (InvalidArgument otherwise).
  StatusOr<std::vector<float>> readF32(const std::string &name,
                                       const std::vector<int64_t> &shape) const;

private:
  SafetensorsFile() = default;
  std::string path_;
  void *map_ = nullptr;
  size_t mapSize_ = 0;
  std::vector<TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// A tensor to write: raw little-endian bytes in `dtype`.
struct TensorData {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};
TensorData f32Tensor(const std::string &name, const std::vector<int64_t> &shape,
                     const std::vector<float> &values);
TensorData i64Tensor(const std::string &name, const std::vector<int64_t> &shape,
                     const std::vector<int64_t> &values);

/// The file's bytes (tensors laid out in the given order).
std::string serializeSafetensors(const std::vector<TensorData> &tensors,
                                 const std::map<std::string, std::string> &metadata);
/// Serialises and writes atomically.
Status writeSafetensors(const std::string &path, const std::vector<TensorData> &tensors,
                        const std::map<std::string, std::string> &metadata = {});

} // namespace molt
