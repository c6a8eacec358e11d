// A minimal strict JSON reader and string writer: the subset safetensors headers use.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "qlib/core/error.hpp"

namespace qlib {
namespace io {
namespace json {

// What this reads (RFC 8259, restricted): objects, arrays, strings and integers.
//  - strings: escapes \" \\ \/ \b \f \n \r \t and \uXXXX (surrogate pairs combined, lone
//    surrogates refused); raw bytes must be valid UTF-8 (no overlong forms, no encoded
//    surrogates, nothing above U+10FFFF); control characters must be escaped;
//  - numbers: integers in int64 range only; "1.5", "1e3", leading zeros, "+1" are refused;
//  - true, false and null are refused (safetensors never needs them);
//  - duplicate keys in any object are refused (RFC 8259 leaves them undefined);
//  - nesting deeper than max_depth is refused (no stack exhaustion on "[[[[...").
// Errors are reported through QLIB_CHECK with the caller's errc and the byte offset.

enum class kind { object, array, string, integer };

inline const char* kind_name(kind k) noexcept {
  switch (k) {
    case kind::object: return "an object";
    case kind::array: return "an array";
    case kind::string: return "a string";
    case kind::integer: return "an integer";
  }
  return "?";
}

// One parsed value. Objects keep their members in document order.
class value {
 public:
  kind type() const noexcept { return kind_; }
  bool is(kind k) const noexcept { return kind_ == k; }
  // Byte offset of the value in the parsed text (for error messages).
  std::size_t offset() const noexcept { return offset_; }

  const std::string& as_string() const {
    check(kind::string);
    return str_;
  }
  std::int64_t as_integer() const {
    check(kind::integer);
    return int_;
  }
  // Elements of an array, or member values of an object (parallel to keys()).
  const std::vector<value>& items() const {
    QLIB_CHECK(kind_ == kind::array || kind_ == kind::object, errc::invalid_argument,
               std::string("JSON value is ") + kind_name(kind_) + ", not an array or object");
    return items_;
  }
  // Member names of an object, in document order.
  const std::vector<std::string>& keys() const {
    check(kind::object);
    return keys_;
  }
  // The member named `key` of an object, or nullptr.
  const value* find(std::string_view key) const {
    check(kind::object);
    for (std::size_t i = 0; i < keys_.size(); ++i)
      if (keys_[i] == key) return &items_[i];
    return nullptr;
  }

 private:
  friend class parser;
  void check(kind k) const {
    QLIB_CHECK(kind_ == k, errc::invalid_argument,
               std::string("JSON value is ") + kind_name(kind_) + ", not " + kind_name(k));
  }

  kind kind_ = kind::integer;
  std::size_t offset_ = 0;
  std::int64_t int_ = 0;
  std::string str_;
  std::vector<std::string> keys_;
  std::vector<value> items_;
};

// True when `s` is well-formed UTF-8 (the same rules the parser applies to strings).
inline bool valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // no overlong 3-byte forms
      if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;  // no overlong 4-byte forms
      if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return false;
    }
    if (n - i < len) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return false;
    i += len;
  }
  return true;
}

