#pragma once
// A push parser for multipart bodies (RFC 2046, as DPAT sends several slide
// files in one multipart/related answer), independent of any HTTP library so
// it can be fuzzed and benchmarked on its own. Memory is bounded whatever
// the body size: part data is handed out as it arrives (never buffered), only
// a delimiter-sized tail and one part's header block (capped) are kept.
//
// Also here: the header-value helpers the download needs (Content-Type
// parameters, Content-Disposition file names with RFC 5987 filename*, and
// reducing an untrusted file name to a safe single path component).
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iaserve::iaapi {

// Malformed multipart input or an unusable header value. The message says
// what was wrong and where ("multipart: stream ended inside the body of part 2").
class MultipartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Header fields of one part, in arrival order, names lower-cased, values
// trimmed (folded lines joined with one space).
struct PartHeaders {
  std::vector<std::pair<std::string, std::string>> fields;
  // First value of a field (name in any case), or nullopt.
  std::optional<std::string> get(std::string_view name) const;
};

struct MultipartLimits {
  std::size_t max_header_bytes = 16 * 1024;    // one part's header block
  std::size_t max_preamble_bytes = 64 * 1024;  // bytes before the first delimiter
  std::size_t max_parts = 100000;
};

// Feed the body in pieces of any size, split anywhere:
//   MultipartParser p(boundary, {.on_part_begin = ..., .on_data = ..., .on_part_end = ...});
//   while (read) p.feed(chunk);
//   p.finish();   // throws unless the closing delimiter was seen
// Callbacks run inside feed(); an exception they throw leaves feed() as is,
// and the parser must not be fed again. feed() throws MultipartError on bad
// input; after an error the parser stays failed.
class MultipartParser {
 public:
  struct Callbacks {
    std::function<void(const PartHeaders&)> on_part_begin;
    std::function<void(std::span<const char>)> on_data;  // never empty spans
    std::function<void()> on_part_end;
  };

  MultipartParser(std::string_view boundary, Callbacks callbacks, MultipartLimits limits = {});

  void feed(std::span<const char> bytes);
  void feed(std::string_view bytes) { feed(std::span<const char>(bytes.data(), bytes.size())); }
  void finish();

  bool done() const { return state_ == State::epilogue; }
  std::size_t parts() const { return parts_; }  // parts begun so far
  std::uint64_t bytes_fed() const { return fed_; }

 private:
  enum class State {
    preamble,
    after_delimiter,
    after_dash,
    padding,
    after_cr,
    headers,
    body,
    epilogue,
    failed
  };

  [[noreturn]] void fail(const std::string& what);
  std::size_t feed_preamble(const char* p, std::size_t n);
  std::size_t feed_body(const char* p, std::size_t n);
  std::size_t feed_headers(const char* p, std::size_t n);
  std::size_t feed_after_delimiter(const char* p, std::size_t n);
  void on_delimiter();
  void parse_headers(std::string_view block);
  // Delimiter search: first position of delim_ in [p, p+n), or n.
  std::size_t find(const char* p, std::size_t n) const;
  // Length of the longest suffix of [p, p+n) that is a proper prefix of delim_.
  std::size_t partial_suffix(const char* p, std::size_t n) const;
  void emit(const char* p, std::size_t n);

  std::string delim_;                     // "\r\n--" + boundary
  std::array<std::uint8_t, 256> skip_{};  // Horspool shift table
  Callbacks cb_;
  MultipartLimits limits_;
  State state_ = State::preamble;
  std::string held_;    // tail of the last feed that may start a delimiter (< delim_ size)
  std::string header_;  // current part's header block
  std::size_t padding_ = 0;
  std::size_t preamble_ = 0;
  std::size_t parts_ = 0;
  std::uint64_t fed_ = 0;
  bool in_part_ = false;
};

// Parameters of a header value such as Content-Type or Content-Disposition:
// "multipart/related; type=\"application/octet-stream\"; boundary=abc".
// The leading token (lower-cased) and the parameters (names lower-cased,
// quoted strings unescaped). Throws MultipartError on an unterminated quote.
struct HeaderValue {
  std::string token;
  std::vector<std::pair<std::string, std::string>> params;
  std::optional<std::string> param(std::string_view name) const;
};
HeaderValue parse_header_value(std::string_view value);

// The boundary of a multipart Content-Type; throws MultipartError naming the
// problem when it is missing, empty, longer than 200 or has a CR/LF.
std::string multipart_boundary(std::string_view content_type);

// The file name a Content-Disposition carries: filename* (RFC 5987,
// UTF-8 or ISO-8859-1, percent-decoded) wins over filename; nullopt when
// neither is present. Not yet made safe: pass it to safe_file_name().
std::optional<std::string> disposition_filename(std::string_view content_disposition);

// The last path component of an untrusted file name ("a/b/c.svs" -> "c.svs",
// backslashes count as separators too). Throws MultipartError ("unsafe file
// name \"..\": ...") for an empty result, ".", "..", control characters, a
// name longer than 250 bytes (room for ".part"), a name ending in ".part"
// (unfinished downloads) or starting with ".iaserve" (reserved
// for the download manifest).
std::string safe_file_name(std::string_view raw);

}  // namespace iaserve::iaapi
