#pragma once
// The properties every decoder must keep on any input, shared by the libFuzzer
// target and the deterministic randomized unit test: no exception escapes,
// exactly one of value / error is set, and what decodes re-encodes to JSON
// that decodes again to the same encoding.
#include "iaapi/messages.hpp"

#include <boost/json.hpp>

#include <cmath>
#include <string>
#include <string_view>

namespace iaapi_check {

// Free-form JSON (contexts, unknown fields) is passed through, and Boost.JSON
// 1.81 does not read every double of magnitude 9.2e18 or more back exactly;
// such documents are checked for everything but bit-stable numbers.
inline bool has_huge_double(const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::double_:
      return !(std::abs(v.get_double()) < 9.2e18);
    case boost::json::kind::object:
      for (const auto& kv : v.get_object())
        if (has_huge_double(kv.value())) return true;
      return false;
    case boost::json::kind::array:
      for (const auto& x : v.get_array())
        if (has_huge_double(x)) return true;
      return false;
    default:
      return false;
  }
}

// Empty when the properties hold, else what broke.
template <class T>
std::string check_decoded(const iaserve::iaapi::Decoded<T>& d, const char* what) {
  if (d.ok() == !d.error.empty())
    return std::string(what) + ": value and error both " + (d.ok() ? "set" : "empty");
  if (!d.ok()) {
    if (d.error.message.empty()) return std::string(what) + ": error without a message";
    return {};
  }
  const boost::json::value once = iaserve::iaapi::to_json(*d.value);
  const std::string once_text = boost::json::serialize(once);
  auto again = iaserve::iaapi::decode_body<T>(once_text);
  if (!again.ok())
    return std::string(what) + ": re-encoding does not decode: " + again.error.what() + " in " +
           once_text.substr(0, 2000);
  const std::string twice_text = boost::json::serialize(iaserve::iaapi::to_json(*again.value));
  if (twice_text != once_text && !has_huge_double(once))
    return std::string(what) + ": encoding not stable:\n" + once_text.substr(0, 2000) + "\n" +
           twice_text.substr(0, 2000);
  return {};
}

inline std::string check_body(std::string_view body) {
  using namespace iaserve::iaapi;
  try {
    if (auto e = check_decoded(decode_invocation(body), "invocation"); !e.empty()) return e;
    auto parsed = parse_json(body);
    if (parsed.ok() == !parsed.error.empty()) return "parse_json: value xor error violated";
    if (!parsed.ok()) return {};
    const boost::json::value& v = *parsed.value;
    if (auto e = check_decoded(decode<ImageNotification>(v), "notification"); !e.empty()) return e;
    if (auto e = check_decoded(decode<StoredResult>(v), "stored result"); !e.empty()) return e;
    if (auto e = check_decoded(decode<Registration>(v), "registration"); !e.empty()) return e;
    // A result list is an array; look inside the document for one too.
    if (const auto* o = v.if_object())
      if (const auto* input = o->if_contains("input"))
        if (auto e = check_decoded(decode<Result>(*input), "result"); !e.empty()) return e;
    return {};
  } catch (const std::exception& e) {
    return std::string("exception escaped: ") + e.what();
  } catch (...) {
    return "unknown exception escaped";
  }
}

}  // namespace iaapi_check
