#pragma once
// Helpers shared by the iaapi tests: parse a test document (must be valid),
// compare JSON by meaning (numbers by value, objects ignoring member order).
#include "iaapi/decode.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <functional>
#include <string>
#include <string_view>

namespace iaapi_test {

inline boost::json::value doc(std::string_view text) {
  auto parsed = iaserve::iaapi::parse_json(text);
  INFO(parsed.error.what());
  REQUIRE(parsed.ok());
  return std::move(*parsed.value);
}

inline bool same(const boost::json::value& a, const boost::json::value& b) {
  if (a.is_number() && b.is_number()) return a.to_number<double>() == b.to_number<double>();
  if (a.kind() != b.kind()) return false;
  if (a.is_object()) {
    const auto& oa = a.get_object();
    const auto& ob = b.get_object();
    if (oa.size() != ob.size()) return false;
    for (const auto& kv : oa) {
      const auto* other = ob.if_contains(kv.key());
      if (!other || !same(kv.value(), *other)) return false;
    }
    return true;
  }
  if (a.is_array()) {
    const auto& xa = a.get_array();
    const auto& xb = b.get_array();
    if (xa.size() != xb.size()) return false;
    for (std::size_t i = 0; i < xa.size(); ++i)
      if (!same(xa[i], xb[i])) return false;
    return true;
  }
  return a == b;
}

// A valid document changed by `edit`, as text.
inline std::string edited(std::string_view base,
                          const std::function<void(boost::json::object&)>& edit) {
  boost::json::value v = doc(base);
  edit(v.as_object());
  return boost::json::serialize(v);
}

}  // namespace iaapi_test
