// safetensors files (Hugging Face's tensor format): validated reading and writing, every dtype.
#pragma once

// The format (https://github.com/huggingface/safetensors):
//   8 bytes  N, little-endian uint64: the header length
//   N bytes  UTF-8 JSON object, starting with '{', optionally padded with spaces:
//            {"__metadata__": {"k": "v", ...},            (optional, string values only)
//             "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
//   rest     the data buffer; offsets are relative to its start; little-endian, row-major.
//
// Reading: every rule of the spec is enforced before any tensor byte is touched, and a
// file that breaks one is refused with errc::io_error and a message naming the tensor and
// the field: header length within the file and at most 100 MB; strict JSON (json_lite.hpp)
// with nothing but spaces after it; no duplicate keys; only the fields dtype, shape and
// data_offsets, all required; a known dtype; shape entries non-negative integers whose
// product (times the item size) does not overflow and equals end - begin; 0 <= begin <=
// end <= buffer size; tensors neither overlap nor leave holes, and cover the buffer to its
// last byte; __metadata__ an object of strings.
//
//   auto f = qlib::io::safetensors_file::read("model.safetensors");
//   qlib::tensor<float, 2> w = f.get<float, 2>("fc1.weight");   // dtype and rank checked
//   std::vector<qlib::fp16> b = f.values<qlib::fp16>("fc1.bias"); // any rank, incl. 0
//   if (f.contains("x")) { const qlib::io::tensor_info& i = f.at("x"); ... i.shape ... }
//   f.metadata().at("format");
//
// get<T, R> requires T to be exactly the stored dtype (float for F32, qlib::fp16 for F16,
// qlib::bf16 for BF16, std::int8_t for I8, bool for BOOL...; see dtype_of) and R the stored
// rank; it copies the data out (alignment-safe; one memcpy on little-endian hosts). A BOOL
// byte other than 0 or 1 is refused. F8_E4M3 and F8_E5M2 are read and written as raw bytes.
// read() loads the whole file into memory; the returned object owns it.
//
// Writing:
//   qlib::io::safetensors_writer w;
//   w.add("fc1.weight", weight.cview());        // any strides: copied densely, row-major
//   w.add_scalar("step", std::int64_t{1000});    // rank 0
//   w.add_raw("x", qlib::io::dtype::f8_e4m3, {4}, bytes, 4);
//   w.set_metadata("format", "pt");
//   w.write("out.safetensors");                  // or w.to_bytes()
// Layout: as the safetensors Python/Rust writers do, tensors are ordered by item size
// (largest first), then by name, with contiguous offsets, so every tensor starts at a
// multiple of its item size; the header lists __metadata__ first, then the tensors in that
// order, and is padded with spaces to a multiple of 8 bytes (the buffer starts 8-aligned).

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "qlib/core/half.hpp"
#include "qlib/core/index_iteration.hpp"
#include "qlib/core/tensor.hpp"
#include "qlib/io/json_lite.hpp"

