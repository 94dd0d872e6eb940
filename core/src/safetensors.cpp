// The safetensors reader (mmap + validation of every header field) and writer.
#include "molt/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "molt/io.h"

namespace molt {

using json = nlohmann::json;

namespace {

// A header larger than this is not a tensor index but a corrupt length field.
constexpr uint64_t kMaxHeader = 100u << 20;

float halfToFloat(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000 | (mant << 13); // Inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: renormalise into a normal float.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while (!(mant & 0x400));
    bits = sign | uint32_t(112 - e) << 23 | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

float bf16ToFloat(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

} // namespace

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t s : shape)
    n *= s;
  return n;
}

size_t dtypeSize(const std::string &dtype) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"I64", 8}, {"U64", 8},     {"F64", 8}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

bool isFloatDtype(const std::string &dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16";
}

void toF32(const TensorView &t, int64_t first, int64_t count, float *out) {
  if (t.dtype == "F32") {
    std::memcpy(out, t.data + first * 4, size_t(count) * 4);
    return;
  }
  const uint8_t *p = t.data + first * 2;
  bool bf = t.dtype == "BF16";
  for (int64_t i = 0; i < count; ++i) {
    uint16_t h = uint16_t(p[2 * i] | (p[2 * i + 1] << 8));
    out[i] = bf ? bf16ToFloat(h) : halfToFloat(h);
  }
}

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::open(const std::string &path) {
  if (!pathExists(path))
    return notFound("no such file: " + path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return ioError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return invalidArgument(path + ": not a regular file");
  }
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->mapSize_ = size_t(st.st_size);
  if (f->mapSize_ < 8) {
    ::close(fd);
    return dataLoss(path + ": truncated (" + std::to_string(f->mapSize_) +
                    " bytes, no header length)");
  }
  void *m = ::mmap(nullptr, f->mapSize_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (m == MAP_FAILED)
    return ioError("cannot map " + path + ": " + std::strerror(errno));
  f->map_ = m;
  const uint8_t *base = static_cast<const uint8_t *>(m);

  uint64_t n = 0;
  for (int i = 7; i >= 0; --i)
    n = (n << 8) | base[i];
  if (n > kMaxHeader || n > f->mapSize_ - 8)
    return dataLoss(path + ": header length " + std::to_string(n) + " exceeds the file (" +
                    std::to_string(f->mapSize_) + " bytes); truncated or not safetensors");
  json header = json::parse(base + 8, base + 8 + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object())
    return dataLoss(path + ": header is not a JSON object");

  const uint8_t *data = base + 8 + n;
  uint64_t dataSize = f->mapSize_ - 8 - n;
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string &name = it.key();
    const json &v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object())
        return dataLoss(path + ": __metadata__ is not an object");
      for (auto m2 = v.begin(); m2 != v.end(); ++m2) {
        if (!m2.value().is_string())
          return dataLoss(path + ": __metadata__." + m2.key() + " is not a string");
        f->metadata_[m2.key()] = m2.value().get<std::string>();
      }
      continue;
    }
    std::string where = path + ": tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets"))
      return dataLoss(where + " lacks dtype, shape or data_offsets");
    TensorView t;
    t.name = name;
    if (!v["dtype"].is_string() || dtypeSize(v["dtype"].get<std::string>()) == 0)
      return invalidArgument(where + " has unknown dtype " + v["dtype"].dump());
    t.dtype = v["dtype"].get<std::string>();
    const json &shape = v["shape"];
    if (!shape.is_array())
      return dataLoss(where + ": shape is not an array");
    uint64_t numel = 1;
    for (const json &s : shape) {
      if (!s.is_number_unsigned() || s.get<uint64_t>() > (uint64_t(1) << 40))
        return dataLoss(where + ": bad dimension " + s.dump());
      t.shape.push_back(s.get<int64_t>());
      numel *= s.get<uint64_t>();
      if (numel > (uint64_t(1) << 42))
        return dataLoss(where + ": implausibly large");
    }
    const json &off = v["data_offsets"];
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() ||
        !off[1].is_number_unsigned())
      return dataLoss(where + ": data_offsets is not two non-negative integers");
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end || end > dataSize)
      return dataLoss(where + ": data_offsets [" + std::to_string(begin) + ", " +
                      std::to_string(end) + "] outside the " + std::to_string(dataSize) +
                      " data bytes (truncated?)");
    if (end - begin != numel * dtypeSize(t.dtype))
      return dataLoss(where + ": " + std::to_string(end - begin) + " bytes for shape " +
                      shape.dump() + " of " + t.dtype);
    t.data = data + begin;
    t.bytes = size_t(end - begin);
    spans.push_back({begin, end});
    f->tensors_.push_back(std::move(t));
  }
  // Overlapping tensors or unexplained bytes mean a corrupt or hand-patched file.
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 0;
  for (const auto &[b, e] : spans) {
    if (b != pos)
      return dataLoss(path + (b < pos ? ": tensors overlap" : ": gap between tensors"));
    pos = e;
  }
  if (pos != dataSize)
    return dataLoss(path + ": " + std::to_string(dataSize - pos) +
                    " trailing bytes after the last tensor");
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_)
    ::munmap(map_, mapSize_);
}

const TensorView *SafetensorsFile::find(const std::string &name) const {
  for (const TensorView &t : tensors_)
    if (t.name == name)
      return &t;
  return nullptr;
}

StatusOr<std::vector<float>> SafetensorsFile::readF32(const std::string &name,
                                                     const std::vector<int64_t> &shape) const {
  const TensorView *t = find(name);
  if (!t)
    return notFound(path_ + ": no tensor '" + name + "'");
  if (!isFloatDtype(t->dtype))
    return invalidArgument(path_ + ": tensor '" + name + "' has dtype " + t->dtype +
                           " (expected F32, F16 or BF16)");
  if (t->shape != shape)
    return invalidArgument(path_ + ": tensor '" + name + "' has shape " +
                           json(t->shape).dump() + ", expected " + json(shape).dump());
  std::vector<float> out(size_t(t->numel()));
  toF32(*t, 0, t->numel(), out.data());
  return out;
}

TensorData f32Tensor(const std::string &name, const std::vector<int64_t> &shape,
                     const std::vector<float> &values) {
  return {name, "F32", shape,
          std::string(reinterpret_cast<const char *>(values.data()), values.size() * 4)};
}

TensorData i64Tensor(const std::string &name, const std::vector<int64_t> &shape,
                     const std::vector<int64_t> &values) {
  return {name, "I64", shape,
          std::string(reinterpret_cast<const char *>(values.data()), values.size() * 8)};
}

std::string serializeSafetensors(const std::vector<TensorData> &tensors,
                                 const std::map<std::string, std::string> &metadata) {
  json header = json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorData &t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  // Pad with spaces so the data starts 8-byte aligned (the format allows trailing blanks).
  while ((text.size() + 8) % 8)
    text += ' ';
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i)
    out[size_t(i)] = char((uint64_t(text.size()) >> (8 * i)) & 0xff);
  out += text;
  for (const TensorData &t : tensors)
    out += t.bytes;
  return out;
}

Status writeSafetensors(const std::string &path, const std::vector<TensorData> &tensors,
                        const std::map<std::string, std::string> &metadata) {
  return writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

} // namespace molt
