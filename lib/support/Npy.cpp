#include "tbp/support/Npy.h"

#include "tbp/support/FileIO.h"

#include <cctype>
#include <cstring>

namespace tbp {

namespace {

/// The header of a .npy file is a Python dict literal, e.g.
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`. This scanner reads exactly
/// that grammar (string keys; string, True/False or tuple-of-integers values) in one pass with
/// no recursion, so an adversarial header of any length cannot exhaust the stack.
class HeaderScanner {
public:
  explicit HeaderScanner(const std::string& text) : s_(text) {}

  /// Parses the dict into `descr`, `fortranOrder` and `shape`; an error names the header
  /// offset where the grammar broke.
  std::string parse(std::string& descr, bool& fortranOrder, std::vector<int64_t>& shape, bool& haveShape) {
    skipSpace();
    if (!eat('{')) return at("expected '{'");
    for (;;) {
      skipSpace();
      if (eat('}')) break;
      std::string key;
      const size_t keyAt = i_;
      if (std::string e = string(key); !e.empty()) return e;
      skipSpace();
      if (!eat(':')) return at("expected ':' after '" + key + "'");
      skipSpace();
      if (key == "descr") {
        if (std::string e = string(descr); !e.empty()) return e;
      } else if (key == "fortran_order") {
        if (s_.compare(i_, 4, "True") == 0) fortranOrder = true, i_ += 4;
        else if (s_.compare(i_, 5, "False") == 0) fortranOrder = false, i_ += 5;
        else return at("'fortran_order' is not True or False");
      } else if (key == "shape") {
        if (std::string e = tuple(shape); !e.empty()) return e;
        haveShape = true;
      } else {
        return at("unknown key '" + key + "'", keyAt);
      }
      skipSpace();
      if (eat(',')) continue;
      skipSpace();
      if (eat('}')) break;
      return at("expected ',' or '}'");
    }
    skipSpace();
    if (i_ != s_.size()) return at("unexpected text after the header dict");
    return {};
  }

private:
  std::string at(const std::string& what) const { return at(what, i_); }
  static std::string at(const std::string& what, size_t offset) { return "header offset " + std::to_string(offset) + ": " + what; }
  void skipSpace() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  std::string string(std::string& out) {
    if (i_ >= s_.size() || (s_[i_] != '\'' && s_[i_] != '"')) return at("expected a quoted string");
    const char quote = s_[i_++];
    size_t close = s_.find(quote, i_);
    if (close == std::string::npos) return at("unterminated string", i_ - 1);
    out = s_.substr(i_, close - i_);
    i_ = close + 1;
    return {};
  }
  /// `()`, `(3,)`, `(2, 3)`: non-negative decimal integers below 2^62.
  std::string tuple(std::vector<int64_t>& out) {
    if (!eat('(')) return at("'shape' is not a tuple");
    for (;;) {
      skipSpace();
      if (eat(')')) return {};
      if (i_ == s_.size()) return at("the header ends inside 'shape'");
      const size_t begin = i_;
      int64_t v = 0;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
        v = v * 10 + (s_[i_++] - '0');
        if (v >= (int64_t{1} << 62)) return at("dimension " + s_.substr(begin, i_ - begin) + "... is too large");
      }
      if (i_ == begin) return at("'shape' holds something other than a non-negative integer");
      if (i_ < s_.size() && s_[i_] == 'L') ++i_; // Python 2's long suffix
      out.push_back(v);
      if (out.size() > 64) return at("'shape' has more than 64 dimensions");
      skipSpace();
      if (eat(',')) continue;
      skipSpace();
      if (eat(')')) return {};
      if (i_ == s_.size()) return at("the header ends inside 'shape'");
      return at("expected ',' or ')' in 'shape'");
    }
  }

  const std::string& s_;
  size_t i_ = 0;
};

/// Bytes per element of a numpy dtype string such as `<f4` or `|b1`; 0 when it is not one.
size_t itemSize(const std::string& descr) {
  if (descr.size() < 3 || descr.size() > 4 || std::string("<>|=").find(descr[0]) == std::string::npos ||
      !std::isalpha(static_cast<unsigned char>(descr[1])))
    return 0;
  size_t n = 0;
  for (size_t i = 2; i < descr.size(); ++i) {
    if (!std::isdigit(static_cast<unsigned char>(descr[i]))) return 0;
    n = n * 10 + static_cast<size_t>(descr[i] - '0');
  }
  return n;
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
  NpyArray a;
  bool fortranOrder = false, haveShape = false;
  if (std::string e = HeaderScanner(header).parse(a.descr, fortranOrder, a.shape, haveShape); !e.empty()) return bad(e);
  if (a.descr.empty()) return bad("header has no 'descr'");
  if (!haveShape) return bad("header has no 'shape'");
  if (fortranOrder) return bad("Fortran-order arrays are not supported");
  if (a.descr[0] == '>' && a.descr.size() <= 4) return bad("big-endian data ('" + a.descr + "') is not supported");
  const size_t item = itemSize(a.descr);
  if (item == 0 || item > 16)
    return bad("unsupported dtype '" + (a.descr.size() > 32 ? a.descr.substr(0, 32) + "...' (" + std::to_string(a.descr.size()) + " characters)" : a.descr + "'"));
  // Every dimension is below 2^62; the product is checked against the bytes present, so it
  // must not wrap on the way.
  size_t count = 1;
  for (int64_t d : a.shape)
    if (__builtin_mul_overflow(count, static_cast<size_t>(d), &count))
      return bad("shape holds more elements than can be addressed");
  size_t need = 0;
  if (__builtin_mul_overflow(count, item, &need)) return bad("shape holds more elements than can be addressed");
  a.data = b.substr(offset + headerLen);
  if (a.data.size() != need)
    return bad("holds " + std::to_string(a.data.size()) + " bytes of data, its shape and dtype need " + std::to_string(need));
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
