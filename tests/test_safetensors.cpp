// safetensors and json_lite: round trips of every dtype and rank, Python-written files, malformed files refused.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>

#include "qlib/core/index_iteration.hpp"
#include "qlib/io/json_lite.hpp"
#include "qlib/io/npy.hpp"
#include "qlib/io/safetensors.hpp"
#include "test_util.hpp"

using namespace qlib;
using io::dtype;
using bytes_t = std::vector<std::uint8_t>;

namespace {

// --- helpers -------------------------------------------------------------------------

template <class T>
T random_element() {
  if constexpr (std::is_same<T, bool>::value) {
    return qlib_test::rand_int(0, 1) == 1;
  } else {
    const std::uint64_t r = qlib_test::rng()();  // random bits: NaNs and subnormals included
    T v;
    std::memcpy(static_cast<void*>(&v), &r, sizeof(T));
    return v;
  }
}

template <class T>
bool same_element(const T& a, const T& b) {
  if constexpr (std::is_same<T, bool>::value) return a == b;
  else return std::memcmp(&a, &b, sizeof(T)) == 0;
}

template <class T, std::size_t R>
void fill_random(tensor<T, R>& t) {
  for (T& v : t) v = random_element<T>();
}

// got (dense) equals want (any strides) element for element, bit for bit.
template <class T, std::size_t R>
void require_same(const tensor<T, R>& got, const tensor_view<const T, R>& want) {
  REQUIRE(got.shape() == want.shape());
  if (want.empty()) return;
  extents<R> idx{};
  bool all = true;
  do {
    all = all && same_element(got.view()[idx], want[idx]);
  } while (qlib::detail::next_index(idx, want.shape()));
  CHECK(all);
}

// Unsigned bits of a value, independent of host byte order.
template <class T>
std::uint64_t bits_of(const T& v) {
  typename io::detail::uint_of_size<sizeof(T)>::type u;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}

// A file made of the 8-byte length `len`, `header` and `data_size` data bytes.
bytes_t make_file(const std::string& header, std::size_t data_size, std::uint64_t len) {
  bytes_t b(8 + header.size() + data_size, 0);
  for (int i = 0; i < 8; ++i) b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(len >> (8 * i));
  std::memcpy(b.data() + 8, header.data(), header.size());
  for (std::size_t i = 0; i < data_size; ++i) b[8 + header.size() + i] = static_cast<std::uint8_t>(i * 7 + 1);
  return b;
}
bytes_t make_file(const std::string& header, std::size_t data_size) {
  return make_file(header, data_size, header.size());
}

io::safetensors_file parse(const bytes_t& b) { return io::safetensors_file::parse(b); }

// Requires that `b` is refused as a malformed file (errc::io_error) and, when exceptions
// let us read the message, that the message contains `why`: each case fails for its own
// reason, not an earlier one.
void refuse(const bytes_t& b, const std::string& why) {
  INFO("expected refusal: " << why);
  QLIB_REQUIRE_ERROR(parse(b), errc::io_error);
#if QLIB_EXCEPTIONS
  try {
    (void)parse(b);
  } catch (const qlib::error& e) {
    INFO("message: " << e.what());
    CHECK(std::string(e.what()).find(why) != std::string::npos);
  }
#endif
}
void refuse(const std::string& header, std::size_t data_size, const std::string& why) {
  refuse(make_file(header, data_size), why);
}

std::string temp_path(const char* name) {
  return "/tmp/qlib_test_safetensors_" + std::to_string(::getpid()) + "_" + name;
}

std::string from_hex(const std::string& h) {
  std::string s;
  for (std::size_t i = 0; i + 1 < h.size(); i += 2) s += static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16));
  return s;
}

}  // namespace

// --- round trips -----------------------------------------------------------------------

static_assert(io::dtype_of<float> == dtype::f32 && io::dtype_of<const double> == dtype::f64, "float dtypes");
static_assert(io::dtype_of<fp16> == dtype::f16 && io::dtype_of<bf16> == dtype::bf16, "half dtypes");
static_assert(io::dtype_of<long long> == dtype::i64 && io::dtype_of<unsigned char> == dtype::u8 &&
                  io::dtype_of<signed char> == dtype::i8 && io::dtype_of<std::uint16_t> == dtype::u16,
              "integer dtypes by size and signedness");
static_assert(io::dtype_of<bool> == dtype::boolean, "bool");

