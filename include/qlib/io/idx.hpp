// Parsing IDX files (MNIST / Fashion-MNIST images and labels) of unsigned bytes, with validation.
#pragma once

#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "qlib/core/tensor_view.hpp"

// IDX: two zero bytes, a type code (0x08 = unsigned byte), the rank, then rank
// big-endian uint32 extents, then the data in row-major order. Only unsigned-byte data
// is read (what MNIST-style datasets use). Compressed files (.gz, as Debian ships
// Fashion-MNIST) must be decompressed first; qlib has no zlib dependency (the demo uses
// zlib, examples/idx_gz.hpp).
namespace qlib {
namespace io {

struct idx_array {
  std::vector<index_t> shape;
  std::vector<std::uint8_t> data;
};

// Parses IDX bytes; refuses bad magic, other element types, rank 0 or > 8, and a data
// size that does not match the extents exactly.
inline idx_array parse_idx(const std::vector<std::uint8_t>& bytes, const std::string& what = "IDX data") {
  QLIB_CHECK(bytes.size() >= 4, errc::io_error, what + ": shorter than the 4-byte IDX magic");
  QLIB_CHECK(bytes[0] == 0 && bytes[1] == 0, errc::io_error, what + ": not an IDX file (bad magic)");
  QLIB_CHECK(bytes[2] == 0x08, errc::unsupported,
             what + ": IDX element type " + std::to_string(bytes[2]) + " is not unsigned byte (0x08)");
  const std::size_t rank = bytes[3];
  QLIB_CHECK(rank >= 1 && rank <= 8, errc::io_error, what + ": IDX rank " + std::to_string(rank) + " outside [1, 8]");
  QLIB_CHECK(bytes.size() >= 4 + 4 * rank, errc::io_error, what + ": truncated IDX header");
  idx_array a;
  std::uint64_t count = 1;
  for (std::size_t i = 0; i < rank; ++i) {
    const std::uint8_t* p = bytes.data() + 4 + 4 * i;
    const std::uint64_t e = (std::uint64_t{p[0]} << 24) | (std::uint64_t{p[1]} << 16) | (std::uint64_t{p[2]} << 8) | p[3];
    count *= e;  // <= 2^32 per extent; checked against the file size below before it can overflow
    QLIB_CHECK(count <= bytes.size(), errc::io_error, what + ": IDX extents exceed the file size");
    a.shape.push_back(static_cast<index_t>(e));
  }
  const std::size_t header = 4 + 4 * rank;
  QLIB_CHECK(bytes.size() - header == count, errc::io_error,
             what + ": IDX data has " + std::to_string(bytes.size() - header) + " bytes, the extents need " +
                 std::to_string(count));
  a.data.assign(bytes.begin() + static_cast<std::ptrdiff_t>(header), bytes.end());
  return a;
}

// Reads an uncompressed IDX file.
inline idx_array read_idx(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  QLIB_CHECK(f.good(), errc::io_error, "cannot open IDX file " + path);
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  return parse_idx(bytes, path);
}

}  // namespace io
}  // namespace qlib
