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

// utf8_prefix, with "..." when something was cut.
inline std::string clip_utf8(std::string_view s, std::size_t n) {
  if (s.size() <= n) return std::string(s);
  return std::string(utf8_prefix(s, n)) + "...";
}

}  // namespace iaserve::iaapi