// Appends `s` as a JSON string literal: quotes, backslashes and control characters
// escaped, other bytes (UTF-8) copied. `s` must be valid UTF-8 (checked by the caller).
inline void append_string(std::string& out, std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  out += '"';
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

// The recursive-descent reader behind parse() and parse_prefix().
class parser {
 public:
  // `context` prefixes error messages (e.g. the file name).
  parser(std::string_view text, errc code, int max_depth, std::string context = "")
      : s_(text), code_(code), max_depth_(max_depth), prefix_(context.empty() ? "" : context + ": ") {}

  // Reads optional whitespace and one value; pos() is then just after the value.
  value parse_value() {
    skip_ws();
    return read_value(0);
  }
  void skip_ws() noexcept {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  std::size_t pos() const noexcept { return i_; }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    raise_error(code_, prefix_ + "malformed JSON at byte " + std::to_string(i_) + ": " + what);
  }
  bool at_end() const noexcept { return i_ >= s_.size(); }
  char peek() const noexcept { return at_end() ? '\0' : s_[i_]; }
  void expect(char c, const char* context) {
    if (at_end() || s_[i_] != c) fail(std::string("expected '") + c + "' " + context);
    ++i_;
  }

  value read_value(int depth) {
    if (depth > max_depth_) fail("nesting deeper than " + std::to_string(max_depth_) + " levels");
    if (at_end()) fail("unexpected end of text, expected a value");
    value v;
    v.offset_ = i_;
    const char c = s_[i_];
    if (c == '{') {
      v.kind_ = kind::object;
      read_object(v, depth);
    } else if (c == '[') {
      v.kind_ = kind::array;
      read_array(v, depth);
    } else if (c == '"') {
      v.kind_ = kind::string;
      v.str_ = read_string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind_ = kind::integer;
      v.int_ = read_integer();
    } else if (c == 't' || c == 'f' || c == 'n') {
      fail("true, false and null are not supported here");
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  // Reads "open close" or "open item (, item)* close"; read_item parses one item.
  template <class F>
  void read_list(char close, const char* context, F&& read_item) {
    ++i_;  // the opening bracket
    skip_ws();
    if (peek() == close) {
      ++i_;
      return;
    }
    for (;;) {
      skip_ws();
      read_item();
      skip_ws();
      if (peek() != ',') break;
      ++i_;
    }
    expect(close, context);
  }

  void read_object(value& v, int depth) {
    read_list('}', "or ',' in object", [&] {
      if (peek() != '"') fail("expected a string key in object");
      v.keys_.push_back(read_string());
      skip_ws();
      expect(':', "after object key");
      skip_ws();
      v.items_.push_back(read_value(depth + 1));
    });
    // Duplicate keys: sort indices by key and compare neighbours.
    std::vector<std::size_t> order(v.keys_.size());
    for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return v.keys_[a] < v.keys_[b]; });
    for (std::size_t k = 1; k < order.size(); ++k)
      if (v.keys_[order[k]] == v.keys_[order[k - 1]])
        raise_error(code_, prefix_ + "malformed JSON: duplicate key \"" + v.keys_[order[k]] +
                               "\" in the object at byte " + std::to_string(v.offset_));
  }

  void read_array(value& v, int depth) {
    read_list(']', "or ',' in array", [&] { v.items_.push_back(read_value(depth + 1)); });
  }

  std::int64_t read_integer() {
    const bool neg = peek() == '-';
    if (neg) ++i_;
    if (at_end() || s_[i_] < '0' || s_[i_] > '9') fail("expected a digit");
    if (s_[i_] == '0' && i_ + 1 < s_.size() && s_[i_ + 1] >= '0' && s_[i_ + 1] <= '9')
      fail("leading zeros are not allowed");
    // Magnitude up to 2^63 (INT64_MIN's); anything larger is refused before it wraps.
    const std::uint64_t limit = neg ? (std::uint64_t{1} << 63) : (std::uint64_t{1} << 63) - 1;
    std::uint64_t m = 0;
    while (!at_end() && s_[i_] >= '0' && s_[i_] <= '9') {
      const auto d = static_cast<std::uint64_t>(s_[i_] - '0');
      if (m > (limit - d) / 10) fail("integer out of the 64-bit range");
      m = m * 10 + d;
      ++i_;
    }
    if (peek() == '.' || peek() == 'e' || peek() == 'E') fail("only integers are supported (no fraction or exponent)");
    if (!neg) return static_cast<std::int64_t>(m);
    return m == (std::uint64_t{1} << 63) ? INT64_MIN : -static_cast<std::int64_t>(m);
  }

  unsigned read_hex4() {
    if (s_.size() - i_ < 4) fail("truncated \\u escape");
    unsigned u = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[i_++];
      u <<= 4;
      if (c >= '0' && c <= '9') u |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') u |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') u |= static_cast<unsigned>(c - 'A' + 10);
      else fail("invalid hex digit in \\u escape");
    }
    return u;
  }

  static void append_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string read_string() {
    ++i_;  // opening quote
    std::string out;
    for (;;) {
      if (at_end()) fail("unterminated string");
      const auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return out;
      }
      if (c < 0x20) fail("unescaped control character in string");
      if (c == '\\') {
        ++i_;
        if (at_end()) fail("unterminated escape");
        const char e = s_[i_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            unsigned cp = read_hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail("lone low surrogate in \\u escape");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (s_.size() - i_ < 2 || s_[i_] != '\\' || s_[i_ + 1] != 'u')
                fail("high surrogate not followed by a low surrogate");
              i_ += 2;
              const unsigned lo = read_hex4();
              if (lo < 0xDC00 || lo > 0xDFFF) fail("high surrogate not followed by a low surrogate");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(out, cp);
            break;
          }
          default: fail(std::string("invalid escape '\\") + e + "'");
        }
        continue;
      }
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++i_;
        continue;
      }
      // A multi-byte UTF-8 sequence: validate exactly its bytes.
      const std::size_t len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
      const std::string_view seq = s_.substr(i_, len);
      if (seq.size() != len || !valid_utf8(seq)) fail("invalid UTF-8 in string");
      out.append(seq.data(), seq.size());
      i_ += len;
    }
  }

  std::string_view s_;
  errc code_;
  int max_depth_;
  std::string prefix_;
  std::size_t i_ = 0;
};

// Parses one value at the start of `text` (after optional whitespace); `end` receives the
// offset just past it, so the caller decides what may follow.
inline value parse_prefix(std::string_view text, std::size_t& end, errc code = errc::invalid_argument,
                          int max_depth = 32, const std::string& context = "") {
  parser p(text, code, max_depth, context);
  value v = p.parse_value();
  end = p.pos();
  return v;
}

// Parses a whole document: one value with only JSON whitespace around it.
inline value parse(std::string_view text, errc code = errc::invalid_argument, int max_depth = 32,
                   const std::string& context = "") {
  parser p(text, code, max_depth, context);
  value v = p.parse_value();
  p.skip_ws();
  QLIB_CHECK(p.pos() == text.size(), code,
             (context.empty() ? "" : context + ": ") + "malformed JSON at byte " + std::to_string(p.pos()) + ": unexpected text after the value");
  return v;
}

}  // namespace json
}  // namespace io
}  // namespace qlib
