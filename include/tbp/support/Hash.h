#pragma once
/// \file
/// A stable 64-bit FNV-1a hasher for fingerprints: same input, same hash, on every platform.

#include <cstdint>
#include <string>
#include <string_view>

namespace tbp {

/// Incremental FNV-1a (64-bit). Field boundaries are marked so that ("ab","c") != ("a","bc").
class Hasher {
public:
  /// Adds raw bytes.
  Hasher& addBytes(const void* data, size_t size);
  /// Adds a string and a boundary marker.
  Hasher& add(std::string_view text);
  /// Adds an integer (little-endian, 8 bytes) and a boundary marker.
  Hasher& add(int64_t value);
  /// The current hash.
  uint64_t digest() const { return state_; }
  /// The current hash as 16 lower-case hex digits.
  std::string hexDigest() const;

private:
  uint64_t state_ = 1469598103934665603ULL;
};

} // namespace tbp
