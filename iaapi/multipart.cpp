#include "iaapi/multipart.hpp"
#include "iaapi/text.hpp"

#include <algorithm>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace iaserve::iaapi {
namespace {

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string lowered(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = lower(c);
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

// A value shown in an error message: quoted, control bytes escaped, cut at 80.
std::string quote(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : utf8_prefix(s, 80)) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else {
      out += ch;
    }
  }
  if (s.size() > 80) out += "...";
  return out + "\"";
}

std::string show_byte(char ch) {
  return quote(std::string_view(&ch, 1));
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::optional<std::string> PartHeaders::get(std::string_view name) const {
  for (auto& [n, v] : fields)
    if (iequals(n, name)) return v;
  return std::nullopt;
}

MultipartParser::MultipartParser(std::string_view boundary, Callbacks callbacks,
                                 MultipartLimits limits)
    : cb_(std::move(callbacks)), limits_(limits) {
  if (boundary.empty() || boundary.size() > 200)
    throw MultipartError("multipart: boundary must have 1 to 200 characters, got " +
                         std::to_string(boundary.size()));
  delim_ = "\r\n--";
  delim_.append(boundary);
  const std::size_t m = delim_.size();  // <= 204, fits the uint8 shifts
  skip_.fill(static_cast<std::uint8_t>(m));
  for (std::size_t i = 0; i + 1 < m; ++i)
    skip_[static_cast<unsigned char>(delim_[i])] = static_cast<std::uint8_t>(m - 1 - i);
  // The first delimiter may open the body without a CRLF before it: start
  // as if one had just been read.
  held_ = "\r\n";
  held_.reserve(2 * m);
}

void MultipartParser::fail(const std::string& what) {
  state_ = State::failed;
  throw MultipartError(what);
}

// Delimiter search. With SSE2 (every x86-64): test 16 positions at a time
// for the delimiter's first byte (CR) and its last byte together, and
// compare the rest only where both match; on binary slide data that is
// about one candidate per 64 KiB, so the scan runs at memory speed. Without
// SSE2: Horspool, which reads about one byte in delim_.size().
std::size_t MultipartParser::find(const char* p, std::size_t n) const {
  const std::size_t m = delim_.size();
  if (n < m) return n;
  const char* d = delim_.data();
  const char last = d[m - 1];
  std::size_t i = 0;
  const std::size_t end = n - m;  // last possible start
#if defined(__SSE2__)
  const __m128i first_v = _mm_set1_epi8(d[0]);
  const __m128i last_v = _mm_set1_epi8(last);
  auto block = [&](std::size_t at) -> unsigned {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + at + m - 1));
    return static_cast<unsigned>(
        _mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, first_v), _mm_cmpeq_epi8(b, last_v))));
  };
  auto verify = [&](std::size_t at, unsigned mask) -> std::size_t {
    while (mask) {
      const auto bit = static_cast<std::size_t>(__builtin_ctz(mask));
      if (std::memcmp(p + at + bit + 1, d + 1, m - 2) == 0) return at + bit;
      mask &= mask - 1;
    }
    return std::string::npos;
  };
  // Positions i..i+15 need bytes up to i+15+m-1 < n, i.e. i + 16 <= end + 1.
  for (; i + 32 <= end + 1; i += 32) {
    const unsigned m0 = block(i);
    const unsigned m1 = block(i + 16);
    if ((m0 | m1) == 0) continue;
    if (m0) {
      const std::size_t at = verify(i, m0);
      if (at != std::string::npos) return at;
    }
    if (m1) {
      const std::size_t at = verify(i + 16, m1);
      if (at != std::string::npos) return at;
    }
  }
  for (; i + 16 <= end + 1; i += 16) {
    const unsigned m0 = block(i);
    if (m0) {
      const std::size_t at = verify(i, m0);
      if (at != std::string::npos) return at;
    }
  }
  for (; i <= end; ++i)
    if (p[i] == d[0] && p[i + m - 1] == last && std::memcmp(p + i + 1, d + 1, m - 2) == 0) return i;
  return n;
#else
  while (i <= end) {
    const char c = p[i + m - 1];
    if (c == last && std::memcmp(p + i, d, m - 1) == 0) return i;
    i += skip_[static_cast<unsigned char>(c)];
  }
  return n;
#endif
}

std::size_t MultipartParser::partial_suffix(const char* p, std::size_t n) const {
  const std::size_t m = delim_.size();
  for (std::size_t k = std::min(n, m - 1); k > 0; --k) {
    const char* s = p + n - k;
    if (*s == '\r' && std::memcmp(s, delim_.data(), k) == 0) return k;
  }
  return 0;
}

