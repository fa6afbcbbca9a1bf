#include "tbp/support/Bytes.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <limits>

namespace tbp {

std::optional<uint64_t> checkedAdd(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

std::optional<uint64_t> checkedMul(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

struct Unit {
  const char* name;
  double factor;
};

// Longest names first is not needed: units are matched exactly after splitting the number off.
constexpr Unit kUnits[] = {
    {"", 1.0},         {"b", 1.0},         {"kb", 1e3},        {"mb", 1e6},
    {"gb", 1e9},       {"tb", 1e12},       {"kib", 1024.0},    {"mib", 1048576.0},
    {"gib", 1073741824.0}, {"tib", 1099511627776.0},
};

/// Splits `12.5GiB` into the number and the unit; returns false when there is no number.
bool splitNumber(std::string_view s, double& number, std::string& unit) {
  size_t i = 0;
  while (i < s.size() && (std::isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) return false;
  std::string numberText(s.substr(0, i));
  if (numberText.find('.') != numberText.rfind('.')) return false;
  char* end = nullptr;
  number = std::strtod(numberText.c_str(), &end);
  if (end != numberText.c_str() + numberText.size()) return false;
  unit = lower(trim(s.substr(i)));
  return true;
}

} // namespace

Expected<uint64_t> parseByteSize(std::string_view text) {
  std::string_view s = trim(text);
  double number = 0;
  std::string unit;
  if (!splitNumber(s, number, unit))
    return usageError("invalid byte size '" + std::string(text) +
                      "': expected a number with an optional unit such as 512MB or 4GiB");
  for (const Unit& u : kUnits) {
    if (unit != u.name) continue;
    if (u.factor == 1.0 && std::floor(number) != number)
      return usageError("invalid byte size '" + std::string(text) +
                        "': a plain byte count must be a whole number");
    double bytes = std::round(number * u.factor);
    if (bytes >= 18446744073709551615.0)
      return usageError("byte size '" + std::string(text) + "' does not fit in 64 bits");
    return static_cast<uint64_t>(bytes);
  }
  return usageError("invalid byte size '" + std::string(text) + "': unknown unit '" + unit +
                    "' (use B, kB, MB, GB, TB, KiB, MiB, GiB, TiB or a percentage)");
}

uint64_t Budget::resolve(uint64_t storeAllPeak) const {
  if (!isFraction) return bytes;
  return static_cast<uint64_t>(std::floor(static_cast<double>(storeAllPeak) * fraction));
}

Expected<Budget> parseBudget(std::string_view text) {
  std::string_view s = trim(text);
  Budget budget;
  if (!s.empty() && s.back() == '%') {
    double number = 0;
    std::string unit;
    if (!splitNumber(s.substr(0, s.size() - 1), number, unit) || !unit.empty() || number <= 0)
      return usageError("invalid budget '" + std::string(text) +
                        "': a percentage must be a positive number such as 60%");
    budget.isFraction = true;
    budget.fraction = number / 100.0;
    return budget;
  }
  Expected<uint64_t> bytes = parseByteSize(s);
  if (!bytes) return Status(ErrorCode::Usage, "invalid budget: " + bytes.status().message());
  if (*bytes == 0) return usageError("invalid budget '" + std::string(text) + "': must be positive");
  budget.bytes = *bytes;
  return budget;
}

std::string formatFixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string formatBytes(uint64_t bytes) {
  static const char* const kNames[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + " B";
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024.0 && unit < 6) {
    v /= 1024.0;
    ++unit;
  }
  return formatFixed(v, 2) + " " + kNames[unit];
}

std::string formatCount(uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  int count = 0;
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) {
    if (count > 0 && count % 3 == 0) out.push_back(',');
    out.push_back(*it);
    ++count;
  }
  return std::string(out.rbegin(), out.rend());
}

} // namespace tbp
