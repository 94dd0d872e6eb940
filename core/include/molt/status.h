// Errors as values: the runtime's public API never throws.
#pragma once

#include <optional>
#include <string>
#include <utility>

namespace molt {

enum class Code {
  Ok = 0,
  InvalidArgument, // bad user input: a file, a flag, a shape
  NotFound,        // a missing file or name
  DataLoss,        // truncated or corrupt data
  Unavailable,     // a backend that this machine lacks (no GPU, no NVRTC)
  Internal,        // a bug in molt
  Io,              // the OS refused a read or write
  Cancelled,       // stopped on request (SIGTERM / SIGINT, molt::requestStop()); state was saved
};

class [[nodiscard]] Status {
public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status ok() { return Status(); }

  bool isOk() const { return code_ == Code::Ok; }
  explicit operator bool() const { return isOk(); }
  Code code() const { return code_; }
  const std::string &message() const { return message_; }

  /// Prefixes the message with context ("reading x.safetensors: ...").
  Status withContext(const std::string &context) const {
    if (isOk())
      return *this;
    return Status(code_, context + ": " + message_);
  }

private:
  Code code_ = Code::Ok;
  std::string message_;
};

template <typename T> class [[nodiscard]] StatusOr {
public:
  StatusOr(T value) : value_(std::move(value)) {}
  StatusOr(Status status) : status_(std::move(status)) {}

  bool isOk() const { return status_.isOk(); }
  explicit operator bool() const { return isOk(); }
  const Status &status() const { return status_; }
  T &value() { return *value_; }
  const T &value() const { return *value_; }
  T &operator*() { return *value_; }
  const T &operator*() const { return *value_; }
  T *operator->() { return &*value_; }
  const T *operator->() const { return &*value_; }

private:
  Status status_;
  std::optional<T> value_;
};

inline Status invalidArgument(std::string m) { return Status(Code::InvalidArgument, std::move(m)); }
inline Status notFound(std::string m) { return Status(Code::NotFound, std::move(m)); }
inline Status dataLoss(std::string m) { return Status(Code::DataLoss, std::move(m)); }
inline Status unavailable(std::string m) { return Status(Code::Unavailable, std::move(m)); }
inline Status internalError(std::string m) { return Status(Code::Internal, std::move(m)); }
inline Status ioError(std::string m) { return Status(Code::Io, std::move(m)); }
inline Status cancelled(std::string m) { return Status(Code::Cancelled, std::move(m)); }

} // namespace molt

#define MOLT_RETURN_IF_ERROR(expr)                                                                 \
  do {                                                                                             \
    ::molt::Status molt_status_ = (expr);                                                          \
    if (!molt_status_.isOk())                                                                      \
      return molt_status_;                                                                         \
  } while (0)
