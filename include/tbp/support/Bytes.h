#pragma once
/// \file
/// Checked 64-bit byte arithmetic, byte-size and budget parsing, human-readable formatting.

#include "tbp/support/Status.h"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tbp {

/// a + b, or nullopt when it overflows 64 bits.
std::optional<uint64_t> checkedAdd(uint64_t a, uint64_t b);
/// a * b, or nullopt when it overflows 64 bits.
std::optional<uint64_t> checkedMul(uint64_t a, uint64_t b);
/// a + b, saturating at 2^64-1 (for totals that only need to stay ordered).
inline uint64_t saturatingAdd(uint64_t a, uint64_t b) { return checkedAdd(a, b).value_or(UINT64_MAX); }
/// a * b, saturating at 2^64-1.
inline uint64_t saturatingMul(uint64_t a, uint64_t b) { return checkedMul(a, b).value_or(UINT64_MAX); }

/// Parses a byte size: plain bytes (`1048576`), decimal units (`4GB` = 4·10^9, `512MB`,
/// `10kB`/`10KB`) or binary units (`4GiB` = 4·2^30, `750MiB`, `8KiB`). Fractions are allowed
/// with a unit (`1.5GB`). Case-insensitive units; surrounding blanks are ignored.
Expected<uint64_t> parseByteSize(std::string_view text);

/// A memory budget as given on the command line (DESIGN.md §5): absolute bytes or a
/// percentage of the store-all peak.
struct Budget {
  bool isFraction = false; ///< true for `60%`
  double fraction = 0.0;   ///< 0.6 for `60%`
  uint64_t bytes = 0;      ///< absolute budget when !isFraction

  /// The budget in bytes, given the store-all peak that a percentage refers to.
  uint64_t resolve(uint64_t storeAllPeak) const;
};

/// Parses `4GB`, `4GiB`, `512MB`, `750MiB`, plain bytes or `60%`. Any positive percentage is
/// accepted; above 100% simply leaves headroom over the store-all peak.
Expected<Budget> parseBudget(std::string_view text);

/// Formats a byte count for people: `0 B`, `512 B`, `1.50 KiB`, `3.20 MiB`, `1.07 GiB`.
std::string formatBytes(uint64_t bytes);

/// Formats a count with thousands separators: 1234567 -> `1,234,567`.
std::string formatCount(uint64_t n);

/// Formats a double with a fixed number of decimals, independent of the locale.
std::string formatFixed(double value, int decimals);

} // namespace tbp
