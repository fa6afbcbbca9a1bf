#include "tbp/support/FileIO.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace tbp {

namespace fs = std::filesystem;

Expected<std::string> readFile(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return badInput(path + ": no such file");
  if (fs::is_directory(path, ec)) return badInput(path + ": is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) return badInput(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return badInput(path + ": read error");
  return buffer.str();
}

Status writeFileAtomic(const std::string& path, std::string_view contents) {
  fs::path target(path);
  fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return usageError(path + ": cannot write: folder '" + dir.string() + "' does not exist");
  std::string tmp = (dir / ("." + target.filename().string() + ".tmp." +
                            std::to_string(static_cast<long>(::getpid()))))
                        .string();
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return internalError(path + ": cannot write: " + std::strerror(errno));
    out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
    out.flush();
    if (!out) {
      out.close();
      fs::remove(tmp, ec);
      return internalError(path + ": write failed");
    }
  }
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return internalError(path + ": cannot rename temporary file into place");
  }
  return Status::ok();
}

} // namespace tbp