TEMPLATE_TEST_CASE("safetensors round trip of ranks 0..4, empty and strided tensors", "[safetensors]", double, float,
                   fp16, bf16, std::int8_t, std::uint8_t, std::int16_t, std::uint16_t, std::int32_t, std::uint32_t,
                   std::int64_t, std::uint64_t, bool) {
  using T = TestType;
  tensor<T, 1> r1({qlib_test::rand_int(1, 9)});
  tensor<T, 2> r2({3, 5});
  tensor<T, 3> r3({2, 3, 4});
  tensor<T, 4> r4({2, 1, 3, 2});
  tensor<T, 1> e1({0});
  tensor<T, 3> e3({2, 0, 3});
  tensor<T, 4> e4({3, 2, 2, 0});
  fill_random(r1);
  fill_random(r2);
  fill_random(r3);
  fill_random(r4);
  const T scalar = random_element<T>();

  io::safetensors_writer w;
  w.add("r1", r1);
  w.add("r2", r2.cview());
  w.add("r3", r3);
  w.add("r4", r4.view());
  w.add("e1", e1);
  w.add("e3", e3);
  w.add("e4", e4);
  w.add_scalar("r0", scalar);
  // Strided sources are stored densely in their logical row-major order.
  const tensor_view<const T, 2> r2t = r2.cview().transpose(0, 1);
  const tensor_view<const T, 3> r3s = r3.cview().slice(2, 1, 3).slice(1, 1, 3);
  w.add("r2.transposed", r2t);
  w.add("r3.sliced", r3s);
  w.set_metadata("dtype", io::dtype_name(io::dtype_of<T>));

  const io::safetensors_file f = parse(w.to_bytes());
  CHECK(f.size() == 10);
  CHECK(f.metadata().at("dtype") == io::dtype_name(io::dtype_of<T>));
  for (const auto& t : f.tensors()) CHECK(t.type == io::dtype_of<T>);
  require_same(f.get<T, 1>("r1"), r1.cview());
  require_same(f.get<T, 2>("r2"), r2.cview());
  require_same(f.get<T, 3>("r3"), r3.cview());
  require_same(f.get<T, 4>("r4"), r4.cview());
  require_same(f.get<T, 1>("e1"), e1.cview());
  require_same(f.get<T, 3>("e3"), e3.cview());
  require_same(f.get<T, 4>("e4"), e4.cview());
  require_same(f.get<T, 2>("r2.transposed"), r2t);
  require_same(f.get<T, 3>("r3.sliced"), r3s);
  CHECK(f.at("e3").nbytes() == 0);
  CHECK(f.at("e4").shape == std::vector<index_t>{3, 2, 2, 0});

  REQUIRE(f.at("r0").shape.empty());
  const std::vector<T> s = f.values<T>("r0");
  REQUIRE(s.size() == 1);
  CHECK(same_element<T>(s[0], scalar));
  QLIB_REQUIRE_ERROR((f.get<T, 1>("r0")), errc::shape_mismatch);

  // values() is the same data as get(), flat.
  const std::vector<T> flat = f.values<T>("r3");
  REQUIRE(flat.size() == static_cast<std::size_t>(r3.size()));
  bool all = true;
  for (std::size_t i = 0; i < flat.size(); ++i) all = all && same_element<T>(flat[i], r3.data()[i]);
  CHECK(all);
}

TEST_CASE("safetensors writer: the spec's byte layout", "[safetensors]") {
  // Built by hand from the spec: LE length, JSON header padded with spaces to 8, LE data.
  io::safetensors_writer w;
  w.add_scalar("x", std::uint16_t{0x0102});
  w.add_scalar("y", std::int32_t{-2});
  const bytes_t got = w.to_bytes();
  std::string header =
      R"({"y":{"dtype":"I32","shape":[],"data_offsets":[0,4]},"x":{"dtype":"U16","shape":[],"data_offsets":[4,6]}})";
  while (header.size() % 8) header += ' ';
  const std::uint8_t data[] = {0xFE, 0xFF, 0xFF, 0xFF, 0x02, 0x01};  // -2 as I32, 0x0102 as U16
  bytes_t want(8 + header.size() + sizeof data, 0);
  want[0] = static_cast<std::uint8_t>(header.size());
  std::memcpy(want.data() + 8, header.data(), header.size());
  std::memcpy(want.data() + 8 + header.size(), data, sizeof data);
  CHECK(got == want);
}