namespace qlib {
namespace io {

// Element types of the format (the spec's names: F64, F32, F16, BF16, F8_E4M3, F8_E5M2,
// I64, I32, I16, I8, U64, U32, U16, U8, BOOL).
enum class dtype { f64, f32, f16, bf16, f8_e4m3, f8_e5m2, i64, i32, i16, i8, u64, u32, u16, u8, boolean };

inline constexpr dtype all_dtypes[] = {dtype::f64, dtype::f32, dtype::f16, dtype::bf16, dtype::f8_e4m3,
                                       dtype::f8_e5m2, dtype::i64, dtype::i32, dtype::i16, dtype::i8,
                                       dtype::u64, dtype::u32, dtype::u16, dtype::u8, dtype::boolean};

// The reference implementation's limit on the header length (bytes).
inline constexpr std::uint64_t safetensors_max_header = 100000000;

inline const char* dtype_name(dtype t) noexcept {
  switch (t) {
    case dtype::f64: return "F64";
    case dtype::f32: return "F32";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::f8_e4m3: return "F8_E4M3";
    case dtype::f8_e5m2: return "F8_E5M2";
    case dtype::i64: return "I64";
    case dtype::i32: return "I32";
    case dtype::i16: return "I16";
    case dtype::i8: return "I8";
    case dtype::u64: return "U64";
    case dtype::u32: return "U32";
    case dtype::u16: return "U16";
    case dtype::u8: return "U8";
    case dtype::boolean: return "BOOL";
  }
  return "?";
}

// Bytes per element.
inline std::size_t dtype_size(dtype t) noexcept {
  switch (t) {
    case dtype::f64: case dtype::i64: case dtype::u64: return 8;
    case dtype::f32: case dtype::i32: case dtype::u32: return 4;
    case dtype::f16: case dtype::bf16: case dtype::i16: case dtype::u16: return 2;
    default: return 1;
  }
}

// The dtype spelled `name` ("F32"...; case-sensitive, as the spec); false if unknown.
inline bool dtype_from_name(std::string_view name, dtype& out) noexcept {
  for (dtype t : all_dtypes)
    if (name == dtype_name(t)) {
      out = t;
      return true;
    }
  return false;
}

namespace detail {
static_assert(std::numeric_limits<float>::is_iec559 && sizeof(float) == 4, "F32 needs IEEE binary32 float");
static_assert(std::numeric_limits<double>::is_iec559 && sizeof(double) == 8, "F64 needs IEEE binary64 double");
static_assert(sizeof(bool) == 1, "BOOL is stored as one byte");

template <class T, class = void>
struct dtype_of_impl {};  // no safetensors dtype: get<T> / add(T) do not compile
template <>
struct dtype_of_impl<float> { static constexpr dtype value = dtype::f32; };
template <>
struct dtype_of_impl<double> { static constexpr dtype value = dtype::f64; };
template <>
struct dtype_of_impl<fp16> { static constexpr dtype value = dtype::f16; };
template <>
struct dtype_of_impl<bf16> { static constexpr dtype value = dtype::bf16; };
template <>
struct dtype_of_impl<bool> { static constexpr dtype value = dtype::boolean; };
// Every integer type of 1, 2, 4 or 8 bytes but plain char (its signedness varies).
template <class T>
constexpr dtype integer_dtype() {
  constexpr bool s = std::is_signed<T>::value;
  return sizeof(T) == 1 ? (s ? dtype::i8 : dtype::u8)
         : sizeof(T) == 2 ? (s ? dtype::i16 : dtype::u16)
         : sizeof(T) == 4 ? (s ? dtype::i32 : dtype::u32)
                          : (s ? dtype::i64 : dtype::u64);
}
template <class T>
struct dtype_of_impl<T, std::enable_if_t<std::is_integral<T>::value && !std::is_same<T, bool>::value &&
                                         !std::is_same<T, char>::value &&
                                         (sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8)>> {
  static constexpr dtype value = integer_dtype<T>();
};
}  // namespace detail

// The dtype of C++ element type T (float -> F32, qlib::fp16 -> F16, std::uint8_t -> U8...).
template <class T>
inline constexpr dtype dtype_of = detail::dtype_of_impl<std::remove_cv_t<T>>::value;

// One tensor of a file: its dtype, shape and byte range in the data buffer.
struct tensor_info {
  std::string name;
  dtype type = dtype::f32;
  std::vector<index_t> shape;  // empty for a scalar (rank 0)
  std::size_t begin = 0, end = 0;

