#include "tbp/support/Bytes.h"
#include "tbp/support/FileIO.h"
#include "tbp/support/Hash.h"
#include "tbp/support/Npy.h"

#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>

using namespace tbp;

TEST_CASE("byte sizes parse in decimal and binary units") {
  CHECK(*parseByteSize("1048576") == 1048576u);
  CHECK(*parseByteSize("4GB") == 4000000000u);
  CHECK(*parseByteSize("4GiB") == 4ull << 30);
  CHECK(*parseByteSize("512MB") == 512000000u);
  CHECK(*parseByteSize("750MiB") == 750ull << 20);
  CHECK(*parseByteSize(" 1.5gb ") == 1500000000u);
  CHECK(*parseByteSize("8KiB") == 8192u);
  CHECK_FALSE(parseByteSize("").hasValue());
  CHECK_FALSE(parseByteSize("GB").hasValue());
  CHECK_FALSE(parseByteSize("12XB").hasValue());
  CHECK_FALSE(parseByteSize("1.5").hasValue());
  CHECK_FALSE(parseByteSize("1.2.3GB").hasValue());
  CHECK(parseByteSize("99999999999TiB").status().code() == ErrorCode::Usage);
}

TEST_CASE("budgets accept percentages of the store-all peak") {
  Expected<Budget> b = parseBudget("60%");
  REQUIRE(b.hasValue());
  CHECK(b->isFraction);
  CHECK(b->resolve(1000) == 600u);
  Expected<Budget> abs = parseBudget("2KiB");
  REQUIRE(abs.hasValue());
  CHECK(abs->resolve(1) == 2048u);
  CHECK_FALSE(parseBudget("0").hasValue());
  CHECK_FALSE(parseBudget("-5%").hasValue());
  CHECK_FALSE(parseBudget("abc%").hasValue());
}

TEST_CASE("checked arithmetic reports overflow") {
  CHECK(checkedAdd(1, 2) == 3u);
  CHECK_FALSE(checkedAdd(UINT64_MAX, 1).has_value());
  CHECK(checkedMul(1ull << 31, 1ull << 31) == 1ull << 62);
  CHECK_FALSE(checkedMul(1ull << 40, 1ull << 40).has_value());
}

TEST_CASE("formatting is stable") {
  CHECK(formatBytes(0) == "0 B");
  CHECK(formatBytes(1023) == "1023 B");
  CHECK(formatBytes(1536) == "1.50 KiB");
  CHECK(formatBytes(3ull << 30) == "3.00 GiB");
  CHECK(formatCount(1234567) == "1,234,567");
  CHECK(formatCount(12) == "12");
  CHECK(formatFixed(2.0 / 3.0, 3) == "0.667");
}

TEST_CASE("hashing marks field boundaries and is stable") {
  CHECK(Hasher().add("ab").add("c").digest() != Hasher().add("a").add("bc").digest());
  CHECK(Hasher().add("tbp").hexDigest() == Hasher().add("tbp").hexDigest());
  CHECK(Hasher().add("tbp").hexDigest().size() == 16);
  CHECK(Hasher().add(int64_t{1}).digest() != Hasher().add(int64_t{2}).digest());
}

TEST_CASE("atomic writes leave either the whole file or nothing") {
  namespace fs = std::filesystem;
  fs::path dir = fs::temp_directory_path() / "tbp_fileio_test";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::string path = (dir / "out.txt").string();
  REQUIRE(writeFileAtomic(path, "hello").isOk());
  CHECK(*readFile(path) == "hello");
  REQUIRE(writeFileAtomic(path, "again").isOk());
  CHECK(*readFile(path) == "again");
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir)) { (void)e; ++files; }
  CHECK(files == 1); // no temporary left behind
  Status missingDir = writeFileAtomic((dir / "no" / "such" / "x.txt").string(), "x");
  CHECK(missingDir.code() == ErrorCode::Usage);
  Expected<std::string> missing = readFile((dir / "absent").string());
  CHECK(missing.status().code() == ErrorCode::BadInput);
  CHECK(missing.status().message().find("no such file") != std::string::npos);
  fs::remove_all(dir);
}

