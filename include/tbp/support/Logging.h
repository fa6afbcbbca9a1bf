#pragma once
/// \file
/// Logging setup: tbp logs through spdlog to stderr; `-v` raises and `-q` lowers the level.

namespace tbp {

/// Configures the default spdlog logger. verbosity: -1 quiet (errors only), 0 warnings,
/// 1 info (`-v`), 2 or more debug (`-vv`).
void setupLogging(int verbosity);

} // namespace tbp