  std::size_t rank() const noexcept { return shape.size(); }
  index_t numel() const noexcept {
    index_t n = 1;
    for (index_t e : shape) n *= e;
    return n;
  }
  std::size_t nbytes() const noexcept { return end - begin; }
};

// A read-only byte range.
struct byte_span {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

namespace detail {
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
inline constexpr bool host_little_endian = true;
#else
inline constexpr bool host_little_endian = false;  // big or unknown: the byte-wise path is always right
#endif

inline std::uint64_t load_le(const std::uint8_t* p, std::size_t n) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < n; ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  return v;
}
inline void store_le(std::uint8_t* p, std::uint64_t v, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

template <std::size_t N>
struct uint_of_size;
template <> struct uint_of_size<1> { using type = std::uint8_t; };
template <> struct uint_of_size<2> { using type = std::uint16_t; };
template <> struct uint_of_size<4> { using type = std::uint32_t; };
template <> struct uint_of_size<8> { using type = std::uint64_t; };

// One non-bool element from its little-endian bytes (byte loads: any host, any alignment).
template <class T>
T decode_le(const std::uint8_t* p) noexcept {
  static_assert(!std::is_same<T, bool>::value, "bool is decoded with validation");
  using U = typename uint_of_size<sizeof(T)>::type;
  const U u = static_cast<U>(load_le(p, sizeof(T)));
  T out;
  std::memcpy(static_cast<void*>(&out), &u, sizeof(T));  // void*: fp16/bf16 are trivially copyable
  return out;
}

template <class T>
void encode_le(std::uint8_t* p, const T& v) noexcept {
  if constexpr (std::is_same<T, bool>::value) {
    p[0] = v ? 1 : 0;
  } else {
    using U = typename uint_of_size<sizeof(T)>::type;
    U u;
    std::memcpy(&u, &v, sizeof(T));
    store_le(p, u, sizeof(T));
  }
}

// The reference: n elements decoded one by one. decode_le_array is the same result.
template <class T>
void decode_le_array_ref(const std::uint8_t* src, std::size_t n, T* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = decode_le<T>(src + i * sizeof(T));
}
// Little-endian storage is the host's layout on x86 and ARM: one memcpy there.
template <class T>
void decode_le_array(const std::uint8_t* src, std::size_t n, T* dst) noexcept {
  if (n == 0) return;
  if constexpr (host_little_endian) std::memcpy(dst, src, n * sizeof(T));
  else decode_le_array_ref(src, n, dst);
}

// Product of the extents, or false when it overflows index_t (zero extents are skipped for
// the overflow test, so the result does not depend on where a 0 stands).
inline bool shape_numel(const std::vector<index_t>& shape, index_t& numel) noexcept {
  index_t nonzero = 1;
  bool has_zero = false;
  for (index_t e : shape) {
    if (e < 0) return false;
    if (e == 0) {
      has_zero = true;
      continue;
    }
    if (nonzero > std::numeric_limits<index_t>::max() / e) return false;
    nonzero *= e;
  }
  numel = has_zero ? 0 : nonzero;
  return true;
}

inline std::string shape_string(const std::vector<index_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}
}  // namespace detail

// A parsed, validated safetensors file; owns its bytes.
class safetensors_file {
 public:
  safetensors_file() = default;

  // Reads and validates a file (errc::io_error if it cannot be read or is malformed).
  static safetensors_file read(const std::string& path) {
    // The size from the file system, not from seeking: a directory or device "opens" and
    // can report any size, which must not become an allocation.
    std::error_code ec;
    const auto status = std::filesystem::status(path, ec);
    QLIB_CHECK(!ec && std::filesystem::is_regular_file(status), errc::io_error,
               "cannot read " + path + ": not a regular file");
    const std::uintmax_t size = std::filesystem::file_size(path, ec);
    QLIB_CHECK(!ec && size <= std::numeric_limits<std::size_t>::max() &&
                   size <= static_cast<std::uintmax_t>(std::numeric_limits<std::streamsize>::max()),
               errc::io_error, "cannot size " + path);
    std::ifstream in(path, std::ios::binary);
    QLIB_CHECK(in.good(), errc::io_error, "cannot open " + path);
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    if (!bytes.empty()) in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
    QLIB_CHECK(static_cast<std::uintmax_t>(in.gcount()) == size, errc::io_error, "cannot read " + path);
    return parse(std::move(bytes), path);
  }

  // Validates an in-memory file; `source` names it in error messages.
  static safetensors_file parse(std::vector<std::uint8_t> bytes, const std::string& source = "safetensors data") {
    safetensors_file f;
    f.bytes_ = std::move(bytes);
    f.source_ = source;
    f.load();
    return f;
  }
  static safetensors_file parse(const void* data, std::size_t size, const std::string& source = "safetensors data") {
    const auto* p = static_cast<const std::uint8_t*>(data);
    return parse(std::vector<std::uint8_t>(p, p + (p ? size : 0)), source);
  }

  std::size_t size() const noexcept { return tensors_.size(); }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }

  // The tensor called `name` (errc::out_of_range if there is none).
  const tensor_info& at(std::string_view name) const {
    const auto it = index_.find(name);
    QLIB_CHECK(it != index_.end(), errc::out_of_range, source_ + " has no tensor \"" + std::string(name) + "\"");
    return tensors_[it->second];
  }
  // Every tensor, in header order.
  const std::vector<tensor_info>& tensors() const noexcept { return tensors_; }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    n.reserve(tensors_.size());
    for (const auto& t : tensors_) n.push_back(t.name);
    return n;
  }
  // The __metadata__ object (empty if the file has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  // The stored little-endian bytes of a tensor (valid while this object lives).
  byte_span raw(std::string_view name) const {
    const tensor_info& t = at(name);
    return {bytes_.data() + data_start_ + t.begin, t.nbytes()};
  }

