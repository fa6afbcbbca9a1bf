#pragma once
/// \file
/// Whole-file reads and atomic whole-file writes (DESIGN.md §7: a failed run leaves no
/// half-written output behind).

#include "tbp/support/Status.h"

#include <string>
#include <string_view>

namespace tbp {

/// Reads a whole file. Errors (BadInput) name the path: `model.onnx: no such file`.
Expected<std::string> readFile(const std::string& path);

/// Writes `contents` to `path` through a temporary file in the same folder and a rename, so
/// readers never see a partial file. On failure nothing is left behind (code Internal for I/O,
/// Usage when the folder does not exist).
Status writeFileAtomic(const std::string& path, std::string_view contents);

} // namespace tbp
