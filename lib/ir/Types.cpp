#include "tbp/ir/Types.h"

#include "tbp/support/Bytes.h"

#include <cmath>
#include <cstring>

namespace tbp::ir {

namespace {
struct DTypeInfo {
  const char* name;
  uint64_t size;
  bool isFloat;
};
constexpr DTypeInfo kDTypes[] = {
#define TBP_DTYPE_INFO(id, name, size, isFloat) {name, size, isFloat},
    TBP_DTYPES(TBP_DTYPE_INFO)
#undef TBP_DTYPE_INFO
};
} // namespace

const char* dtypeName(DType dtype) { return kDTypes[static_cast<int>(dtype)].name; }
uint64_t dtypeSize(DType dtype) { return kDTypes[static_cast<int>(dtype)].size; }
bool isFloat(DType dtype) { return kDTypes[static_cast<int>(dtype)].isFloat; }

bool parseDType(std::string_view name, DType& out) {
  for (size_t i = 0; i < std::size(kDTypes); ++i) {
    if (name == kDTypes[i].name) {
      out = static_cast<DType>(i);
      return true;
    }
  }
  return false;
}

std::string formatShape(const Shape& shape) {
  std::string out = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ",";
    out += std::to_string(shape[i]);
  }
  return out + "]";
}

std::string TensorType::str() const { return std::string(dtypeName(dtype)) + formatShape(shape); }

Expected<uint64_t> checkedNumElements(const Shape& shape, const std::string& what) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0)
      return badInput(what + ": negative dimension " + std::to_string(d) + " in shape " +
                      formatShape(shape));
    std::optional<uint64_t> next = checkedMul(n, static_cast<uint64_t>(d));
    if (!next)
      return badInput(what + ": shape " + formatShape(shape) + " has more elements than 64 bits hold");
    n = *next;
  }
  return n;
}

Expected<uint64_t> checkedByteSize(const TensorType& type, const std::string& what) {
  Expected<uint64_t> n = checkedNumElements(type.shape, what);
  if (!n) return n.status();
  std::optional<uint64_t> bytes = checkedMul(*n, dtypeSize(type.dtype));
  if (!bytes)
    return badInput(what + ": size of " + type.str() + " in bytes overflows 64 bits");
  return *bytes;
}

namespace {

/// Element `i` of raw little-endian data of `dtype` converted to `To` (f16/bf16 excluded).
template <typename To>
To elementAs(DType dtype, const std::string& data, size_t i) {
  auto read = [&](auto tag) {
    using T = decltype(tag);
    T v;
    std::memcpy(&v, data.data() + i * sizeof(T), sizeof(T));
    return static_cast<To>(v);
  };
  switch (dtype) {
  case DType::F32: return read(float{});
  case DType::F64: return read(double{});
  case DType::I8: return read(int8_t{});
  case DType::I16: return read(int16_t{});
  case DType::I32: return read(int32_t{});
  case DType::I64: return read(int64_t{});
  case DType::U8:
  case DType::Bool: return read(uint8_t{});
  case DType::U16: return read(uint16_t{});
  case DType::U32: return read(uint32_t{});
  case DType::U64: return read(uint64_t{});
  case DType::F16:
  case DType::BF16: break;
  }
  return To{};
}

} // namespace

double elementAsDouble(DType dtype, const std::string& data, size_t i) {
  if (dtype == DType::F16 || dtype == DType::BF16) return std::nan("");
  return elementAs<double>(dtype, data, i);
}

int64_t elementAsInt(DType dtype, const std::string& data, size_t i) { return elementAs<int64_t>(dtype, data, i); }

} // namespace tbp::ir
