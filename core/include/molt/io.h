// Whole-file reads and crash-safe writes: every file molt writes (manifests, checkpoints,
// metrics rewrites) goes through writeFileAtomic so a crash leaves the old file or the new one.
#pragma once

#include <string>

#include "molt/status.h"

namespace molt {

/// Reads a whole file; NotFound when it does not exist, Io when it cannot be read.
StatusOr<std::string> readFile(const std::string &path);

/// Writes `bytes` to PATH.tmp-<pid> in PATH's directory, fsyncs it, renames it over PATH and
/// fsyncs the directory. On failure PATH is untouched and the temp file is removed.
Status writeFileAtomic(const std::string &path, const std::string &bytes);

/// Creates DIR and its parents (no error when it exists as a directory).
Status makeDirs(const std::string &dir);

bool pathExists(const std::string &path);
bool isDirectory(const std::string &path);

/// Copies a regular file atomically (via writeFileAtomic), or a directory tree of regular files.
Status copyTree(const std::string &from, const std::string &to);

} // namespace molt
