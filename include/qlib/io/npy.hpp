// Reading NumPy .npy files (float32/float64, C order) into float tensors, with validation.
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "qlib/core/tensor.hpp"

namespace qlib {

// A float array of any rank read from a .npy file.
struct npy_array {
  std::vector<index_t> shape;
  std::vector<float> data;

  // The data as a rank-R tensor; R must equal the file's rank.
  template <std::size_t R>
  tensor<float, R> as_tensor() const {
    QLIB_CHECK(shape.size() == R, errc::shape_mismatch,
               "npy array has rank " + std::to_string(shape.size()) + ", asked for rank " + std::to_string(R));
    extents<R> e;
    for (std::size_t a = 0; a < R; ++a) e[a] = shape[a];
    tensor<float, R> t(e);
    if (!data.empty()) std::memcpy(t.data(), data.data(), sizeof(float) * data.size());
    return t;
  }
};

namespace detail {
// Value of `key` in the header dict, up to the next top-level ',' or '}'.
inline std::string npy_field(const std::string& header, const std::string& key) {
  const auto at = header.find("'" + key + "'");
  QLIB_CHECK(at != std::string::npos, errc::io_error, "npy header has no '" + key + "'");
  auto pos = header.find(':', at);
  QLIB_CHECK(pos != std::string::npos, errc::io_error, "npy header field '" + key + "' has no value");
  ++pos;
  int depth = 0;
  std::string v;
  for (; pos < header.size(); ++pos) {
    const char c = header[pos];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    v += c;
  }
  const auto b = v.find_first_not_of(" '\"");
  const auto e = v.find_last_not_of(" '\"");
  return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
}
}  // namespace detail

// Reads a little-endian float32 ('<f4') or float64 ('<f8', converted) array in C order.
// Anything else (Fortran order, other dtypes, a truncated or inconsistent file) is an
// errc::io_error naming the problem.
inline npy_array read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  QLIB_CHECK(in.good(), errc::io_error, "cannot open " + path);
  char magic[8];
  in.read(magic, 8);
  QLIB_CHECK(in.gcount() == 8 && std::memcmp(magic, "\x93NUMPY", 6) == 0, errc::io_error, path + " is not a .npy file");
  const int major = static_cast<unsigned char>(magic[6]);
  QLIB_CHECK(major >= 1 && major <= 3, errc::io_error, path + ": unsupported .npy version " + std::to_string(major));
  std::uint32_t hlen = 0;
  unsigned char lenb[4] = {0, 0, 0, 0};
  in.read(reinterpret_cast<char*>(lenb), major == 1 ? 2 : 4);
  QLIB_CHECK(in.good(), errc::io_error, path + ": truncated header");
  hlen = lenb[0] | (lenb[1] << 8) | (static_cast<std::uint32_t>(lenb[2]) << 16) |
         (static_cast<std::uint32_t>(lenb[3]) << 24);
  QLIB_CHECK(hlen <= (1u << 20), errc::io_error, path + ": header length " + std::to_string(hlen) + " is implausible");
  std::string header(hlen, '\0');
  in.read(&header[0], hlen);
  QLIB_CHECK(static_cast<std::uint32_t>(in.gcount()) == hlen, errc::io_error, path + ": truncated header");

  const std::string descr = detail::npy_field(header, "descr");
  QLIB_CHECK(descr == "<f4" || descr == "<f8", errc::io_error,
             path + ": dtype '" + descr + "' is not supported (need <f4 or <f8)");
  QLIB_CHECK(detail::npy_field(header, "fortran_order") == "False", errc::io_error,
             path + ": Fortran-order arrays are not supported");
  npy_array out;
  std::string shape = detail::npy_field(header, "shape");
  QLIB_CHECK(shape.size() >= 2 && shape.front() == '(' && shape.back() == ')', errc::io_error,
             path + ": malformed shape '" + shape + "'");
  index_t count = 1;
  std::string num;
  for (std::size_t i = 1; i < shape.size(); ++i) {
    const char c = shape[i];
    if (c >= '0' && c <= '9') {
      num += c;
      QLIB_CHECK(num.size() <= 15, errc::io_error, path + ": extent too large");
    } else if (c == ',' || c == ')') {
      if (!num.empty()) {
        const index_t e = std::stoll(num);
        QLIB_CHECK(e == 0 || count <= (index_t{1} << 40) / e, errc::io_error, path + ": array too large");
        out.shape.push_back(e);
        count *= e;
        num.clear();
      }
    } else {
      QLIB_CHECK(c == ' ', errc::io_error, path + ": malformed shape '" + shape + "'");
    }
  }
  const std::size_t item = descr == "<f4" ? 4 : 8;
  const auto data_start = in.tellg();
  in.seekg(0, std::ios::end);
  const auto bytes = static_cast<std::uint64_t>(in.tellg() - data_start);
  QLIB_CHECK(bytes == static_cast<std::uint64_t>(count) * item, errc::io_error,
             path + ": " + std::to_string(bytes) + " data bytes for " + std::to_string(count) + " elements of " +
                 std::to_string(item) + " bytes");
  in.seekg(data_start);
  out.data.resize(static_cast<std::size_t>(count));
  if (item == 4) {
    in.read(reinterpret_cast<char*>(out.data.data()), static_cast<std::streamsize>(bytes));
  } else {
    std::vector<double> d(static_cast<std::size_t>(count));
    in.read(reinterpret_cast<char*>(d.data()), static_cast<std::streamsize>(bytes));
    for (std::size_t i = 0; i < d.size(); ++i) out.data[i] = static_cast<float>(d[i]);
  }
  QLIB_CHECK(in.good(), errc::io_error, path + ": read failed");
  return out;
}

}  // namespace qlib
