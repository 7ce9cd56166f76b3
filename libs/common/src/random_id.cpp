#include "muon/common/random_id.h"

#include <cstdint>
#include <random>

namespace muon {

std::string RandomHex(size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  thread_local std::mt19937_64 rng = [] {
    std::random_device device;
    std::seed_seq seed{device(), device(), device(), device()};
    return std::mt19937_64(seed);
  }();
  std::string hex(bytes * 2, '0');
  for (size_t i = 0; i < bytes; i += 8) {
    uint64_t word = rng();
    for (size_t j = 0; j < 8 && i + j < bytes; ++j, word >>= 8) {
      hex[2 * (i + j)] = kHex[(word >> 4) & 0xf];
      hex[2 * (i + j) + 1] = kHex[word & 0xf];
    }
  }
  return hex;
}

}  // namespace muon
