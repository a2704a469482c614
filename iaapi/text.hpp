#pragma once
// Text from outside (DPAT, programs, requests) cut for messages without
// breaking its UTF-8: a JSON answer or result that carries it stays valid.
#include <string>
#include <string_view>

namespace iaserve::iaapi {

// The longest prefix of s of at most n bytes that ends between characters.
inline std::string_view utf8_prefix(std::string_view s, std::size_t n) {
  if (s.size() <= n) return s;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;  // s[n]: a continuation byte
  return s.substr(0, n);
}

// The length of the well-formed UTF-8 sequence at s[i] (no overlong forms,
// no surrogates, nothing above U+10FFFF); 0 when there is none.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  const unsigned char c = b(0);
  if (c < 0x80) return 1;
  const std::size_t left = s.size() - i;
  auto cont = [&](std::size_t k) { return k < left && (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    if ((c == 0xE0 && b(1) < 0xA0) || (c == 0xED && b(1) > 0x9F)) return 0;  // overlong; surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if ((c == 0xF0 && b(1) < 0x90) || (c == 0xF4 && b(1) > 0x8F)) return 0;  // overlong; above U+10FFFF
    return 4;
  }
  return 0;
}

// s with each byte that begins no well-formed UTF-8 sequence replaced by
// U+FFFD: text from outside (a program's stderr, a proxy's error page) made
// fit for JSON, whose readers refuse the rest. s itself when already fit.
inline std::string valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) break;
    i += n;
  }
  if (i == s.size()) return std::string(s);
  std::string out(s.substr(0, i));
  while (i < s.size()) {
    const std::size_t n = utf8_sequence(s, i);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

// utf8_prefix, made valid_utf8, with "..." when something was cut.
inline std::string clip_utf8(std::string_view s, std::size_t n) {
  if (s.size() <= n) return valid_utf8(s);
  return valid_utf8(utf8_prefix(s, n)) + "...";
}

}  // namespace iaserve::iaapi