void MultipartParser::emit(const char* p, std::size_t n) {
  if (n == 0) return;
  if (state_ == State::preamble) {
    preamble_ += n;
    if (preamble_ > limits_.max_preamble_bytes)
      fail("multipart: no delimiter " + quote(std::string_view(delim_).substr(2)) +
           " in the first " + std::to_string(limits_.max_preamble_bytes) + " bytes");
    return;
  }
  cb_.on_data(std::span<const char>(p, n));
}

void MultipartParser::on_delimiter() {
  if (in_part_) {
    in_part_ = false;
    if (cb_.on_part_end) cb_.on_part_end();
  }
  state_ = State::after_delimiter;
  padding_ = 0;
}

// Body and preamble: everything up to the next delimiter. A delimiter may be
// split across feeds: the tail that could start one is held back (fewer
// than delim_.size() bytes) and joined with the start of the next feed.
std::size_t MultipartParser::feed_body(const char* p, std::size_t n) {
  const std::size_t m = delim_.size();
  if (!held_.empty()) {
    const std::size_t take = std::min(n, m);
    std::string stitch;
    stitch.reserve(held_.size() + take);
    stitch.append(held_).append(p, take);
    const std::size_t pos = find(stitch.data(), stitch.size());
    if (pos < stitch.size()) {
      const std::size_t consumed = pos + m - held_.size();
      held_.clear();
      emit(stitch.data(), pos);
      on_delimiter();
      return consumed;
    }
    if (take == n) {
      const std::size_t k = partial_suffix(stitch.data(), stitch.size());
      held_.assign(stitch.data() + stitch.size() - k, k);
      emit(stitch.data(), stitch.size() - k);
      return n;
    }
    // A delimiter starting inside held_ would have ended inside the stitch.
    std::string flushed;
    flushed.swap(held_);
    emit(flushed.data(), flushed.size());
  }
  const std::size_t pos = find(p, n);
  if (pos < n) {
    emit(p, pos);
    on_delimiter();
    return pos + m;
  }
  const std::size_t k = partial_suffix(p, n);
  held_.assign(p + n - k, k);
  emit(p, n - k);
  return n;
}

std::size_t MultipartParser::feed_preamble(const char* p, std::size_t n) {
  return feed_body(p, n);
}

std::size_t MultipartParser::feed_after_delimiter(const char* p, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    const char c = p[i];
    switch (state_) {
      case State::after_delimiter:
        if (c == '-') {
          state_ = State::after_dash;
        } else if (c == '\r') {
          state_ = State::after_cr;
        } else if (c == ' ' || c == '\t') {
          state_ = State::padding;
          padding_ = 1;
        } else {
          fail("multipart: unexpected byte " + show_byte(c) + " after delimiter " +
               std::to_string(parts_ + 1) + " (expected CRLF or \"--\")");
        }
        break;
      case State::after_dash:
        if (c != '-')
          fail("multipart: unexpected byte " + show_byte(c) + " after \"-\" of delimiter " +
               std::to_string(parts_ + 1) + " (expected \"--\")");
        state_ = State::epilogue;
        return i + 1;
      case State::padding:
        if (c == '\r') {
          state_ = State::after_cr;
        } else if (c == ' ' || c == '\t') {
          if (++padding_ > 256) fail("multipart: more than 256 bytes of padding after a delimiter");
        } else {
          fail("multipart: unexpected byte " + show_byte(c) + " in the padding after delimiter " +
               std::to_string(parts_ + 1));
        }
        break;
      case State::after_cr:
        if (c != '\n')
          fail("multipart: unexpected byte " + show_byte(c) + " after CR of delimiter " +
               std::to_string(parts_ + 1) + " (expected LF)");
        state_ = State::headers;
        header_.clear();
        return i + 1;
      default:
        return i;
    }
  }
  return n;
}

