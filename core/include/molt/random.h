// Platform-independent random draws: std::mt19937_64 is fully specified by the standard, but
// std::normal_distribution is not, so normals are our own Box–Muller on 53-bit uniforms.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>

namespace molt {

/// splitmix64 (Steele, Lea and Flood's SplitMix finaliser on a Weyl sequence): a tiny stream
/// whose whole state is one word, so a stream can be started from (seed, index) without saving
/// any state. Not for anything that needs more than 2^64 draws.
struct SplitMix64 {
  uint64_t state = 0;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

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
