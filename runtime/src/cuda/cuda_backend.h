// The CUDA backend: NVRTC-compiled kernels of a plan on one GPU (libcuda and libnvrtc via dlopen).
#pragma once

#include <memory>

#include "molt/backend.h"

namespace molt {

/// Unavailable, with a one-line reason, where there is no driver, no NVRTC or no device.
/// $MOLT_CUDA_DEVICE picks the device (default 0).
StatusOr<std::unique_ptr<Backend>> createCudaBackend();

} // namespace molt