std::size_t MultipartParser::feed_headers(const char* p, std::size_t n) {
  const std::size_t old = header_.size();
  const std::size_t room = limits_.max_header_bytes + 4 - old;
  const std::size_t take = std::min(n, room);
  header_.append(p, take);
  std::size_t end = std::string::npos;  // end of the block, its final CRLFCRLF excluded
  std::size_t consumed_to = 0;          // header_ offset right after it
  if (header_.size() >= 2 && header_[0] == '\r' && header_[1] == '\n') {
    end = 0;  // no header fields at all
    consumed_to = 2;
  } else {
    const std::size_t from = old >= 3 ? old - 3 : 0;
    const std::size_t q = header_.find("\r\n\r\n", from);
    if (q != std::string::npos) {
      end = q;
      consumed_to = q + 4;
    }
  }
  if (end == std::string::npos) {
    // Only once the whole allowance is in: where a feed ends must not matter.
    if (header_.size() >= limits_.max_header_bytes + 4)
      fail("multipart: headers of part " + std::to_string(parts_ + 1) + " exceed " +
           std::to_string(limits_.max_header_bytes) + " bytes");
    return take;
  }
  if (end > limits_.max_header_bytes)
    fail("multipart: headers of part " + std::to_string(parts_ + 1) + " exceed " +
         std::to_string(limits_.max_header_bytes) + " bytes");
  const std::size_t consumed = consumed_to - old;
  header_.resize(end);
  if (++parts_ > limits_.max_parts)
    fail("multipart: more than " + std::to_string(limits_.max_parts) + " parts");
  parse_headers(header_);
  return consumed;
}

void MultipartParser::parse_headers(std::string_view block) {
  PartHeaders h;
  while (!block.empty()) {
    const std::size_t eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block = eol == std::string_view::npos ? std::string_view() : block.substr(eol + 2);
    if (line.empty()) continue;
    if (line.front() == ' ' || line.front() == '\t') {
      if (h.fields.empty())
        fail("multipart: part " + std::to_string(parts_) + " starts with a continuation line " +
             quote(line));
      auto& v = h.fields.back().second;
      v += ' ';
      v.append(trim(line));
      continue;
    }
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos)
      fail("multipart: part " + std::to_string(parts_) +
           ": header line without a colon: " + quote(line));
    const std::string_view name = trim(line.substr(0, colon));
    if (name.empty())
      fail("multipart: part " + std::to_string(parts_) +
           ": header line without a name: " + quote(line));
    h.fields.emplace_back(lowered(name), std::string(trim(line.substr(colon + 1))));
  }
  state_ = State::body;
  in_part_ = true;
  held_.clear();
  if (cb_.on_part_begin) cb_.on_part_begin(h);
}

void MultipartParser::feed(std::span<const char> bytes) {
  if (state_ == State::failed) throw MultipartError("multipart: parser fed after an error");
  const char* p = bytes.data();
  std::size_t n = bytes.size();
  fed_ += n;
  try {
    while (n > 0) {
      std::size_t used = 0;
      switch (state_) {
        case State::preamble:
          used = feed_preamble(p, n);
          break;
        case State::body:
          used = feed_body(p, n);
          break;
        case State::headers:
          used = feed_headers(p, n);
          break;
        case State::after_delimiter:
        case State::after_dash:
        case State::padding:
        case State::after_cr:
          used = feed_after_delimiter(p, n);
          break;
        case State::epilogue:
          return;  // after the close delimiter: ignored
        case State::failed:
          return;
      }
      p += used;
      n -= used;
    }
  } catch (...) {
    state_ = State::failed;
    throw;
  }
}

void MultipartParser::finish() {
  switch (state_) {
    case State::epilogue:
      return;
    case State::failed:
      throw MultipartError("multipart: parser finished after an error");
    case State::preamble:
      fail("multipart: stream ended before the first delimiter " +
           quote(std::string_view(delim_).substr(2)) + " (" + std::to_string(fed_) + " bytes)");
    case State::headers:
      fail("multipart: stream ended inside the headers of part " + std::to_string(parts_ + 1));
    case State::body:
      fail("multipart: stream ended inside the body of part " + std::to_string(parts_) +
           " (no closing delimiter)");
    case State::after_delimiter:
    case State::after_dash:
    case State::padding:
    case State::after_cr:
      fail("multipart: stream ended right after delimiter " + std::to_string(parts_ + 1) +
           " (no closing \"--\")");
  }
}

// ---- header values ---------------------------------------------------------

std::optional<std::string> HeaderValue::param(std::string_view name) const {
  for (auto& [n, v] : params)
    if (iequals(n, name)) return v;
  return std::nullopt;
}