TEST_CASE("safetensors writer: order by item size then name, aligned contiguous offsets", "[safetensors]") {
  io::safetensors_writer w;
  tensor<std::int8_t, 1> a({3}, 1);
  tensor<double, 2> b({2, 3}, 2.0);
  tensor<fp16, 1> c({5}, fp16(1.0f));
  tensor<float, 1> d({1}, 4.0f);
  tensor<double, 1> e({1}, 5.0);
  w.add("a", a);
  w.add("b", b);
  w.add("c", c);
  w.add("d", d);
  w.add("e", e);
  w.set_metadata("format", "pt");
  const bytes_t bytes = w.to_bytes();
  const std::uint64_t n = io::detail::load_le(bytes.data(), 8);
  CHECK(n % 8 == 0);
  CHECK(bytes[8] == '{');
  const std::string header(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  CHECK(header.find("{\"__metadata__\":{\"format\":\"pt\"},") == 0);
  const std::size_t last = header.find_last_not_of(' ');
  CHECK(header[last] == '}');  // only space padding after the object, less than 8 bytes of it
  CHECK(header.size() - last - 1 < 8);
  const io::safetensors_file f = parse(bytes);
  const char* order[] = {"b", "e", "d", "c", "a"};  // 8, 8, 4, 2, 1-byte items; names within a size
  std::size_t at = 0;
  for (const char* name : order) {
    const io::tensor_info& t = f.at(name);
    INFO("tensor " << name);
    CHECK(t.begin == at);
    CHECK((8 + n + t.begin) % io::dtype_size(t.type) == 0);
    at = t.end;
  }
  CHECK(8 + n + at == bytes.size());
  CHECK(f.get<double, 2>("b")(1, 2) == 2.0);
  CHECK(to_float(f.get<fp16, 1>("c")(4)) == 1.0f);
}

TEST_CASE("safetensors names and metadata with escapes and UTF-8, raw F8 tensors", "[safetensors]") {
  io::safetensors_writer w;
  const std::string names[] = {"quote\"back\\slash", "tab\tnewline\n\x01\x1f", "caf\xc3\xa9",
                               "emoji \xf0\x9f\x98\x80", "", "/\x7f"};
  std::int32_t k = 0;
  for (const auto& name : names) w.add_scalar(name, k++);
  const std::uint8_t f8[] = {0x00, 0x7f, 0x80, 0xff};
  w.add_raw("f8a", dtype::f8_e4m3, {2, 2}, f8, 4);
  w.add_raw("f8b", dtype::f8_e5m2, {4}, f8, 4);
  w.add_raw("i16", dtype::i16, {2}, "\x01\x02\x03\x04", 4);
  w.set_metadata("key \"\\\n", "value \xe2\x82\xac\x02");
  w.set_metadata("empty", "");
  const io::safetensors_file f = parse(w.to_bytes());
  k = 0;
  for (const auto& name : names) {
    INFO("name " << name);
    REQUIRE(f.contains(name));
    CHECK(f.values<std::int32_t>(name) == std::vector<std::int32_t>{k++});
  }
  CHECK(f.metadata().at("key \"\\\n") == "value \xe2\x82\xac\x02");
  CHECK(f.metadata().at("empty").empty());
  CHECK(f.metadata().size() == 2);
  for (const char* name : {"f8a", "f8b"}) {
    const io::byte_span r = f.raw(name);
    REQUIRE(r.size == 4);
    CHECK(std::memcmp(r.data, f8, 4) == 0);
  }
  CHECK(f.at("f8a").type == dtype::f8_e4m3);
  CHECK(f.at("f8b").type == dtype::f8_e5m2);
  CHECK(f.values<std::int16_t>("i16") == std::vector<std::int16_t>{0x0201, 0x0403});  // little-endian
}

TEST_CASE("safetensors write and read a file", "[safetensors]") {
  tensor<float, 2> t({4, 3});
  for (float& v : t) v = qlib_test::rand_float(-1, 1);
  io::safetensors_writer w;
  w.add("w", t);
  w.set_metadata("format", "pt");
  const std::string path = temp_path("rw.safetensors");
  w.write(path);
  {
    std::ifstream in(path, std::ios::binary);
    const bytes_t on_disk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(on_disk == w.to_bytes());  // write() streams what to_bytes() assembles
  }
  const io::safetensors_file f = io::safetensors_file::read(path);
  require_same(f.get<float, 2>("w"), t.cview());
  CHECK(f.names() == std::vector<std::string>{"w"});
  CHECK(f.metadata().at("format") == "pt");
  std::remove(path.c_str());

  QLIB_REQUIRE_ERROR(io::safetensors_file::read("/nonexistent/x.safetensors"), errc::io_error);
  QLIB_REQUIRE_ERROR(io::safetensors_file::read("/tmp"), errc::io_error);  // a directory
  QLIB_REQUIRE_ERROR(w.write("/nonexistent/dir/x.safetensors"), errc::io_error);
}

TEST_CASE("safetensors API misuse is refused", "[safetensors][errors]") {
  io::safetensors_writer w;
  tensor<float, 2> a({2, 2}, 1.0f);
  w.add("a", a);
  w.add_raw("flags", dtype::boolean, {3}, "\x00\x01\x02", 3);  // 2 is not a valid BOOL byte
  const io::safetensors_file f = parse(w.to_bytes());
  QLIB_REQUIRE_ERROR(f.at("missing"), errc::out_of_range);
  QLIB_REQUIRE_ERROR(f.raw("missing"), errc::out_of_range);
  QLIB_REQUIRE_ERROR((f.get<double, 2>("a")), errc::invalid_argument);
  QLIB_REQUIRE_ERROR((f.get<std::int32_t, 2>("a")), errc::invalid_argument);
  QLIB_REQUIRE_ERROR((f.get<float, 3>("a")), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR((f.get<float, 1>("a")), errc::shape_mismatch);
  QLIB_REQUIRE_ERROR(f.values<std::uint32_t>("a"), errc::invalid_argument);
  QLIB_REQUIRE_ERROR((f.get<bool, 1>("flags")), errc::io_error);
  QLIB_REQUIRE_ERROR(f.values<bool>("flags"), errc::io_error);
  CHECK(f.raw("flags").size == 3);

  QLIB_REQUIRE_ERROR(w.add("a", a), errc::invalid_argument);  // duplicate name
  QLIB_REQUIRE_ERROR(w.add_scalar("__metadata__", 1.0f), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(w.add_scalar("bad\xff", 1.0f), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(w.add_scalar("bad\xc0\x80", 1.0f), errc::invalid_argument);  // overlong NUL
  QLIB_REQUIRE_ERROR(w.add_raw("r", dtype::f32, {2, 2}, "0123456789abcde", 15), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(w.add_raw("r", dtype::u8, {-1}, "", 0), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(w.add_raw("r", dtype::u8, {2}, nullptr, 2), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(w.add_raw("r", dtype::f64, {INT64_MAX / 4, 4}, "", 0), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(w.set_metadata("k", "\xed\xa0\x80"), errc::invalid_argument);  // encoded surrogate
  CHECK(!w.contains("r"));
  CHECK(w.contains("a"));
}

// --- files written by Python (tests/data/make_safetensors.py) -------------------------------

namespace {
template <class T>
void check_typed(const io::safetensors_file& f, const io::tensor_info& t, const std::vector<std::uint64_t>& bits) {
  const std::vector<T> v = f.values<T>(t.name);
  REQUIRE(v.size() == bits.size());
  bool all = true;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if constexpr (std::is_same<T, bool>::value) all = all && (v[i] == (bits[i] != 0));
    else all = all && bits_of(v[i]) == bits[i];
  }
  CHECK(all);
  // get<T, R> agrees with values<T> (R from the file).
  auto agree = [&](const auto& got) {
    for (std::size_t i = 0; i < v.size(); ++i)
      if (!same_element<T>(got.data()[i], v[i])) return false;
    return true;
  };
  switch (t.rank()) {
    case 1: CHECK(agree(f.get<T, 1>(t.name))); break;
    case 2: CHECK(agree(f.get<T, 2>(t.name))); break;
    case 3: CHECK(agree(f.get<T, 3>(t.name))); break;
    case 4: CHECK(agree(f.get<T, 4>(t.name))); break;
    default: break;
  }
}

void check_tensor(const io::safetensors_file& f, const io::tensor_info& t, const std::vector<std::uint64_t>& bits) {
  switch (t.type) {
    case dtype::f64: check_typed<double>(f, t, bits); break;
    case dtype::f32: check_typed<float>(f, t, bits); break;
    case dtype::f16: check_typed<fp16>(f, t, bits); break;
    case dtype::bf16: check_typed<bf16>(f, t, bits); break;
    case dtype::i64: check_typed<std::int64_t>(f, t, bits); break;
    case dtype::i32: check_typed<std::int32_t>(f, t, bits); break;
    case dtype::i16: check_typed<std::int16_t>(f, t, bits); break;
    case dtype::i8: check_typed<std::int8_t>(f, t, bits); break;
    case dtype::u64: check_typed<std::uint64_t>(f, t, bits); break;
    case dtype::u32: check_typed<std::uint32_t>(f, t, bits); break;
    case dtype::u16: check_typed<std::uint16_t>(f, t, bits); break;
    case dtype::u8: check_typed<std::uint8_t>(f, t, bits); break;
    case dtype::boolean: check_typed<bool>(f, t, bits); break;
    case dtype::f8_e4m3:
    case dtype::f8_e5m2: {
      const io::byte_span r = f.raw(t.name);
      REQUIRE(r.size == bits.size());
      for (std::size_t i = 0; i < r.size; ++i) CHECK(r.data[i] == bits[i]);
      break;
    }
  }
}
}  // namespace

TEST_CASE("safetensors reads files written by Python", "[safetensors][python]") {
  const std::string dir = std::string(QLIB_TEST_DATA_DIR) + "/safetensors/";
  std::ifstream in(dir + "expected.txt");
  REQUIRE(in.good());
  std::map<std::string, std::vector<std::string>> order;  // tensor names per file, header order
  std::map<std::string, std::map<std::string, std::string>> meta;
  std::map<std::string, io::safetensors_file> files;
  std::string line;
  int tensors_checked = 0;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string what, file;
    ls >> what >> file;
    if (!files.count(file)) files.emplace(file, io::safetensors_file::read(dir + file));
    const io::safetensors_file& f = files.at(file);
    if (what == "meta") {
      std::string k, v;
      ls >> k >> v;
      meta[file][from_hex(k)] = from_hex(v);
      continue;
    }
    REQUIRE(what == "tensor");
    std::string name, dt, shape_s, hex;
    ls >> name >> dt >> shape_s;
    INFO(file << ": tensor " << name);
    order[file].push_back(name);
    const io::tensor_info& t = f.at(name);
    CHECK(io::dtype_name(t.type) == dt);
    const std::vector<index_t> shape =
        shape_s == "scalar" ? std::vector<index_t>{} : qlib_test::parse_list<index_t>(shape_s, ',');
    CHECK(t.shape == shape);
    std::vector<std::uint64_t> bits;
    while (ls >> hex) bits.push_back(std::stoull(hex, nullptr, 16));
    REQUIRE(static_cast<index_t>(bits.size()) == t.numel());
    check_tensor(f, t, bits);
    ++tensors_checked;
  }
  REQUIRE(files.size() == 2);
  CHECK(tensors_checked == 26);
  for (const auto& kv : files) {
    INFO("file " << kv.first);
    CHECK(kv.second.names() == order[kv.first]);
    CHECK(kv.second.metadata() == meta[kv.first]);
  }
  CHECK(files.at("all_dtypes.safetensors").metadata().at("note") == "quote\" backslash\\ tab\t caf\xc3\xa9");
  CHECK(files.at("all_dtypes.safetensors").contains("emoji_\xf0\x9f\x98\x80"));  // from a \ud83d\ude00 escape

  // The float tensors of small_model against the .npy copies numpy wrote of the same values.
  const io::safetensors_file& m = files.at("small_model.safetensors");
  const tensor<float, 2> w1 = read_npy(dir + "small_model.fc1.weight.npy").as_tensor<2>();
  require_same(m.get<float, 2>("fc1.weight"), w1.cview());
  const tensor<float, 1> b1 = read_npy(dir + "small_model.fc1.bias.npy").as_tensor<1>();
  require_same(m.get<float, 1>("fc1.bias"), b1.cview());
  const tensor<float, 2> w2 = read_npy(dir + "small_model.fc2.weight.npy").as_tensor<2>();
  const tensor<fp16, 2> w2h = m.get<fp16, 2>("fc2.weight");
  REQUIRE(w2h.shape() == w2.shape());
  for (index_t i = 0; i < w2.size(); ++i) CHECK(to_float(w2h.data()[i]) == w2.data()[i]);
  const tensor<float, 1> b2 = read_npy(dir + "small_model.fc2.bias.npy").as_tensor<1>();
  const tensor<bf16, 1> b2h = m.get<bf16, 1>("fc2.bias");
  REQUIRE(b2h.size() == b2.size());
  for (index_t i = 0; i < b2.size(); ++i) CHECK(to_float(b2h.data()[i]) == b2.data()[i]);
  CHECK(m.values<std::int64_t>("step") == std::vector<std::int64_t>{123456789012});
}

TEST_CASE("little-endian decoding: byte-wise reference equals the bulk path", "[safetensors]") {
  const std::uint8_t b[] = {1, 2, 3, 4, 5, 6, 7, 8};
  CHECK(io::detail::decode_le<std::uint32_t>(b) == 0x04030201u);
  CHECK(io::detail::decode_le<std::int16_t>(b + 6) == 0x0807);
  CHECK(io::detail::decode_le<std::uint64_t>(b) == 0x0807060504030201ull);
  CHECK(io::detail::decode_le<float>(b) == io::detail::decode_le<float>(b));  // not NaN
  bytes_t raw(8 * 37 + 3);
  for (auto& v : raw) v = static_cast<std::uint8_t>(qlib_test::rand_int(0, 255));
  // Unaligned sources (offset 1 and 3) too.
  for (std::size_t off : {0, 1, 3}) {
    std::vector<std::uint64_t> ref(37), bulk(37);
    io::detail::decode_le_array_ref(raw.data() + off, 37, ref.data());
    io::detail::decode_le_array(raw.data() + off, 37, bulk.data());
    CHECK(ref == bulk);
    std::vector<fp16> rh(64), bh(64);
    io::detail::decode_le_array_ref(raw.data() + off, 64, rh.data());
    io::detail::decode_le_array(raw.data() + off, 64, bh.data());
    for (int i = 0; i < 64; ++i) CHECK(rh[static_cast<std::size_t>(i)].bits() == bh[static_cast<std::size_t>(i)].bits());
    CHECK(rh[0].bits() == (raw[off] | (raw[off + 1] << 8)));
  }
}

// --- malformed files ---------------------------------------------------------------------------

namespace {
// A valid file: "a" F32 [2,2] at [0,16], "b" I8 [3] at [16,19]; 19 data bytes.
const std::string good_header =
    R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"I8","shape":[3],"data_offsets":[16,19]}})";
std::string with_b(const std::string& b_entry) {
  return R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":)" + b_entry + "}";
}
}  // namespace

TEST_CASE("safetensors accepts the valid corner cases", "[safetensors]") {
  const io::safetensors_file f = parse(make_file(good_header, 19));
  CHECK(f.names() == std::vector<std::string>{"a", "b"});
  // make_file's data byte i is i * 7 + 1; "b" holds bytes 16..18.
  CHECK(f.values<std::int8_t>("b") == std::vector<std::int8_t>{static_cast<std::int8_t>(16 * 7 + 1),
                                                               static_cast<std::int8_t>(17 * 7 + 1),
                                                               static_cast<std::int8_t>(18 * 7 + 1)});
  CHECK(parse(make_file("{}", 0)).size() == 0);
  CHECK(parse(make_file(R"({"__metadata__":{}})", 0)).metadata().empty());
  CHECK(parse(make_file(good_header + "        ", 19)).size() == 2);  // space padding
  // JSON whitespace inside the object, escaped keys and values, metadata anywhere.
  const io::safetensors_file g = parse(make_file(
      "{ \"\\u0061\" :\t{\"shape\" : [ 2 , 2 ],\r\n \"data_offsets\":[0,16], \"dtype\":\"F32\"},\n"
      "\"__metadata__\":{\"k\\/\":\"\\u00e9\\ud83d\\ude00\"},"
      "\"b\":{\"dtype\":\"I8\",\"shape\":[3],\"data_offsets\":[16,19]},"
      "\"e\":{\"dtype\":\"F64\",\"shape\":[0,5],\"data_offsets\":[19,19]},"
      "\"e0\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}",
      19));
  CHECK(g.contains("a"));
  CHECK(g.metadata().at("k/") == "\xc3\xa9\xf0\x9f\x98\x80");
  CHECK(g.at("e").nbytes() == 0);
  CHECK(g.get<double, 2>("e").shape() == extents<2>{0, 5});
  CHECK(g.values<std::uint8_t>("e0").empty());
}

TEST_CASE("safetensors refuses truncated files and bad header lengths", "[safetensors][errors]") {
  const bytes_t good = make_file(good_header, 19);
  REQUIRE(parse(good).size() == 2);
  for (std::size_t n : {0, 1, 7}) refuse(bytes_t(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n)), "shorter than the 8-byte");
  refuse(bytes_t(good.begin(), good.begin() + 8 + static_cast<std::ptrdiff_t>(good_header.size()) - 1), "exceeds the");
  refuse(bytes_t(good.begin(), good.end() - 1), "\"b\": data_offsets [16,19] reach past the 18-byte");
  refuse(bytes_t(good.begin(), good.begin() + 8 + static_cast<std::ptrdiff_t>(good_header.size())), "reach past the 0-byte");
  refuse(make_file(good_header, 19, std::uint64_t{1} << 63), "100 MB");
  refuse(make_file(good_header, 19, ~std::uint64_t{0}), "100 MB");
  refuse(make_file(good_header, 19, 100000001), "100 MB");
  refuse(make_file(good_header, 19, good_header.size() + 20), "exceeds the");
  refuse(make_file(good_header, 19, 0), "does not start with '{'");
  refuse(make_file(good_header, 19, good_header.size() - 1), "malformed JSON");  // cut before the last '}'
  refuse(make_file(" " + good_header, 19), "does not start with '{'");
  refuse(make_file("[" + good_header + "]", 19), "does not start with '{'");
}

TEST_CASE("safetensors refuses invalid JSON", "[safetensors][errors]") {
  const char* cases[] = {
      "{",
      "{\"a\"}",
      "{\"a\":}",
      "{\"a\" {}}",
      "{,}",
      "{a:{}}",
      "{'a':{}}",
      "{\"a\":{},}",
      "{\"a\":{\"dtype\":\"F32\",}}",
      "{\"a\":{\"shape\":[1,]}}",
      "{\"a\":{\"shape\":[,1]}}",
      "{\"a\":{\"shape\":[1 2]}}",
      "{\"a",
      "{\"a\\x\":{}}",
      "{\"\\ud800\":{}}",
      "{\"\\udc00\":{}}",
      "{\"\\ud800\\u0041\":{}}",
      "{\"\\u12\":{}}",
      "{\"\\u12g4\":{}}",
      "{\"\xff\":{}}",
      "{\"\xc0\x80\":{}}",
      "{\"\xed\xa0\x80\":{}}",
      "{\"\xf4\x90\x80\x80\":{}}",
      "{\"\xe2\x82\":{}}",
      "{\"\x80\":{}}",
      "{\"a\x01\":{}}",
      "{\"a\nb\":{}}",
      "{\"a\":{\"shape\":[02]}}",
      "{\"a\":{\"shape\":[+2]}}",
      "{\"a\":{\"shape\":[-]}}",
      "{\"a\":{\"shape\":[2.0]}}",
      "{\"a\":{\"shape\":[2e0]}}",
      "{\"a\":{\"shape\":[true]}}",
      "{\"a\":{\"shape\":[null]}}",
      "{\"a\":{\"shape\":[NaN]}}",
      "{\"a\":{\"shape\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}",
      "{\"a\":{\"data_offsets\":[0,18446744073709551616]}}",
      "{\"a\":{\"data_offsets\":[0,9223372036854775808]}}",
      "{\"a\":{\"data_offsets\":[-9223372036854775809,0]}}",
      "{/*c*/}",
  };
  for (const char* h : cases) refuse(h, 0, "malformed JSON");
  // After the object only spaces may follow (the spec's padding).
  refuse(good_header + "x", 19, "only space padding");
  refuse(good_header + "\n", 19, "only space padding");
  refuse(good_header + "  \t", 19, "only space padding");
  refuse(good_header + std::string(1, '\0'), 19, "only space padding");
  refuse(good_header + "{}", 19, "only space padding");
}

TEST_CASE("safetensors refuses fields of the wrong type", "[safetensors][errors]") {
  refuse(with_b("[1]"), 19, "tensor \"b\" is an array, not an object");
  refuse(with_b("\"x\""), 19, "tensor \"b\" is a string");
  refuse(with_b("3"), 19, "tensor \"b\" is an integer");
  refuse(with_b(R"({"dtype":8,"shape":[3],"data_offsets":[16,19]})"), 19, "\"b\": dtype is an integer");
  refuse(with_b(R"({"dtype":"I8","shape":"3","data_offsets":[16,19]})"), 19, "\"b\": shape is a string");
  refuse(with_b(R"({"dtype":"I8","shape":{},"data_offsets":[16,19]})"), 19, "\"b\": shape is an object");
  refuse(with_b(R"({"dtype":"I8","shape":["3"],"data_offsets":[16,19]})"), 19, "\"b\": shape entry 0 is a string");
  refuse(with_b(R"({"dtype":"I8","shape":[1,[3]],"data_offsets":[16,19]})"), 19, "\"b\": shape entry 1 is an array");
  refuse(with_b(R"({"dtype":"I8","shape":[3],"data_offsets":[16]})"), 19, "\"b\": data_offsets must be");
  refuse(with_b(R"({"dtype":"I8","shape":[3],"data_offsets":[16,19,19]})"), 19, "\"b\": data_offsets must be");
  refuse(with_b(R"({"dtype":"I8","shape":[3],"data_offsets":"16,19"})"), 19, "\"b\": data_offsets must be");
  refuse(with_b(R"({"dtype":"I8","shape":[3],"data_offsets":[16,"19"]})"), 19, "\"b\": data_offsets entry 1 is a string");
  refuse(with_b(R"({"shape":[3],"data_offsets":[16,19]})"), 19, "\"b\" has no dtype");
  refuse(with_b(R"({"dtype":"I8","data_offsets":[16,19]})"), 19, "\"b\" has no shape");
  refuse(with_b(R"({"dtype":"I8","shape":[3]})"), 19, "\"b\" has no data_offsets");
  refuse(with_b(R"({"dtype":"I8","shape":[3],"data_offsets":[16,19],"extra":1})"), 19, "\"b\" has unknown field \"extra\"");
  for (const char* dt : {"F17", "f32", "", "FLOAT32", "Q4_0", "F32 ", "BOOL\\u0000"})
    refuse(with_b(std::string(R"({"dtype":")") + dt + R"(","shape":[3],"data_offsets":[16,19]})"), 19,
           "\"b\": unknown dtype");
}

TEST_CASE("safetensors refuses inconsistent shapes and offsets", "[safetensors][errors]") {
  auto b = [](const std::string& dt, const std::string& shape, const std::string& offsets) {
    return with_b(R"({"dtype":")" + dt + R"(","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}");
  };
  refuse(b("I8", "[-3]", "[16,19]"), 19, "\"b\": shape entry 0 is negative");
  refuse(b("I8", "[1,-1,-3]", "[16,19]"), 19, "\"b\": shape entry 1 is negative");
  refuse(b("I8", "[4]", "[16,19]"), 19, "\"b\": data_offsets [16,19] span 3 bytes but shape [4] of I8 needs 4");
  refuse(b("I8", "[]", "[16,19]"), 19, "span 3 bytes but shape [] of I8 needs 1");
  refuse(b("I16", "[3]", "[16,19]"), 19, "span 3 bytes but shape [3] of I16 needs 6");
  refuse(b("I8", "[3,0]", "[16,19]"), 19, "needs 0");
  // Element counts and byte counts that overflow 64 bits, wherever a zero stands.
  refuse(b("I8", "[4294967296,4294967296]", "[16,19]"), 19, "\"b\": shape [4294967296,4294967296] has more elements");
  refuse(b("I8", "[9223372036854775807,2]", "[16,19]"), 19, "has more elements");
  refuse(b("I8", "[0,4611686018427387904,4]", "[16,16]"), 19, "has more elements");
  refuse(b("I8", "[4611686018427387904,4,0]", "[16,16]"), 19, "has more elements");
  refuse(b("F64", "[4611686018427387904]", "[16,19]"), 19, "\"b\": shape [4611686018427387904] of F64 has a byte count that overflows");
  refuse(b("I8", "[9223372036854775807]", "[16,19]"), 19, "needs 9223372036854775807");
  // Offsets.
  refuse(b("I8", "[3]", "[16,1000]"), 19, "\"b\": data_offsets [16,1000] reach past the 19-byte data buffer");
  refuse(b("I8", "[3]", "[9223372036854775804,9223372036854775807]"), 19, "reach past");
  refuse(b("I8", "[0]", "[17,16]"), 19, "\"b\": data_offsets [17,16] begin after they end");
  refuse(b("I8", "[3]", "[-1,2]"), 19, "\"b\": data_offsets entry 0 is negative");
  refuse(b("I8", "[3]", "[16,-19]"), 19, "\"b\": data_offsets entry 1 is negative");
}

TEST_CASE("safetensors refuses overlaps, holes and duplicates", "[safetensors][errors]") {
  auto b = [](const std::string& shape, const std::string& offsets) {
    return with_b(R"({"dtype":"I8","shape":)" + shape + R"(,"data_offsets":)" + offsets + "}");
  };
  refuse(b("[3]", "[15,18]"), 18, "tensors \"a\" and \"b\" overlap");
  refuse(b("[16]", "[0,16]"), 16, "overlap");            // the same bytes twice
  refuse(b("[0]", "[8,8]"), 16, "overlap");              // an empty tensor inside another
  refuse(b("[3]", "[17,20]"), 20, "data bytes [16,17) belong to no tensor (a hole before tensor \"b\")");
  refuse(b("[3]", "[16,19]"), 20, "data bytes [19,20) after the last tensor belong to no tensor");
  refuse(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[1,17]}})", 17, "data bytes [0,1)");
  refuse(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", 4, "after the last tensor");
  refuse("{}", 1, "after the last tensor");
  refuse(R"({"__metadata__":{}})", 8, "after the last tensor");
  // Duplicate keys at every level.
  refuse(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}})",
         2, "duplicate key \"a\"");
  refuse(with_b(R"({"dtype":"I8","dtype":"I8","shape":[3],"data_offsets":[16,19]})"), 19, "duplicate key \"dtype\"");
  refuse(R"({"__metadata__":{"k":"1","k":"2"}})", 0, "duplicate key \"k\"");
  refuse(R"({"__metadata__":{},"__metadata__":{}})", 0, "duplicate key \"__metadata__\"");
  // Keys equal after unescaping are duplicates too.
  refuse(R"({"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]},"\u0061":{"dtype":"I8","shape":[1],"data_offsets":[1,2]}})",
         2, "duplicate key \"a\"");
}

