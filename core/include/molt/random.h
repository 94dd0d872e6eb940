// Platform-independent random draws: std::mt19937_64 is fully specified by the standard, but
// std::normal_distribution is not, so normals are our own Box–Muller on 53-bit uniforms.
#pragma once

#include <cmath>
#include <random>

namespace molt {

/// A uniform double in (0, 1): never 0, so log() of it is finite.
inline double uniform01(std::mt19937_64 &rng) {
  return (double(rng() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/// Standard normal draws, two per Box–Muller transform.
class NormalSampler {
public:
  explicit NormalSampler(std::mt19937_64 &rng) : rng_(rng) {}
  double operator()() {
    if (haveSpare_) {
      haveSpare_ = false;
      return spare_;
    }
    double r = std::sqrt(-2.0 * std::log(uniform01(rng_)));
    double a = 6.283185307179586476925 * uniform01(rng_);
    spare_ = r * std::sin(a);
    haveSpare_ = true;
    return r * std::cos(a);
  }

private:
  std::mt19937_64 &rng_;
  double spare_ = 0;
  bool haveSpare_ = false;
};

} // namespace molt
