#include "tbp/support/Npy.h"

#include "tbp/support/FileIO.h"

#include <cstring>
#include <regex>

namespace tbp {

namespace {

size_t itemSize(const std::string& descr) {
  if (descr.size() < 3) return 0;
  return static_cast<size_t>(std::atoi(descr.c_str() + 2));
}

} // namespace

Expected<NpyArray> readNpy(const std::string& path) {
  Expected<std::string> bytes = readFile(path);
  if (!bytes) return bytes.status();
  const std::string& b = *bytes;
  auto bad = [&](const std::string& what) { return badInput(path + ": " + what); };
  if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0) return bad("not a .npy file (no \\x93NUMPY magic)");
  const int major = static_cast<unsigned char>(b[6]);
  size_t headerLen = 0, offset = 0;
  if (major == 1) {
    headerLen = static_cast<unsigned char>(b[8]) | (static_cast<size_t>(static_cast<unsigned char>(b[9])) << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (b.size() < 12) return bad("truncated header");
    for (int i = 0; i < 4; ++i) headerLen |= static_cast<size_t>(static_cast<unsigned char>(b[8 + i])) << (8 * i);
    offset = 12;
  } else {
    return bad(".npy format version " + std::to_string(major) + " is not supported");
  }
  if (offset + headerLen > b.size()) return bad("truncated header");
  const std::string header = b.substr(offset, headerLen);
  std::smatch m;
  NpyArray a;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'"))) return bad("header has no 'descr'");
  a.descr = m[1];
  if (std::regex_search(header, m, std::regex("'fortran_order':\\s*True"))) return bad("Fortran-order arrays are not supported");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) return bad("header has no 'shape'");
  std::string dims = m[1];
  std::regex number("\\d+");
  for (auto it = std::sregex_iterator(dims.begin(), dims.end(), number); it != std::sregex_iterator(); ++it)
    a.shape.push_back(std::stoll(it->str()));
  if (a.descr[0] == '>') return bad("big-endian data ('" + a.descr + "') is not supported");
  size_t count = 1;
  for (int64_t d : a.shape) count *= static_cast<size_t>(d);
  size_t item = itemSize(a.descr);
  if (item == 0) return bad("unsupported dtype '" + a.descr + "'");
  a.data = b.substr(offset + headerLen);
  if (a.data.size() != count * item)
    return bad("holds " + std::to_string(a.data.size()) + " bytes of data, its shape and dtype need " + std::to_string(count * item));
  return a;
}

std::string encodeNpy(const NpyArray& a) {
  // Python's tuple spelling: (), (3,), (2, 3).
  std::string shape = "(";
  for (size_t i = 0; i < a.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(a.shape[i]);
  if (a.shape.size() == 1) shape += ",";
  shape += ")";
  std::string header = "{'descr': '" + a.descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header += std::string((64 - total % 64) % 64, ' ') + "\n";
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>((header.size() >> 8) & 0xff);
  out += header;
  out += a.data;
  return out;
}

} // namespace tbp