TEST_CASE("safetensors refuses metadata that is not an object of strings", "[safetensors][errors]") {
  refuse(R"({"__metadata__":{"k":1}})", 0, "__metadata__ value of \"k\" is an integer, not a string");
  refuse(R"({"__metadata__":{"ok":"v","k":[]}})", 0, "__metadata__ value of \"k\" is an array");
  refuse(R"({"__metadata__":{"k":{}}})", 0, "__metadata__ value of \"k\" is an object");
  refuse(R"({"__metadata__":"pt"})", 0, "__metadata__ is a string, not an object");
  refuse(R"({"__metadata__":["pt"]})", 0, "__metadata__ is an array");
  refuse(R"({"__metadata__":{"k":true}})", 0, "malformed JSON");
}

#if QLIB_EXCEPTIONS
TEST_CASE("safetensors: corrupted files are refused or read, never read out of bounds", "[safetensors][errors]") {
  // Random byte flips and truncations of valid files: each is either accepted (and then
  // every tensor lies inside the file) or refused with io_error. ASan checks the rest.
  io::safetensors_writer w;
  tensor<float, 2> a({3, 2}, 1.5f);
  tensor<std::int16_t, 1> b({4}, std::int16_t{-3});
  w.add("a", a);
  w.add("b", b);
  w.add_scalar("s", true);
  w.set_metadata("format", "pt");
  const bytes_t good = w.to_bytes();
  int accepted = 0, refused = 0;
  for (int iter = 0; iter < 3000; ++iter) {
    bytes_t m = good;
    const int flips = qlib_test::rand_int(1, 3);
    for (int k = 0; k < flips; ++k) {
      const auto at = static_cast<std::size_t>(qlib_test::rand_int(0, static_cast<int>(m.size()) - 1));
      m[at] = static_cast<std::uint8_t>(qlib_test::rand_int(0, 255));
    }
    if (qlib_test::rand_int(0, 3) == 0) m.resize(static_cast<std::size_t>(qlib_test::rand_int(0, static_cast<int>(m.size()))));
    try {
      const io::safetensors_file f = parse(m);
      for (const auto& t : f.tensors()) {
        const io::byte_span r = f.raw(t.name);
        CHECK(static_cast<std::size_t>(t.numel()) * io::dtype_size(t.type) == r.size);
        unsigned sum = 0;  // touch every byte: ASan flags any span outside the file
        for (std::size_t i = 0; i < r.size; ++i) sum += r.data[i];
        (void)sum;
      }
      ++accepted;
    } catch (const qlib::error& e) {
      CHECK(e.code() == errc::io_error);
      ++refused;
    }
  }
  CHECK(accepted > 0);  // flips in tensor data leave the file valid
  CHECK(refused > 0);
}
#endif

