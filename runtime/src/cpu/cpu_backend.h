// The CPU backend: runs a plan's kernels with the C++ kernels of kernels/cpu (the oracle).
#pragma once

#include <memory>

#include "molt/backend.h"

namespace molt {

std::unique_ptr<Backend> createCpuBackend();

} // namespace molt
