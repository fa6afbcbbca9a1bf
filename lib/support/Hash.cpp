#include "tbp/support/Hash.h"

#include <cstdio>

namespace tbp {

Hasher& Hasher::addBytes(const void* data, size_t size) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    state_ ^= p[i];
    state_ *= 1099511628211ULL;
  }
  return *this;
}

Hasher& Hasher::add(std::string_view text) {
  addBytes(text.data(), text.size());
  const unsigned char marker = 0xff;
  return addBytes(&marker, 1);
}

Hasher& Hasher::add(int64_t value) {
  unsigned char bytes[9];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>((static_cast<uint64_t>(value) >> (8 * i)) & 0xff);
  bytes[8] = 0xfe;
  return addBytes(bytes, sizeof bytes);
}

std::string Hasher::hexDigest() const {
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(state_));
  return buffer;
}

} // namespace tbp
