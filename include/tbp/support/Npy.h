#pragma once
/// \file
/// NumPy `.npy` files (format version 1.0/2.0, C order, little-endian): read and write.

#include "tbp/support/Status.h"

#include <cstdint>
#include <string>
#include <vector>

namespace tbp {

/// A host array as `.npy` stores it.
struct NpyArray {
  std::string descr;          ///< numpy dtype string, e.g. `<f4`, `<i8`, `|b1`
  std::vector<int64_t> shape; ///< dimensions
  std::string data;           ///< raw little-endian elements, C order
};

/// Reads a `.npy` file. BadInput naming the file and what is wrong (not npy, Fortran order,
/// big-endian, size mismatch).
Expected<NpyArray> readNpy(const std::string& path);

/// Serializes an array as a version 1.0 `.npy` document.
std::string encodeNpy(const NpyArray& array);

} // namespace tbp
