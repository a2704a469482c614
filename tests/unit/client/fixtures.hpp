#pragma once
// Helpers shared by the callback client's and the engine's tests.
#include <boost/json/serialize.hpp>

#include <chrono>
#include <string>

#include "iaapi/client.hpp"

namespace iaserve::test {

// Short timeouts and backoffs, three attempts: retries in milliseconds.
inline iaapi::ClientOptions fast_client_options() {
  using namespace std::chrono_literals;
  iaapi::ClientOptions o;
  o.connect_timeout = 2s;
  o.total_timeout = 10s;
  o.max_attempts = 3;
  o.backoff_initial = 5ms;
  o.backoff_max = 20ms;
  o.max_retry_time = 10s;
  return o;
}

// r as DPAT stores it, with its id and versionId.
inline iaapi::StoredResult stored(const iaapi::Result& r, std::int64_t id, std::string version) {
  iaapi::StoredResult s;
  static_cast<iaapi::Result&>(s) = r;
  s.id = id;
  s.version_id = std::move(version);
  return s;
}

inline std::string json_text(const boost::json::value& v) { return boost::json::serialize(v); }

}  // namespace iaserve::test
