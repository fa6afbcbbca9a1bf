#pragma once
/// \file
/// The `tbp` command line: subcommands as a table, each a function that can be tested without
/// spawning a process.

#include <iosfwd>
#include <string>
#include <vector>

namespace tbp::driver {

/// Runs `tbp` with `args` (args[0] is the program name). Normal output goes to `out`, messages
/// to `err`. Returns the exit code of DESIGN.md §7.
int run(const std::vector<std::string>& args, std::ostream& out, std::ostream& err);

/// Entry point for tools/tbp/main.cpp.
int main(int argc, char** argv);

} // namespace tbp::driver
