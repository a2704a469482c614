#include "iaapi/decode.hpp"

#include <boost/json/parser.hpp>

#include <cstdint>
#include <new>

namespace iaserve::iaapi {

std::string FieldError::what() const {
  std::string out = field.empty() ? std::string("body") : field;
  out += ": ";
  out += message;
  return out;
}

const char* json_kind_name(const boost::json::value& v) noexcept {
  switch (v.kind()) {
    case boost::json::kind::null:
      return "null";
    case boost::json::kind::bool_:
      return "bool";
    case boost::json::kind::int64:
    case boost::json::kind::uint64:
    case boost::json::kind::double_:
      return "number";
    case boost::json::kind::string:
      return "string";
    case boost::json::kind::array:
      return "array";
    case boost::json::kind::object:
      return "object";
  }
  return "unknown";
}

Decoded<boost::json::value> parse_json(std::string_view body, unsigned max_depth,
                                       boost::json::storage_ptr sp) {
  using R = Decoded<boost::json::value>;
  try {
    boost::json::parse_options opts;
    opts.max_depth = max_depth;
    boost::json::parser p(boost::json::storage_ptr(), opts);
    p.reset(std::move(sp));
    boost::system::error_code ec;
    const std::size_t used = p.write(body.data(), body.size(), ec);
    if (ec) {
      std::string what = ec.message();
      if (ec == boost::json::error::too_deep)
        what = "nested deeper than " + std::to_string(max_depth) + " levels";
      return R::failure({"", what + " at offset " + std::to_string(used)});
    }
    return R::success(p.release());
  } catch (const std::bad_alloc&) {
    return R::failure({"", "out of memory"});
  } catch (const std::exception& e) {
    return R::failure({"", e.what()});
  }
}

std::optional<std::string> id_problem(std::string_view id) {
  if (id.empty()) return std::string("empty");
  if (id.size() > kMaxIdLength)
    return "longer than " + std::to_string(kMaxIdLength) + " bytes (" + std::to_string(id.size()) +
           ")";
  for (std::size_t i = 0; i < id.size(); ++i) {
    const auto c = static_cast<unsigned char>(id[i]);
    if (c < 0x20 || c == 0x7f) return "control character at offset " + std::to_string(i);
  }
  return std::nullopt;
}

bool safe_path_component(std::string_view s) noexcept {
  if (s.empty() || s.size() > 255 || s == "." || s == "..") return false;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f || c == '/' || c == '\\') return false;
  }
  return true;
}

std::string slide_key(std::string_view slide_id) {
  // FNV-1a 64: the readable prefix carries most of the id; the hash makes
  // ids that only differ in replaced characters (or past the prefix) distinct.
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (char ch : slide_id) {
    h ^= static_cast<unsigned char>(ch);
    h *= 0x100000001b3ULL;
  }
  std::string key;
  key.reserve(48 + 17);
  for (char ch : slide_id.substr(0, 48)) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.';
    key.push_back(ok ? ch : '_');
  }
  if (!key.empty() && key[0] == '.') key[0] = '_';
  key.push_back('-');
  static constexpr char hex[] = "0123456789abcdef";
  for (int shift = 60; shift >= 0; shift -= 4) key.push_back(hex[(h >> shift) & 0xf]);
  return key;
}

std::string result_file_name(std::string_view app_id) { return "result." + slide_key(app_id) + ".json"; }
std::string overlay_file_name(std::string_view app_id) { return "overlay." + slide_key(app_id) + ".png"; }

}  // namespace iaserve::iaapi
