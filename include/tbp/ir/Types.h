#pragma once
/// \file
/// Element types and tensor types of the IR.

#include "tbp/support/Status.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tbp::ir {

/// Element types tbp knows. The list is declared once; names are the text-format spellings.
#define TBP_DTYPES(X)                                                                              \
  X(F32, "f32", 4, true)                                                                           \
  X(F16, "f16", 2, true)                                                                           \
  X(BF16, "bf16", 2, true)                                                                         \
  X(F64, "f64", 8, true)                                                                           \
  X(I8, "i8", 1, false)                                                                            \
  X(I16, "i16", 2, false)                                                                          \
  X(I32, "i32", 4, false)                                                                          \
  X(I64, "i64", 8, false)                                                                          \
  X(U8, "u8", 1, false)                                                                            \
  X(U16, "u16", 2, false)                                                                          \
  X(U32, "u32", 4, false)                                                                          \
  X(U64, "u64", 8, false)                                                                          \
  X(Bool, "bool", 1, false)

/// An element type.
enum class DType : uint8_t {
#define TBP_DTYPE_ENUM(id, name, size, isFloat) id,
  TBP_DTYPES(TBP_DTYPE_ENUM)
#undef TBP_DTYPE_ENUM
};

/// The text-format name of a dtype (`f32`).
const char* dtypeName(DType dtype);
/// The size of one element in bytes.
uint64_t dtypeSize(DType dtype);
/// True for floating-point types (the only ones that carry gradients).
bool isFloat(DType dtype);
/// Parses a text-format dtype name; false when unknown.
bool parseDType(std::string_view name, DType& out);
/// Element `i` of raw little-endian tensor data of `dtype`, as a double (NaN for f16/bf16).
double elementAsDouble(DType dtype, const std::string& data, size_t i);
/// Element `i` of raw little-endian tensor data of an integer `dtype`, exactly (no detour
/// through double; u64 above 2^63 wraps).
int64_t elementAsInt(DType dtype, const std::string& data, size_t i);

/// A concrete shape: every dimension is a known non-negative size.
using Shape = std::vector<int64_t>;

/// Formats `[2,3,4]`.
std::string formatShape(const Shape& shape);

/// A dtype and a shape.
struct TensorType {
  DType dtype = DType::F32; ///< element type
  Shape shape;              ///< concrete dimensions (rank 0 = scalar)

  /// Formats `f32[2,3]`.
  std::string str() const;
  bool operator==(const TensorType& other) const {
    return dtype == other.dtype && shape == other.shape;
  }
  bool operator!=(const TensorType& other) const { return !(*this == other); }
};

/// Number of elements, or a BadInput error when a dimension is negative or the product
/// overflows 64 bits. `what` names the tensor in the message.
Expected<uint64_t> checkedNumElements(const Shape& shape, const std::string& what);
/// Byte size (elements × dtype size) with the same checks.
Expected<uint64_t> checkedByteSize(const TensorType& type, const std::string& what);

} // namespace tbp::ir
