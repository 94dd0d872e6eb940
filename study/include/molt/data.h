// Activation data: safetensors shards with `x` [n,d] and `y` [n,d] (F32/F16/BF16), a file or a
// directory read in name order, streamed through a shuffle window with an exactly resumable
// cursor, plus the dataset-wise normalisation (mean ‖x‖ = √d, same for y).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "molt/safetensors.h"
#include "molt/status.h"

namespace molt {

/// Every shard of a data set, mapped and checked (x and y present, 2-D, same n, width d,
/// float dtype) when opened; rows are converted to f32 on demand.
class ShardSet {
public:
  /// PATH is a .safetensors file or a directory of them. d > 0 checks the width; d = 0 takes
  /// it from the first shard.
  static StatusOr<std::unique_ptr<ShardSet>> open(const std::string &path, int64_t d);
  int64_t d() const { return d_; }
  int64_t rows() const { return rows_; }
  size_t numShards() const { return files_.size(); }
  int64_t shardRows(size_t shard) const;
  /// Rows [row, row+count) of one shard as f32.
  void readRows(size_t shard, int64_t row, int64_t count, float *x, float *y) const;
  /// IoError naming the shard when its file is gone or changed size since open(): a shard
  /// truncated under the mapping would fault on the next read (SIGBUS), so streams check
  /// before each window.
  Status checkUnchanged(size_t shard) const;

private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  int64_t d_ = 0, rows_ = 0;
};

/// Where a stream stands: the start of the current shuffle window, which window of which
/// epoch it is (the window's permutation derives from the seed and these two) and how many
/// of its rows were served. Refilling the window from here reproduces it exactly.
struct DataCursor {
  int64_t epoch = 0, window = 0;
  int64_t shard = 0, row = 0; // first row of the window
  int64_t served = 0;         // rows of the window already handed out
};

/// Multiplies x and y so that their mean norms become √d (folded back into exported weights).
struct Normalization {
  float x_scale = 1.0f, y_scale = 1.0f;
};

/// Computes the normalisation from the first `maxRows` finite rows (a bounded prefix).
Normalization computeNormalization(const ShardSet &data, int64_t maxRows = 65536);

/// Batches from a ShardSet through a shuffle window of `windowRows` rows. Rows with a NaN or
/// Inf (before or after normalisation) are skipped and counted. With `wrap`, the stream restarts at the first shard (a new
/// epoch, a new permutation); without it, next() returns fewer rows at the end.
class BatchStream {
public:
  BatchStream(const ShardSet &data, uint64_t seed, int64_t windowRows, bool shuffle, bool wrap,
              Normalization norm = {});
  /// Fills up to `batch` rows; returns how many (0 at the end of an unwrapped stream). With
  /// x and y null the rows are passed over (a data-parallel rank skipping the others' parts).
  StatusOr<int64_t> next(int64_t batch, float *x, float *y);
  const DataCursor &cursor() const { return cursor_; }
  /// Jumps to a saved cursor (InvalidArgument when it does not fit this data set).
  Status seek(const DataCursor &c);
  int64_t skippedRows() const { return skipped_; }

private:
  Status fill();
  const ShardSet &data_;
  uint64_t seed_;
  int64_t windowRows_;
  bool shuffle_, wrap_;
  Normalization norm_;
  DataCursor cursor_;
  bool filled_ = false;
  int64_t nextShard_ = 0, nextRow_ = 0; // where the window after this one starts
  std::vector<float> wx_, wy_;          // the window's rows, permuted
  int64_t windowSize_ = 0;
  int64_t skipped_ = 0;
  bool exhausted_ = false;    // an unwrapped stream that reached the end
  bool fullEpoch_ = false;    // a whole epoch was read since the stream started
  int64_t rowsSinceWrap_ = 0; // to notice a data set with no finite row at all
};

/// The default shuffle window: at most 64Ki rows and about 128 MiB of f32 x and y.
int64_t defaultWindowRows(int64_t d, int64_t batch);

} // namespace molt