HeaderValue parse_header_value(std::string_view value) {
  HeaderValue hv;
  std::size_t i = value.find(';');
  hv.token = lowered(trim(value.substr(0, i)));
  while (i != std::string_view::npos && i < value.size()) {
    ++i;  // past ';'
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    const std::size_t name_end = value.find_first_of("=;", i);
    std::string name = lowered(trim(value.substr(i, name_end - i)));
    if (name_end == std::string_view::npos || value[name_end] == ';') {
      if (!name.empty()) hv.params.emplace_back(std::move(name), std::string());
      i = name_end;
      continue;
    }
    i = name_end + 1;
    while (i < value.size() && (value[i] == ' ' || value[i] == '\t')) ++i;
    std::string v;
    if (i < value.size() && value[i] == '"') {
      ++i;
      bool closed = false;
      for (; i < value.size(); ++i) {
        if (value[i] == '\\' && i + 1 < value.size()) {
          v += value[++i];
        } else if (value[i] == '"') {
          closed = true;
          ++i;
          break;
        } else {
          v += value[i];
        }
      }
      if (!closed)
        throw MultipartError("header value " + quote(value) + ": unterminated quoted string");
      i = value.find(';', i);
    } else {
      const std::size_t e = value.find(';', i);
      v = std::string(trim(value.substr(i, e - i)));
      i = e;
    }
    if (!name.empty()) hv.params.emplace_back(std::move(name), std::move(v));
  }
  return hv;
}

std::string multipart_boundary(std::string_view content_type) {
  const HeaderValue hv = parse_header_value(content_type);
  const auto b = hv.param("boundary");
  if (!b)
    throw MultipartError("Content-Type " + quote(content_type) + " has no boundary parameter");
  if (b->empty())
    throw MultipartError("Content-Type " + quote(content_type) + " has an empty boundary");
  if (b->size() > 200)
    throw MultipartError("Content-Type boundary is " + std::to_string(b->size()) +
                         " characters long (at most 200)");
  if (b->find_first_of("\r\n") != std::string::npos)
    throw MultipartError("Content-Type boundary " + quote(*b) + " contains CR or LF");
  return *b;
}

namespace {

// RFC 5987 ext-value: charset'language'percent-encoded.
std::string decode_ext_value(std::string_view v) {
  const std::size_t q1 = v.find('\'');
  const std::size_t q2 = q1 == std::string_view::npos ? q1 : v.find('\'', q1 + 1);
  if (q2 == std::string_view::npos)
    throw MultipartError("filename* " + quote(v) + ": expected charset'language'value");
  const std::string charset = lowered(v.substr(0, q1));
  const bool latin1 = charset == "iso-8859-1";
  if (charset != "utf-8" && !latin1)
    throw MultipartError("filename* " + quote(v) + ": unsupported charset " + quote(charset));
  std::string raw;
  const std::string_view enc = v.substr(q2 + 1);
  for (std::size_t i = 0; i < enc.size(); ++i) {
    if (enc[i] == '%') {
      const int hi = i + 2 < enc.size() ? hex_value(enc[i + 1]) : -1;
      const int lo = i + 2 < enc.size() ? hex_value(enc[i + 2]) : -1;
      if (hi < 0 || lo < 0) throw MultipartError("filename* " + quote(v) + ": bad percent escape");
      raw += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      raw += enc[i];
    }
  }
  if (!latin1) return raw;
  std::string utf8;
  for (char ch : raw) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x80) {
      utf8 += ch;
    } else {
      utf8 += static_cast<char>(0xc0 | (c >> 6));
      utf8 += static_cast<char>(0x80 | (c & 0x3f));
    }
  }
  return utf8;
}

}  // namespace

std::optional<std::string> disposition_filename(std::string_view content_disposition) {
  const HeaderValue hv = parse_header_value(content_disposition);
  if (auto ext = hv.param("filename*")) return decode_ext_value(*ext);
  return hv.param("filename");
}

std::string safe_file_name(std::string_view raw) {
  const std::size_t slash = raw.find_last_of("/\\");
  const std::string_view name = slash == std::string_view::npos ? raw : raw.substr(slash + 1);
  const std::string prefix = "unsafe file name " + quote(raw) + ": ";
  if (name.empty()) throw MultipartError(prefix + "empty");
  if (name == "." || name == "..") throw MultipartError(prefix + "not a file name");
  for (char ch : name) {
    auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) throw MultipartError(prefix + "contains a control character");
  }
  if (name.size() > 250) throw MultipartError(prefix + "longer than 250 bytes");
  if (name.starts_with(".iaserve"))
    throw MultipartError(prefix + "reserved for the download manifest");
  if (name.size() >= 5 && name.substr(name.size() - 5) == ".part")
    throw MultipartError(prefix + "reserved for unfinished downloads (.part)");
  return std::string(name);
}

}  // namespace iaserve::iaapi