  // A copy of the tensor as tensor<T, R>; T must be the stored dtype (errc::invalid_argument
  // otherwise) and R its rank (errc::shape_mismatch).
  template <class T, std::size_t R>
  tensor<T, R> get(std::string_view name) const {
    const tensor_info& t = checked(name, dtype_of<T>);
    QLIB_CHECK(t.rank() == R, errc::shape_mismatch,
               source_ + ": tensor \"" + t.name + "\" has rank " + std::to_string(t.rank()) + " (shape " +
                   detail::shape_string(t.shape) + "), asked for rank " + std::to_string(R));
    extents<R> e{};
    for (std::size_t a = 0; a < R; ++a) e[a] = t.shape[a];
    tensor<T, R> out(e);
    decode_into(t, out.data());
    return out;
  }

  // A copy of the elements in row-major order, for any rank (one element for a scalar).
  template <class T>
  std::vector<T> values(std::string_view name) const {
    const tensor_info& t = checked(name, dtype_of<T>);
    const auto n = static_cast<std::size_t>(t.numel());
    if constexpr (std::is_same<T, bool>::value) {
      check_bool(t);
      const std::uint8_t* p = bytes_.data() + data_start_ + t.begin;
      return std::vector<bool>(p, p + n);
    } else {
      std::vector<T> out(n);
      decode_into(t, out.data());
      return out;
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { raise_error(errc::io_error, source_ + ": " + what); }

  const tensor_info& checked(std::string_view name, dtype want) const {
    const tensor_info& t = at(name);
    QLIB_CHECK(t.type == want, errc::invalid_argument,
               source_ + ": tensor \"" + t.name + "\" has dtype " + dtype_name(t.type) + ", asked for " +
                   dtype_name(want));
    return t;
  }

  void check_bool(const tensor_info& t) const {
    const std::uint8_t* p = bytes_.data() + data_start_ + t.begin;
    for (std::size_t i = 0; i < t.nbytes(); ++i)
      if (p[i] > 1)
        fail("tensor \"" + t.name + "\": BOOL element " + std::to_string(i) + " is " + std::to_string(p[i]) +
             ", not 0 or 1");
  }

  template <class T>
  void decode_into(const tensor_info& t, T* dst) const {
    const std::uint8_t* p = bytes_.data() + data_start_ + t.begin;
    const auto n = static_cast<std::size_t>(t.numel());
    if constexpr (std::is_same<T, bool>::value) {
      check_bool(t);
      for (std::size_t i = 0; i < n; ++i) dst[i] = p[i] != 0;
    } else {
      detail::decode_le_array(p, n, dst);
    }
  }

  // Validates the whole header and fills tensors_, index_ and metadata_.
  void load() {
    const std::size_t size = bytes_.size();
    if (size < 8) fail("file is " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
    const std::uint64_t n = detail::load_le(bytes_.data(), 8);
    if (n > safetensors_max_header)
      fail("header length " + std::to_string(n) + " exceeds the 100 MB limit");
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " exceeds the " + std::to_string(size - 8) +
           " bytes after the length field (truncated file?)");
    data_start_ = 8 + static_cast<std::size_t>(n);
    const std::size_t data_size = size - data_start_;
    const std::string_view header(reinterpret_cast<const char*>(bytes_.data() + 8), static_cast<std::size_t>(n));
    if (header.empty() || header[0] != '{') fail("header does not start with '{'");

    std::size_t end = 0;
    // Depth 4: root object > tensor object > shape array > integer; deeper is malformed.
    const json::value root = json::parse_prefix(header, end, errc::io_error, 4, source_ + " header");
    for (std::size_t i = end; i < header.size(); ++i)
      if (header[i] != ' ')
        fail("header has unexpected bytes after the JSON object at byte " + std::to_string(i) +
             " (only space padding is allowed)");

    const auto& keys = root.keys();
    const auto& items = root.items();
    for (std::size_t k = 0; k < keys.size(); ++k) {
      if (keys[k] == "__metadata__") {
        read_metadata(items[k]);
        continue;
      }
      tensors_.push_back(read_entry(keys[k], items[k], data_size));
      index_.emplace(keys[k], tensors_.size() - 1);
    }

    // Sorted by offsets, the tensors must tile [0, data_size) exactly: no overlap, no hole.
    std::vector<const tensor_info*> order;
    order.reserve(tensors_.size());
    for (const auto& t : tensors_) order.push_back(&t);
    std::sort(order.begin(), order.end(), [](const tensor_info* a, const tensor_info* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::size_t covered = 0;
    const tensor_info* prev = nullptr;
    for (const tensor_info* t : order) {
      if (t->begin < covered)
        fail("tensors \"" + prev->name + "\" and \"" + t->name + "\" overlap: data_offsets [" +
             std::to_string(prev->begin) + "," + std::to_string(prev->end) + "] and [" + std::to_string(t->begin) +
             "," + std::to_string(t->end) + "]");
      if (t->begin > covered)
        fail("data bytes [" + std::to_string(covered) + "," + std::to_string(t->begin) +
             ") belong to no tensor (a hole before tensor \"" + t->name + "\")");
      covered = t->end;
      prev = t;
    }
    if (covered != data_size)
      fail("data bytes [" + std::to_string(covered) + "," + std::to_string(data_size) +
           ") after the last tensor belong to no tensor");
  }

  void read_metadata(const json::value& v) {
    if (!v.is(json::kind::object))
      fail(std::string("__metadata__ is ") + json::kind_name(v.type()) + ", not an object");
    const auto& keys = v.keys();
    for (std::size_t k = 0; k < keys.size(); ++k) {
      const json::value& item = v.items()[k];
      if (!item.is(json::kind::string))
        fail("__metadata__ value of \"" + keys[k] + "\" is " + json::kind_name(item.type()) + ", not a string");
      metadata_.emplace(keys[k], item.as_string());
    }
  }

  tensor_info read_entry(const std::string& name, const json::value& v, std::size_t data_size) const {
    const std::string where = "tensor \"" + name + "\"";
    if (!v.is(json::kind::object)) fail(where + " is " + json::kind_name(v.type()) + ", not an object");
    for (const auto& key : v.keys())
      if (key != "dtype" && key != "shape" && key != "data_offsets") fail(where + " has unknown field \"" + key + "\"");
    const json::value* dt = v.find("dtype");
    const json::value* shape = v.find("shape");
    const json::value* offsets = v.find("data_offsets");
    if (!dt) fail(where + " has no dtype");
    if (!shape) fail(where + " has no shape");
    if (!offsets) fail(where + " has no data_offsets");

    tensor_info t;
    t.name = name;
    if (!dt->is(json::kind::string)) fail(where + ": dtype is " + json::kind_name(dt->type()) + ", not a string");
    if (!dtype_from_name(dt->as_string(), t.type)) fail(where + ": unknown dtype \"" + dt->as_string() + "\"");

    if (!shape->is(json::kind::array)) fail(where + ": shape is " + json::kind_name(shape->type()) + ", not an array");
    for (const json::value& e : shape->items()) {
      if (!e.is(json::kind::integer))
        fail(where + ": shape entry " + std::to_string(t.shape.size()) + " is " + json::kind_name(e.type()) +
             ", not an integer");
      if (e.as_integer() < 0)
        fail(where + ": shape entry " + std::to_string(t.shape.size()) + " is negative (" +
             std::to_string(e.as_integer()) + ")");
      t.shape.push_back(static_cast<index_t>(e.as_integer()));
    }
    index_t numel = 0;
    if (!detail::shape_numel(t.shape, numel))
      fail(where + ": shape " + detail::shape_string(t.shape) + " has more elements than fit in 64 bits");
    const std::size_t item = dtype_size(t.type);
    if (static_cast<std::uint64_t>(numel) > std::numeric_limits<std::size_t>::max() / item)
      fail(where + ": shape " + detail::shape_string(t.shape) + " of " + dtype_name(t.type) +
           " has a byte count that overflows");
    const std::size_t nbytes = static_cast<std::size_t>(numel) * item;

    if (!offsets->is(json::kind::array) || offsets->items().size() != 2)
      fail(where + ": data_offsets must be an array of two integers");
    std::int64_t be[2];
    for (int i = 0; i < 2; ++i) {
      const json::value& e = offsets->items()[static_cast<std::size_t>(i)];
      if (!e.is(json::kind::integer))
        fail(where + ": data_offsets entry " + std::to_string(i) + " is " + json::kind_name(e.type()) +
             ", not an integer");
      if (e.as_integer() < 0)
        fail(where + ": data_offsets entry " + std::to_string(i) + " is negative (" + std::to_string(e.as_integer()) +
             ")");
      be[i] = e.as_integer();
    }
    const std::string range = "[" + std::to_string(be[0]) + "," + std::to_string(be[1]) + "]";
    if (be[0] > be[1]) fail(where + ": data_offsets " + range + " begin after they end");
    if (static_cast<std::uint64_t>(be[1]) > data_size)
      fail(where + ": data_offsets " + range + " reach past the " + std::to_string(data_size) + "-byte data buffer");
    t.begin = static_cast<std::size_t>(be[0]);
    t.end = static_cast<std::size_t>(be[1]);
    if (t.nbytes() != nbytes)
      fail(where + ": data_offsets " + range + " span " + std::to_string(t.nbytes()) + " bytes but shape " +
           detail::shape_string(t.shape) + " of " + dtype_name(t.type) + " needs " + std::to_string(nbytes));
    return t;
  }

  std::vector<std::uint8_t> bytes_;
  std::string source_;
  std::size_t data_start_ = 0;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

// Builds a safetensors file from tensors added one by one (copied at add time).
class safetensors_writer {
 public:
  // A tensor from any view (strided or not), stored densely in row-major order.
  template <class T, std::size_t R>
  void add(std::string name, const tensor_view<T, R>& v) {
    using U = std::remove_const_t<T>;
    constexpr dtype type = dtype_of<U>;
    std::vector<index_t> shape(v.shape().begin(), v.shape().end());
    std::vector<std::uint8_t> data(static_cast<std::size_t>(v.size()) * sizeof(U));
    if constexpr (detail::host_little_endian && !std::is_same<U, bool>::value) {
      if (v.is_contiguous()) {  // already the file's encoding
        if (!data.empty()) std::memcpy(data.data(), v.data(), data.size());
        push(std::move(name), type, std::move(shape), std::move(data));
        return;
      }
    }
    std::uint8_t* out = data.data();
    ::qlib::detail::for_each_row(v.shape(), [&](const extents<R>& idx) {
      const T* row = &v[idx];
      for (index_t j = 0; j < v.shape(R - 1); ++j, out += sizeof(U)) detail::encode_le<U>(out, row[j * v.stride(R - 1)]);
    });
    push(std::move(name), type, std::move(shape), std::move(data));
  }
  template <class T, std::size_t R>
  void add(std::string name, const tensor<T, R>& t) {
    add(std::move(name), t.cview());
  }
  // A rank-0 tensor (shape []).
  template <class T>
  void add_scalar(std::string name, const T& value) {
    std::vector<std::uint8_t> data(sizeof(T));
    detail::encode_le<T>(data.data(), value);
    push(std::move(name), dtype_of<T>, {}, std::move(data));
  }
  // Bytes already in the file's encoding (little-endian, row-major); nbytes must match
  // the shape and dtype (errc::invalid_argument otherwise).
  void add_raw(std::string name, dtype type, std::vector<index_t> shape, const void* data, std::size_t nbytes) {
    index_t numel = 0;
    QLIB_CHECK(detail::shape_numel(shape, numel), errc::invalid_argument,
               "safetensors tensor \"" + name + "\": invalid shape " + detail::shape_string(shape));
    QLIB_CHECK(static_cast<std::uint64_t>(numel) <= std::numeric_limits<std::size_t>::max() / dtype_size(type) &&
                   static_cast<std::size_t>(numel) * dtype_size(type) == nbytes,
               errc::invalid_argument,
               "safetensors tensor \"" + name + "\": " + std::to_string(nbytes) + " bytes for shape " +
                   detail::shape_string(shape) + " of " + dtype_name(type));
    QLIB_CHECK(nbytes == 0 || data != nullptr, errc::invalid_argument,
               "safetensors tensor \"" + name + "\": null data");
    const auto* p = static_cast<const std::uint8_t*>(data);
    push(std::move(name), type, std::move(shape), std::vector<std::uint8_t>(p, p + nbytes));
  }

  // Adds or replaces a __metadata__ entry (both strings valid UTF-8).
  void set_metadata(std::string key, std::string value) {
    QLIB_CHECK(json::valid_utf8(key) && json::valid_utf8(value), errc::invalid_argument,
               "safetensors metadata \"" + key + "\" is not valid UTF-8");
    metadata_[std::move(key)] = std::move(value);
  }

  bool contains(std::string_view name) const { return names_.find(name) != names_.end(); }

  // The complete file.
  std::vector<std::uint8_t> to_bytes() const {
    const std::vector<const entry*> order = file_order();
    std::size_t data_size = 0;
    const std::string h = header(order, data_size);
    std::vector<std::uint8_t> out(8 + h.size() + data_size);
    detail::store_le(out.data(), h.size(), 8);
    std::memcpy(out.data() + 8, h.data(), h.size());
    std::size_t at = 8 + h.size();
    for (const entry* e : order) {
      if (!e->data.empty()) std::memcpy(out.data() + at, e->data.data(), e->data.size());
      at += e->data.size();
    }
    return out;
  }

  // Writes the file, streaming each tensor (no second copy of the data in memory);
  // errc::io_error if that fails.
  void write(const std::string& path) const {
    const std::vector<const entry*> order = file_order();
    std::size_t data_size = 0;
    const std::string h = header(order, data_size);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    QLIB_CHECK(out.good(), errc::io_error, "cannot open " + path + " for writing");
    std::uint8_t len[8];
    detail::store_le(len, h.size(), 8);
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const entry* e : order)
      out.write(reinterpret_cast<const char*>(e->data.data()), static_cast<std::streamsize>(e->data.size()));
    out.flush();
    QLIB_CHECK(out.good(), errc::io_error, "cannot write " + path);
  }

 private:
  struct entry {
    std::string name;
    dtype type;
    std::vector<index_t> shape;
    std::vector<std::uint8_t> data;
  };

  // Larger items first, then by name: each tensor starts at a multiple of its item size.
  std::vector<const entry*> file_order() const {
    std::vector<const entry*> order;
    order.reserve(entries_.size());
    for (const auto& e : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const entry* a, const entry* b) {
      const std::size_t sa = dtype_size(a->type), sb = dtype_size(b->type);
      return sa != sb ? sa > sb : a->name < b->name;
    });
    return order;
  }

  // The JSON header for tensors in `order`, padded with spaces to a multiple of 8 bytes;
  // data_size receives the length of the data buffer.
  std::string header(const std::vector<const entry*>& order, std::size_t& data_size) const {
    std::string h = "{";
    if (!metadata_.empty()) {
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& kv : metadata_) {
        if (!first) h += ',';
        first = false;
        json::append_string(h, kv.first);
        h += ':';
        json::append_string(h, kv.second);
      }
      h += '}';
    }
    std::size_t offset = 0;
    for (const entry* e : order) {
      if (h.size() > 1) h += ',';
      json::append_string(h, e->name);
      h += ":{\"dtype\":\"";
      h += dtype_name(e->type);
      h += "\",\"shape\":";
      h += detail::shape_string(e->shape);
      h += ",\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + e->data.size()) + "]}";
      offset += e->data.size();
    }
    h += '}';
    h.append((8 - h.size() % 8) % 8, ' ');  // the data buffer starts 8-byte aligned
    QLIB_CHECK(h.size() <= safetensors_max_header, errc::invalid_argument,
               "safetensors header of " + std::to_string(h.size()) + " bytes exceeds the 100 MB limit");
    data_size = offset;
    return h;
  }

  void push(std::string name, dtype type, std::vector<index_t> shape, std::vector<std::uint8_t> data) {
    QLIB_CHECK(name != "__metadata__", errc::invalid_argument, "\"__metadata__\" is reserved, not a tensor name");
    QLIB_CHECK(json::valid_utf8(name), errc::invalid_argument, "safetensors tensor name is not valid UTF-8");
    QLIB_CHECK(names_.insert(name).second, errc::invalid_argument, "safetensors tensor \"" + name + "\" added twice");
    entries_.push_back(entry{std::move(name), type, std::move(shape), std::move(data)});
  }

  std::vector<entry> entries_;
  std::set<std::string, std::less<>> names_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace io
}  // namespace qlib