TEST_CASE("npy arrays round-trip and bad files are named") {
  namespace fs = std::filesystem;
  NpyArray a{"<f4", {2, 3}, std::string(24, '\0')};
  for (int i = 0; i < 6; ++i) {
    float v = static_cast<float>(i) * 0.5f;
    std::memcpy(a.data.data() + 4 * i, &v, 4);
  }
  std::string encoded = encodeNpy(a);
  CHECK((encoded.size() - a.data.size()) % 64 == 0); // the header is padded to 64 bytes
  fs::path file = fs::temp_directory_path() / "tbp_npy_test.npy";
  REQUIRE(writeFileAtomic(file.string(), encoded).isOk());
  Expected<NpyArray> back = readNpy(file.string());
  REQUIRE_MESSAGE(back.hasValue(), back.status().message());
  CHECK(back->descr == "<f4");
  CHECK(back->shape == std::vector<int64_t>{2, 3});
  CHECK(back->data == a.data);
  NpyArray scalar{"<i8", {}, std::string(8, '\0')};
  REQUIRE(writeFileAtomic(file.string(), encodeNpy(scalar)).isOk());
  CHECK(readNpy(file.string())->shape.empty());
  NpyArray vec{"<i8", {5}, std::string(40, '\0')};
  REQUIRE(writeFileAtomic(file.string(), encodeNpy(vec)).isOk());
  CHECK(readNpy(file.string())->shape == std::vector<int64_t>{5});
  REQUIRE(writeFileAtomic(file.string(), "not numpy").isOk());
  CHECK(readNpy(file.string()).status().message() == file.string() + ": not a .npy file (no \\x93NUMPY magic)");
  REQUIRE(writeFileAtomic(file.string(), encoded.substr(0, encoded.size() - 4)).isOk());
  CHECK(readNpy(file.string()).status().message().find("holds 20 bytes of data") != std::string::npos);
  fs::remove(file);
}

TEST_CASE("npy headers are parsed, not pattern-matched: hostile headers are refused by name") {
  namespace fs = std::filesystem;
  fs::path file = fs::temp_directory_path() / "tbp_npy_header_test.npy";
  // A version 2.0 file (4-byte header length) with the header text given and `data` after it.
  auto withHeader = [&](const std::string& header, const std::string& data) {
    std::string out = "\x93NUMPY";
    out += '\x02';
    out += '\x00';
    for (int i = 0; i < 4; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
    REQUIRE(writeFileAtomic(file.string(), out + header + data).isOk());
    return readNpy(file.string());
  };
  auto message = [&](const std::string& header, const std::string& data = "") {
    Expected<NpyArray> a = withHeader(header, data);
    REQUIRE_FALSE(a.hasValue());
    CHECK(a.status().code() == ErrorCode::BadInput);
    CHECK(a.status().message().rfind(file.string() + ": ", 0) == 0);
    return a.status().message().substr(file.string().size() + 2);
  };
  // Python's spellings that numpy writes or accepts: double quotes, no trailing comma, newlines.
  Expected<NpyArray> ok = withHeader("{\"descr\": \"<i8\", \"shape\": (2,\n 1), \"fortran_order\": False}\n", std::string(16, '\0'));
  REQUIRE_MESSAGE(ok.hasValue(), ok.status().message());
  CHECK(ok->shape == std::vector<int64_t>{2, 1});
  // A regex over a 300 KB header recursed once per character and overflowed the stack.
  CHECK(message("{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::string(300000, ' ') + "2,), }").find("holds 0 bytes") !=
        std::string::npos);
  CHECK(message("{'descr': '" + std::string(300000, 'f') + "', 'fortran_order': False, 'shape': (2,), }").find("unsupported dtype") !=
        std::string::npos);
  // '\d+' took (-2, 8) for (2, 8) and (2.5, 8) for (2, 5, 8); std::stoll threw on 23 digits.
  CHECK(message("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 8), }") ==
        "header offset 51: 'shape' holds something other than a non-negative integer");
  CHECK(message("{'descr': '<f4', 'fortran_order': False, 'shape': (2.5, 8), }") == "header offset 52: expected ',' or ')' in 'shape'");
  CHECK(message("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 8), }").find("is too large") != std::string::npos);
  // Dimensions below 2^62 each whose product wraps a 64-bit count.
  CHECK(message("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387903, 4611686018427387903), }") ==
        "shape holds more elements than can be addressed");
  CHECK(message("{'descr': '<f-4', 'fortran_order': False, 'shape': (2,), }") == "unsupported dtype '<f-4'");
  CHECK(message("{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }") == "Fortran-order arrays are not supported");
  CHECK(message("{'descr': '<f4', 'fortran_order': False, }") == "header has no 'shape'");
  CHECK(message("{'descr': '<f4', 'shape': (2,), 'extra': 1}") == "header offset 32: unknown key 'extra'");
  CHECK(message("{'descr': '<f4', 'shape': (2,") == "header offset 29: the header ends inside 'shape'");
  CHECK(message("{'descr': '<f4") == "header offset 10: unterminated string");
  fs::remove(file);
}
