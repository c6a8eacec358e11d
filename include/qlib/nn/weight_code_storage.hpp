// How a model file stores a layer's int8 weight codes: dense, sparse (mask + kept codes) or packed b bits wide.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "qlib/core/packed_bits.hpp"
#include "qlib/io/safetensors.hpp"
#include "qlib/nn/quantized_weights.hpp"

// The tensors and their layout are documented with the whole file format in
// nn/quantized_io.hpp; this header writes and reads the "<i>.weight*" code tensors.
namespace qlib {
namespace nn {
namespace detail {

// The zero point of row (output channel) `row` of w.
inline std::int32_t weight_zero_point(const quant_params& params, index_t row) {
  return params.zero_point[params.size() == 1 ? 0 : static_cast<std::size_t>(row)];
}

inline void write_weight_shape(io::safetensors_writer& wr, const std::string& p,
                               const tensor_view<const std::int8_t, 4>& shaped) {
  tensor<std::int64_t, 1> shape(extents<1>{4});
  for (std::size_t d = 0; d < 4; ++d) shape(static_cast<index_t>(d)) = shaped.shape(d);
  wr.add(p + "weight_shape", shape);
}

// "<p>weight_int<b>": the name of codes packed b bits wide; "<p>weight_values_int<b>":
// of kept codes (sparse storage) packed b bits wide.
inline std::string packed_weight_name(const std::string& p, int bits) { return p + "weight_int" + std::to_string(bits); }
inline std::string packed_values_name(const std::string& p, int bits) {
  return p + "weight_values_int" + std::to_string(bits);
}

// What sparse storage keeps: the codes that differ from their channel's zero point, and
// the narrowest width (2-8 bits) that holds them.
struct kept_codes {
  index_t count = 0;
  int bits = 2;
};
inline kept_codes count_kept_codes(const quantized_weights& w, index_t rows, index_t per_row) {
  kept_codes k;
  int lo = 0, hi = 0;
  for (index_t r = 0; r < rows; ++r) {
    const std::int32_t z = weight_zero_point(w.params, r);
    for (index_t j = 0; j < per_row; ++j) {
      const std::int8_t c = w.values.data()[r * per_row + j];
      if (c == z) continue;
      ++k.count;
      lo = std::min<int>(lo, c);
      hi = std::max<int>(hi, c);
    }
  }
  k.bits = k.count == 0 ? 8 : signed_bits_for_range(lo, hi);  // nothing to pack: keep format /2
  return k;
}

// Bytes of the kept codes: one byte each, or packed when they fit fewer than 8 bits.
inline index_t kept_code_bytes(const kept_codes& k) {
  return k.bits < 8 ? packed_bits_row_bytes(k.count, k.bits) : k.count;
}

inline void write_sparse_codes(io::safetensors_writer& wr, const std::string& p, const quantized_weights& w,
                               index_t rows, index_t per_row, const kept_codes& kept) {
  const index_t n = rows * per_row;
  tensor<std::uint8_t, 1> mask(extents<1>{(n + 7) / 8});
  tensor<std::int8_t, 1> values(extents<1>{kept.count});
  for (auto& b : mask) b = 0;
  index_t t = 0;
  for (index_t r = 0; r < rows; ++r) {
    const std::int32_t z = weight_zero_point(w.params, r);
    for (index_t j = 0; j < per_row; ++j) {
      const index_t at = r * per_row + j;
      const std::int8_t c = w.values.data()[at];
      if (c == z) continue;
      mask(at / 8) = static_cast<std::uint8_t>(mask(at / 8) | (1u << (at % 8)));
      values(t++) = c;
    }
  }
  wr.add(p + "weight_mask", mask);
  if (kept.bits == 8) {
    wr.add(p + "weight_values", values);
  } else {
    tensor<std::uint8_t, 1> packed(extents<1>{kept_code_bytes(kept)});
    pack_bits_row(values.data(), kept.count, kept.bits, packed.data());
    wr.add(packed_values_name(p, kept.bits), packed);
  }
}


inline void write_packed_codes(io::safetensors_writer& wr, const std::string& p, const quantized_weights& w,
                               index_t rows, index_t per_row, int bits) {
  const index_t row_bytes = packed_bits_row_bytes(per_row, bits);
  tensor<std::uint8_t, 2> bytes(extents<2>{rows, row_bytes});
  for (index_t r = 0; r < rows; ++r) pack_bits_row(w.values.data() + r * per_row, per_row, bits, bytes.data() + r * row_bytes);
  wr.add(packed_weight_name(p, bits), bytes);
}

// Writes layer p's int8 codes (`shaped`: the [out, kh, kw, in/groups] view of w.values):
// dense, or with `choose` the fewest bytes of dense, sparse and packed (ties: dense before
// either, packed before sparse). Returns the format version they need (1, 2 or 3).
inline int write_weight_codes(io::safetensors_writer& wr, const std::string& p, const quantized_weights& w,
                              const tensor_view<const std::int8_t, 4>& shaped, bool choose) {
  QLIB_ASSERT(shaped.size() == w.values.size());
  const index_t rows = shaped.shape(0), n = shaped.size(), per_row = rows > 0 ? n / rows : 0;
  if (choose) {
    const kept_codes kept = count_kept_codes(w, rows, per_row);
    const index_t sparse_bytes = kept_code_bytes(kept) + (n + 7) / 8;
    const int bits = narrowest_signed_bits(w.values.data(), n);
    const index_t packed_size = rows * packed_bits_row_bytes(per_row, bits);
    if (packed_size < n && packed_size <= sparse_bytes) {
      write_weight_shape(wr, p, shaped);
      write_packed_codes(wr, p, w, rows, per_row, bits);
      return 3;
    }
    if (sparse_bytes < n) {
      write_weight_shape(wr, p, shaped);
      write_sparse_codes(wr, p, w, rows, per_row, kept);
      return kept.bits < 8 ? 3 : 2;
    }
  }
  wr.add(p + "weight", shaped);
  return 1;
}

// How layer p's codes are stored in a file of format version `version`: dense, sparse
// (kept codes one byte each or packed b bits wide) or packed b bits wide (b in 2..7);
// exactly one way, and one the version allows.
struct code_layout {
  enum kind_t { dense, sparse, packed } kind = dense;
  int bits = 8;  // packed: the width of the codes; sparse: of the kept codes (8: I8)
};
inline code_layout stored_code_layout(const io::safetensors_file& f, const std::string& p, int version) {
  const bool dense = f.contains(p + "weight");
  int packed = 0, packed_bits = 8, values = f.contains(p + "weight_values") ? 1 : 0, values_bits = 8;
  for (int b = 2; b <= 7; ++b) {
    if (f.contains(packed_weight_name(p, b))) ++packed, packed_bits = b;
    if (f.contains(packed_values_name(p, b))) ++values, values_bits = b;
  }
  const bool sparse = f.contains(p + "weight_mask") || values > 0;
  QLIB_CHECK(!sparse || version >= 2, errc::invalid_argument,
             "quantized model: " + p + "weight is stored sparse, which format quantized_sequential/1 does not allow");
  QLIB_CHECK((packed == 0 && values_bits == 8) || version >= 3, errc::invalid_argument,
             "quantized model: " + p + "weight is stored packed, which formats quantized_sequential/1 and /2 do not allow");
  QLIB_CHECK(int(dense) + int(sparse) + packed <= 1 && values <= 1 && !(dense && f.contains(p + "weight_shape")),
             errc::invalid_argument,
             "quantized model: " + p + "weight is stored in more than one way (dense, sparse, packed)");
  if (packed) return {code_layout::packed, packed_bits};
  // weight_shape without the rest reads as sparse, which then reports the missing mask.
  if (sparse || (!dense && f.contains(p + "weight_shape"))) return {code_layout::sparse, values_bits};
  return {code_layout::dense, 8};
}

// The dense shape of layer p's weights: "<p>weight"'s shape, or "<p>weight_shape" when
// the codes are stored sparse or packed.
inline std::vector<index_t> weight_shape(const io::safetensors_file& f, const std::string& p, code_layout layout) {
  if (layout.kind == code_layout::dense) return f.at(p + "weight").shape;
  const std::vector<std::int64_t> s = f.values<std::int64_t>(p + "weight_shape");
  QLIB_CHECK(s.size() == 4 && f.at(p + "weight_shape").rank() == 1, errc::shape_mismatch,
             "quantized model: " + p + "weight_shape must hold 4 extents");
  // Extents of at most 2^31 and at most PTRDIFF_MAX / 8 codes in all, so the sizes
  // derived from them (mask bytes, packed rows) fit index_t.
  std::vector<index_t> shape;
  index_t n = 1;
  for (std::int64_t e : s) {
    QLIB_CHECK(e > 0 && e <= (std::int64_t{1} << 31) && n <= PTRDIFF_MAX / 8 / e, errc::invalid_argument,
               "quantized model: " + p + "weight_shape holds " + std::to_string(e));
    n *= static_cast<index_t>(e);
    shape.push_back(static_cast<index_t>(e));
  }
  return shape;
}

// The rows x n codes packed `bits` wide in tensor `name`, whose shape must be `shape`
// ([rows, row bytes], or [row bytes] for one row); checked: dtype, shape, zero padding
// bits in every row.
inline std::vector<std::int8_t> read_packed_codes(const io::safetensors_file& f, const std::string& name,
                                                  const std::vector<index_t>& shape, index_t rows, index_t n,
                                                  int bits) {
  const index_t row_bytes = packed_bits_row_bytes(n, bits);
  std::string want;
  for (index_t e : shape) want += (want.empty() ? "" : ", ") + std::to_string(e);
  QLIB_CHECK(f.at(name).type == io::dtype::u8, errc::invalid_argument, "quantized model: " + name + " must be U8");
  QLIB_CHECK(f.at(name).shape == shape, errc::shape_mismatch,
             "quantized model: " + name + " must be [" + want + "] for " + std::to_string(rows) + " x " +
                 std::to_string(n) + " codes of " + std::to_string(bits) + " bits");
  const std::vector<std::uint8_t> bytes = f.values<std::uint8_t>(name);
  std::vector<std::int8_t> codes(static_cast<std::size_t>(rows * n));
  for (index_t r = 0; r < rows; ++r) {
    const std::uint8_t* row = bytes.data() + r * row_bytes;
    QLIB_CHECK(packed_bits_padding_clear(row, n, bits), errc::invalid_argument,
               "quantized model: " + name + " row " + std::to_string(r) + " has padding bits set past its last code");
    unpack_bits_row(row, n, bits, codes.data() + r * n);
  }
  return codes;
}


// The out x k codes of layer p, dense, sparse or packed (weight_shape already checked
// against the layer); a masked-out code is its channel's zero point z (size 1 or out).
inline std::vector<std::int8_t> weight_codes(const io::safetensors_file& f, const std::string& p, code_layout layout,
                                             index_t out, index_t k, const std::vector<std::int32_t>& z) {
  if (layout.kind == code_layout::dense) {
    QLIB_CHECK(f.at(p + "weight").type == io::dtype::i8, errc::invalid_argument,
               "quantized model: " + p + "weight must be I8");
    return f.values<std::int8_t>(p + "weight");
  }
  if (layout.kind == code_layout::packed)
    return read_packed_codes(f, packed_weight_name(p, layout.bits), {out, packed_bits_row_bytes(k, layout.bits)}, out,
                             k, layout.bits);
  const index_t n = out * k;
  QLIB_CHECK(f.at(p + "weight_mask").type == io::dtype::u8, errc::invalid_argument,
             "quantized model: " + p + "weight_mask must be U8");
  const std::vector<std::uint8_t> mask = f.values<std::uint8_t>(p + "weight_mask");
  QLIB_CHECK(f.at(p + "weight_mask").rank() == 1 && static_cast<index_t>(mask.size()) == (n + 7) / 8,
             errc::shape_mismatch,
             "quantized model: " + p + "weight_mask must be [" + std::to_string((n + 7) / 8) + "] for " +
                 std::to_string(n) + " weights");
  QLIB_CHECK(n % 8 == 0 || (mask.back() >> (n % 8)) == 0, errc::invalid_argument,
             "quantized model: " + p + "weight_mask has bits set past the last weight");
  index_t set = 0;
  for (std::uint8_t b : mask) set += __builtin_popcount(b);
  std::vector<std::int8_t> kept;
  if (layout.bits == 8) {
    QLIB_CHECK(f.at(p + "weight_values").type == io::dtype::i8, errc::invalid_argument,
               "quantized model: " + p + "weight_values must be I8");
    kept = f.values<std::int8_t>(p + "weight_values");
    QLIB_CHECK(f.at(p + "weight_values").rank() == 1 && static_cast<index_t>(kept.size()) == set, errc::shape_mismatch,
               "quantized model: " + p + "weight_values holds " + std::to_string(kept.size()) + " codes, the mask " +
                   std::to_string(set));
  } else {  // one packed row of `set` codes
    kept = read_packed_codes(f, packed_values_name(p, layout.bits), {packed_bits_row_bytes(set, layout.bits)}, 1, set,
                             layout.bits);
  }
  for (std::int32_t zp : z)
    QLIB_CHECK(zp >= -128 && zp <= 127, errc::invalid_argument,
               "quantized model: " + p + "weight_zero_point " + std::to_string(zp) + " is not an int8 code");
  std::vector<std::int8_t> codes(static_cast<std::size_t>(n));
  std::size_t t = 0;
  for (index_t i = 0; i < n; ++i) {
    const auto at = static_cast<std::size_t>(i);
    codes[at] = (mask[at / 8] >> (at % 8)) & 1u ? kept[t++]
                                                 : static_cast<std::int8_t>(z[z.size() == 1 ? 0 : at / static_cast<std::size_t>(k)]);
  }
  return codes;
}

}  // namespace detail
}  // namespace nn
}  // namespace qlib
