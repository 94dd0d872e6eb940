// Whole-file reads and atomic writes (temp file, fsync, rename, fsync of the directory).
#include "molt/io.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace fs = std::filesystem;

namespace molt {
namespace {

Status errnoStatus(const std::string &what, const std::string &path) {
  return ioError(what + " " + path + ": " + std::strerror(errno));
}

Status writeAll(int fd, const char *data, size_t size, const std::string &path) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return errnoStatus("cannot write", path);
    }
    data += n;
    size -= size_t(n);
  }
  return Status::ok();
}

} // namespace

StatusOr<std::string> readFile(const std::string &path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    return notFound("no such file: " + path);
  if (fs::is_directory(path, ec))
    return invalidArgument("is a directory, not a file: " + path);
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return errnoStatus("cannot open", path);
  std::ostringstream buf;
  buf << in.rdbuf();
  if (in.bad())
    return errnoStatus("cannot read", path);
  return buf.str();
}

Status writeFileAtomic(const std::string &path, const std::string &bytes) {
  fs::path target(path);
  fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  std::string tmp = (dir / (target.filename().string() + ".tmp-" + std::to_string(::getpid())))
                        .string();
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return errnoStatus("cannot create", tmp);
  Status st = writeAll(fd, bytes.data(), bytes.size(), tmp);
  // The data must be on disk before the rename makes it visible, or a crash could leave a
  // renamed but empty file in place of the old one.
  if (st.isOk() && ::fsync(fd) != 0)
    st = errnoStatus("cannot fsync", tmp);
  if (::close(fd) != 0 && st.isOk())
    st = errnoStatus("cannot close", tmp);
  if (st.isOk() && ::rename(tmp.c_str(), path.c_str()) != 0)
    st = errnoStatus("cannot rename onto", path);
  if (!st.isOk()) {
    ::unlink(tmp.c_str());
    return st;
  }
  // The rename itself lives in the directory: sync it so the new name survives a crash.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return Status::ok();
}

Status makeDirs(const std::string &dir) {
  std::error_code ec;
  if (fs::is_directory(dir, ec))
    return Status::ok();
  fs::create_directories(dir, ec);
  if (ec)
    return ioError("cannot create directory " + dir + ": " + ec.message());
  return Status::ok();
}

bool pathExists(const std::string &path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

bool isDirectory(const std::string &path) {
  std::error_code ec;
  return fs::is_directory(path, ec);
}

Status copyTree(const std::string &from, const std::string &to) {
  if (!isDirectory(from)) {
    StatusOr<std::string> bytes = readFile(from);
    if (!bytes)
      return bytes.status();
    return writeFileAtomic(to, *bytes);
  }
  MOLT_RETURN_IF_ERROR(makeDirs(to));
  std::error_code ec;
  for (const fs::directory_entry &e : fs::directory_iterator(from, ec)) {
    std::string name = e.path().filename().string();
    MOLT_RETURN_IF_ERROR(copyTree(e.path().string(), (fs::path(to) / name).string()));
  }
  if (ec)
    return ioError("cannot list " + from + ": " + ec.message());
  return Status::ok();
}

} // namespace molt
