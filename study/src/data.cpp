// Activation shards: opening and checking them, the seeded shuffle window, normalisation.
#include "molt/data.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "molt/io.h"
#include "molt/random.h"

namespace fs = std::filesystem;

namespace molt {
namespace {

// One splitmix64 step from z: turns (seed, epoch, window) into an independent stream start, so
// no RNG state has to be saved for the shuffle: the cursor alone determines the permutation.
uint64_t mix(uint64_t z) { return SplitMix64{z}.next(); }

bool finiteRow(const float *v, int64_t d, float scale = 1.0f) {
  for (int64_t j = 0; j < d; ++j)
    if (!std::isfinite(v[j] * scale))
      return false;
  return true;
}

Status checkShard(const SafetensorsFile &f, int64_t &d) {
  const TensorView *x = f.find("x"), *y = f.find("y");
  if (!x || !y)
    return invalidArgument(f.path() + ": an activation shard needs tensors 'x' and 'y'");
  for (const TensorView *t : {x, y}) {
    if (!isFloatDtype(t->dtype))
      return invalidArgument(f.path() + ": '" + t->name + "' has unsupported dtype " + t->dtype +
                             " (molt reads F32, F16 or BF16)");
    if (t->shape.size() != 2)
      return invalidArgument(f.path() + ": '" + t->name + "' must be 2-D [n, d]");
  }
  if (x->shape[0] != y->shape[0])
    return invalidArgument(f.path() + ": x has " + std::to_string(x->shape[0]) +
                           " rows but y has " + std::to_string(y->shape[0]));
  if (d == 0)
    d = x->shape[1];
  for (const TensorView *t : {x, y})
    if (t->shape[1] != d)
      return invalidArgument(f.path() + ": '" + t->name + "' has width " +
                             std::to_string(t->shape[1]) + " but the model's d is " +
                             std::to_string(d));
  return Status::ok();
}

} // namespace

StatusOr<std::unique_ptr<ShardSet>> ShardSet::open(const std::string &path, int64_t d) {
  std::vector<std::string> paths;
  if (isDirectory(path)) {
    std::error_code ec;
    for (const fs::directory_entry &e : fs::directory_iterator(path, ec))
      if (e.path().extension() == ".safetensors")
        paths.push_back(e.path().string());
    if (ec)
      return ioError("cannot list " + path + ": " + ec.message());
    std::sort(paths.begin(), paths.end());
    if (paths.empty())
      return notFound("no .safetensors shards in " + path);
  } else if (pathExists(path)) {
    paths.push_back(path);
  } else {
    return notFound("no such data file or directory: " + path);
  }
  std::unique_ptr<ShardSet> set(new ShardSet());
  set->d_ = d;
  for (const std::string &p : paths) {
    StatusOr<std::unique_ptr<SafetensorsFile>> f = SafetensorsFile::open(p);
    if (!f)
      return f.status();
    MOLT_RETURN_IF_ERROR(checkShard(**f, set->d_));
    set->rows_ += (*f)->find("x")->shape[0];
    set->files_.push_back(std::move(*f));
  }
  if (set->rows_ == 0)
    return invalidArgument(path + ": the data set has no rows");
  return set;
}

int64_t ShardSet::shardRows(size_t shard) const { return files_[shard]->find("x")->shape[0]; }

void ShardSet::readRows(size_t shard, int64_t row, int64_t count, float *x, float *y) const {
  const SafetensorsFile &f = *files_[shard];
  toF32(*f.find("x"), row * d_, count * d_, x);
  toF32(*f.find("y"), row * d_, count * d_, y);
}

Status ShardSet::checkUnchanged(size_t shard) const {
  const SafetensorsFile &f = *files_[shard];
  std::error_code ec;
  const uintmax_t size = std::filesystem::file_size(f.path(), ec);
  std::string why;
  if (ec)
    why = ec.message();
  else if (size != f.fileSize())
    why = "it is now " + std::to_string(size) + " bytes, was " + std::to_string(f.fileSize());
  if (why.empty())
    return Status::ok();
  return ioError("data shard " + f.path() + " became unreadable during the run (" + why +
                 "); the last checkpoint is kept: restore the shard and repeat the command with "
                 "--resume");
}

Normalization computeNormalization(const ShardSet &data, int64_t maxRows) {
  int64_t d = data.d();
  std::vector<float> x(static_cast<size_t>(d)), y(static_cast<size_t>(d));
  double sumX = 0, sumY = 0;
  int64_t n = 0;
  for (size_t s = 0; s < data.numShards() && n < maxRows; ++s)
    for (int64_t r = 0; r < data.shardRows(s) && n < maxRows; ++r) {
      data.readRows(s, r, 1, x.data(), y.data());
      if (!finiteRow(x.data(), d) || !finiteRow(y.data(), d))
        continue;
      double nx = 0, ny = 0;
      for (int64_t j = 0; j < d; ++j) {
        nx += double(x[size_t(j)]) * x[size_t(j)];
        ny += double(y[size_t(j)]) * y[size_t(j)];
      }
      sumX += std::sqrt(nx);
      sumY += std::sqrt(ny);
      ++n;
    }
  Normalization norm;
  double target = std::sqrt(double(d));
  if (n > 0 && sumX > 0)
    norm.x_scale = float(target / (sumX / double(n)));
  if (n > 0 && sumY > 0)
    norm.y_scale = float(target / (sumY / double(n)));
  // Denormal-sized data makes √d / mean norm overflow a float: an infinite scale would turn
  // every row into Inf/NaN (and the exported weights with it), so treat it like zero data.
  for (float *s : {&norm.x_scale, &norm.y_scale})
    if (!std::isfinite(*s))
      *s = 1.0f;
  return norm;
}

int64_t defaultWindowRows(int64_t d, int64_t batch) {
  int64_t byMemory = (int64_t(128) << 20) / (8 * std::max<int64_t>(d, 1));
  return std::max(batch, std::min<int64_t>(65536, byMemory));
}

BatchStream::BatchStream(const ShardSet &data, uint64_t seed, int64_t windowRows, bool shuffle,
                         bool wrap, Normalization norm)
    : data_(data), seed_(seed), windowRows_(std::max<int64_t>(windowRows, 1)), shuffle_(shuffle),
      wrap_(wrap), norm_(norm) {}

Status BatchStream::seek(const DataCursor &c) {
  if (c.shard < 0 || size_t(c.shard) >= data_.numShards() || c.row < 0 ||
      c.row > data_.shardRows(size_t(c.shard)) || c.served < 0 || c.served > windowRows_ ||
      c.epoch < 0 || c.window < 0)
    return invalidArgument("the saved data cursor does not fit this data set (was the data "
                           "changed since the checkpoint?)");
  cursor_ = c;
  filled_ = false;
  exhausted_ = false;
  return Status::ok();
}

// Loads the window that starts at the cursor and applies its permutation.
Status BatchStream::fill() {
  int64_t d = data_.d();
  wx_.resize(size_t(windowRows_ * d));
  wy_.resize(size_t(windowRows_ * d));
  int64_t n = 0, shard = cursor_.shard, row = cursor_.row;
  while (n < windowRows_ && size_t(shard) < data_.numShards()) {
    int64_t take = std::min(windowRows_ - n, data_.shardRows(size_t(shard)) - row);
    if (take > 0) {
      float *xs = &wx_[size_t(n * d)], *ys = &wy_[size_t(n * d)];
      MOLT_RETURN_IF_ERROR(data_.checkUnchanged(size_t(shard)));
      data_.readRows(size_t(shard), row, take, xs, ys);
      // Compact away rows with a NaN or Inf, in place — also rows that overflow once
      // normalised (a huge row outside the normalisation prefix): the stream serves finite
      // rows only, which the trainer vouches for to the executor.
      int64_t kept = 0;
      for (int64_t i = 0; i < take; ++i) {
        const float *xi = xs + i * d, *yi = ys + i * d;
        if (!finiteRow(xi, d, norm_.x_scale) || !finiteRow(yi, d, norm_.y_scale)) {
          ++skipped_;
          continue;
        }
        if (kept != i) {
          std::copy(xi, xi + d, xs + kept * d);
          std::copy(yi, yi + d, ys + kept * d);
        }
        ++kept;
      }
      n += kept;
      row += take;
    }
    if (row >= data_.shardRows(size_t(shard))) {
      ++shard;
      row = 0;
    }
  }
  windowSize_ = n;
  nextShard_ = shard;
  nextRow_ = row;
  if (shuffle_) {
    // Fisher-Yates with our own bounded draw, so the order is the same on every platform.
    uint64_t state = mix(seed_ ^ mix(uint64_t(cursor_.epoch) * 0x100000001b3ull +
                                     uint64_t(cursor_.window)));
    for (int64_t i = n - 1; i > 0; --i) {
      state = mix(state);
      int64_t j = int64_t(state % uint64_t(i + 1));
      if (j != i) {
        std::swap_ranges(&wx_[size_t(i * d)], &wx_[size_t(i * d + d)], &wx_[size_t(j * d)]);
        std::swap_ranges(&wy_[size_t(i * d)], &wy_[size_t(i * d + d)], &wy_[size_t(j * d)]);
      }
    }
  }
  filled_ = true;
  return Status::ok();
}

StatusOr<int64_t> BatchStream::next(int64_t batch, float *x, float *y) {
  int64_t d = data_.d(), got = 0;
  while (got < batch && !exhausted_) {
    if (!filled_)
      MOLT_RETURN_IF_ERROR(fill());
    int64_t take = std::max<int64_t>(0, std::min(batch - got, windowSize_ - cursor_.served));
    const float *wx = &wx_[size_t(cursor_.served * d)], *wy = &wy_[size_t(cursor_.served * d)];
    if (x && y)
      for (int64_t i = 0; i < take * d; ++i) {
        x[got * d + i] = wx[i] * norm_.x_scale;
        y[got * d + i] = wy[i] * norm_.y_scale;
      }
    got += take;
    cursor_.served += take;
    rowsSinceWrap_ += take;
    if (cursor_.served < windowSize_)
      break;
    // The window is used up: move the cursor to the next one now, so a checkpoint taken
    // here resumes with a fresh fill.
    cursor_.served = 0;
    filled_ = false;
    if (size_t(nextShard_) < data_.numShards()) {
      ++cursor_.window;
      cursor_.shard = nextShard_;
      cursor_.row = nextRow_;
    } else if (!wrap_) {
      exhausted_ = true;
    } else {
      if (fullEpoch_ && rowsSinceWrap_ == 0)
        return invalidArgument("the data set has no finite rows (every row has a NaN or Inf)");
      fullEpoch_ = true;
      rowsSinceWrap_ = 0;
      ++cursor_.epoch;
      cursor_.window = 0;
      cursor_.shard = 0;
      cursor_.row = 0;
    }
  }
  return got;
}

} // namespace molt
