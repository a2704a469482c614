#pragma once
// Non-throwing decoding of untrusted JSON: every decode gives either a value or
// a FieldError naming the field path and what was wrong with it.
#include <boost/json/storage_ptr.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

namespace iaserve::iaapi {

// Bounds on untrusted input. Identifiers end up in file names, logs and URLs;
// polygons and strings end up in memory and in results we send back.
inline constexpr unsigned kMaxJsonDepth = 32;
inline constexpr std::size_t kMaxIdLength = 256;            // slideId, applicationId
inline constexpr std::size_t kMaxStringLength = 64 * 1024;  // any other string
inline constexpr std::size_t kMaxPointsPerPolygon = 1'000'000;
inline constexpr std::size_t kMaxPolygons = 100'000;      // polygons in one list
inline constexpr std::size_t kMaxListLength = 1'000'000;  // patches, items, tags ...

// "input.content.polygon.points[3].x" + "expected number, got string".
// An empty field means the whole document ("body").
struct FieldError {
  std::string field;
  std::string message;

  bool empty() const noexcept { return field.empty() && message.empty(); }
  // "field: message" ("body: message" when field is empty).
  std::string what() const;
};

// The thrown form, for callers that want an exception (trusted paths, tools).
class DecodeError : public std::runtime_error {
 public:
  explicit DecodeError(FieldError e) : std::runtime_error(e.what()), error_(std::move(e)) {}
  const FieldError& error() const noexcept { return error_; }

 private:
  FieldError error_;
};

// Exactly one of value / error is set.
template <class T>
struct Decoded {
  std::optional<T> value;
  FieldError error;

  bool ok() const noexcept { return value.has_value(); }
  explicit operator bool() const noexcept { return ok(); }
  const T& operator*() const& { return *value; }
  T& operator*() & { return *value; }
  const T* operator->() const { return &*value; }
  T* operator->() { return &*value; }
  // The value, or DecodeError with the field error.
  T& get() & {
    if (!value) throw DecodeError(error);
    return *value;
  }
  T get() && {
    if (!value) throw DecodeError(error);
    return std::move(*value);
  }

  static Decoded success(T v) { return Decoded{std::move(v), {}}; }
  static Decoded failure(FieldError e) { return Decoded{std::nullopt, std::move(e)}; }
};

// Parses a request or response body with a nesting limit; never throws.
// Errors read "body: <reason> at offset N" (field "body").
Decoded<boost::json::value> parse_json(std::string_view body, unsigned max_depth = kMaxJsonDepth,
                                       boost::json::storage_ptr sp = {});

// "string", "number", "object", "array", "bool", "null".
const char* json_kind_name(const boost::json::value& v) noexcept;

// Identifier checks used for slideId / applicationId: non-empty, at most
// kMaxIdLength bytes, no control characters (NUL included). Returns the
// reason ("empty", "longer than 256 bytes", "control character at offset 3")
// or nullopt when the id is acceptable.
std::optional<std::string> id_problem(std::string_view id);

// True when s may be used as one file-name component as it is: non-empty, at
// most 255 bytes, not "." or "..", no '/', '\\', NUL or control characters.
bool safe_path_component(std::string_view s) noexcept;

// A file-system-safe, deterministic key for a slide id: a readable prefix of
// the id (characters outside [A-Za-z0-9._-] replaced by '_', at most 48) then
// '-' and 16 hex digits of a 64-bit hash of the whole id. Never starts with
// '.', always safe_path_component(). Different ids give different keys
// unless their hashes collide.
std::string slide_key(std::string_view slide_id);

// The names of one app's outputs in a slide's folder, "result.<key>.json"
// and "overlay.<key>.png" with key = slide_key(app_id): a slide analysed by
// several apps keeps each app's result and overlay apart.
std::string result_file_name(std::string_view app_id);
std::string overlay_file_name(std::string_view app_id);

}  // namespace iaserve::iaapi