// --- json_lite ---------------------------------------------------------------------------------

TEST_CASE("json_lite parses the supported subset exactly", "[json]") {
  const io::json::value v = io::json::parse(
      " {\"i\": [0, -0, 9223372036854775807, -9223372036854775808, 12], \"s\": \"a\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0000\\u00e9\\u20ac\\ud83d\\ude00\","
      " \"o\": {\"x\": {}}, \"e\": []} \n");
  REQUIRE(v.is(io::json::kind::object));
  CHECK(v.keys() == std::vector<std::string>{"i", "s", "o", "e"});
  const auto& ints = v.find("i")->items();
  REQUIRE(ints.size() == 5);
  CHECK(ints[0].as_integer() == 0);
  CHECK(ints[1].as_integer() == 0);
  CHECK(ints[2].as_integer() == INT64_MAX);
  CHECK(ints[3].as_integer() == INT64_MIN);
  CHECK(ints[4].as_integer() == 12);
  CHECK(v.find("s")->as_string() == std::string("a\"\\/\b\f\n\r\t\0\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 19));
  CHECK(v.find("o")->find("x")->keys().empty());
  CHECK(v.find("e")->items().empty());
  CHECK(v.find("missing") == nullptr);
  QLIB_REQUIRE_ERROR(v.as_string(), errc::invalid_argument);  // wrong kind
  QLIB_REQUIRE_ERROR(ints[0].keys(), errc::invalid_argument);

  QLIB_REQUIRE_ERROR(io::json::parse("9223372036854775808"), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(io::json::parse("{} x"), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(io::json::parse(""), errc::invalid_argument);
  QLIB_REQUIRE_ERROR(io::json::parse("[[[1]]]", errc::io_error, 2), errc::io_error);  // depth limit
  CHECK(io::json::parse("[[[1]]]", errc::io_error, 3).items()[0].items()[0].items()[0].as_integer() == 1);
  std::size_t end = 0;
  CHECK(io::json::parse_prefix(" [1] tail", end).items().size() == 1);
  CHECK(end == 4);
}

TEST_CASE("json_lite string writer round-trips every byte string that is UTF-8", "[json]") {
  std::string all;
  for (int c = 0; c < 128; ++c) all += static_cast<char>(c);
  all += "\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf";
  REQUIRE(io::json::valid_utf8(all));
  std::string lit;
  io::json::append_string(lit, all);
  for (char c : lit) CHECK(static_cast<unsigned char>(c) >= 0x20);  // control characters escaped
  CHECK(io::json::parse(lit).as_string() == all);
  for (const char* bad : {"\x80", "\xc1\xbf", "\xe0\x9f\xbf", "\xed\xa0\x80", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80",
                          "\xf5\x80\x80\x80", "\xe2\x82", "\xc3(", "\xfe", "\xff"})
    CHECK_FALSE(io::json::valid_utf8(bad));
}
