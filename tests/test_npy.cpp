// .npy reading: valid files of each dtype and rank, and malformed files refused clearly.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "qlib/io/npy.hpp"
#include "test_util.hpp"

using namespace qlib;

namespace {
std::string temp_path(const char* name) { return std::string("/tmp/qlib_test_") + name + ".npy"; }

// Writes a version-1 .npy file with the given header dict and raw payload.
void write_npy(const std::string& path, const std::string& dict, const std::string& payload, int version = 1) {
  std::string header = dict;
  const std::size_t pre = version == 1 ? 10 : 12;
  while ((pre + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY", 6);
  out.put(static_cast<char>(version));
  out.put(0);
  const std::size_t n = header.size();
  out.put(static_cast<char>(n & 0xff));
  out.put(static_cast<char>((n >> 8) & 0xff));
  if (version != 1) {
    out.put(0);
    out.put(0);
  }
  out << header << payload;
}

template <class T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}
}  // namespace

TEST_CASE("read_npy reads float32 and float64 arrays", "[npy]") {
  const std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1e-3f};
  write_npy(temp_path("f4"), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", bytes_of(f));
  const npy_array a = read_npy(temp_path("f4"));
  REQUIRE(a.shape == std::vector<index_t>{2, 3});
  CHECK(a.data == f);
  const tensor<float, 2> t = a.as_tensor<2>();
  CHECK(t(1, 2) == -1e-3f);
  QLIB_REQUIRE_ERROR(a.as_tensor<3>(), errc::shape_mismatch);

  const std::vector<double> d = {0.1, 0.2, 0.3};
  write_npy(temp_path("f8"), "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", bytes_of(d), 2);
  const npy_array b = read_npy(temp_path("f8"));
  REQUIRE(b.shape == std::vector<index_t>{3});
  CHECK(b.data[2] == 0.3f);
}

TEST_CASE("read_npy refuses malformed files", "[npy][errors]") {
  const std::vector<float> f(6, 1.0f);
  const std::string good = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  QLIB_REQUIRE_ERROR(read_npy("/nonexistent/x.npy"), errc::io_error);
  write_npy(temp_path("trunc"), good, bytes_of(f).substr(0, 20));
  QLIB_REQUIRE_ERROR(read_npy(temp_path("trunc")), errc::io_error);
  write_npy(temp_path("dtype"), "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", bytes_of(f));
  QLIB_REQUIRE_ERROR(read_npy(temp_path("dtype")), errc::io_error);
  write_npy(temp_path("fortran"), "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }", bytes_of(f));
  QLIB_REQUIRE_ERROR(read_npy(temp_path("fortran")), errc::io_error);
  write_npy(temp_path("shape"), "{'descr': '<f4', 'fortran_order': False, 'shape': (2, x), }", bytes_of(f));
  QLIB_REQUIRE_ERROR(read_npy(temp_path("shape")), errc::io_error);
  write_npy(temp_path("huge"), "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999), }",
            bytes_of(f));
  QLIB_REQUIRE_ERROR(read_npy(temp_path("huge")), errc::io_error);
  {
    std::ofstream out(temp_path("magic"), std::ios::binary);
    out << "NOTNUMPYATALL";
  }
  QLIB_REQUIRE_ERROR(read_npy(temp_path("magic")), errc::io_error);
}
