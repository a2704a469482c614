#pragma once
// A small blocking HTTP client for tests (libcurl): one call, one answer.
#include <chrono>
#include <map>
#include <string>
#include <vector>

namespace iaserve::test {

struct HttpAnswer {
  long status = 0;           // 0 when no answer (connection refused, timeout)
  std::string error;         // curl's message when status == 0
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

HttpAnswer http(const std::string& method, const std::string& url, const std::string& body = {},
                std::vector<std::string> headers = {},
                std::chrono::milliseconds timeout = std::chrono::seconds(30));

inline HttpAnswer http_get(const std::string& url, std::vector<std::string> headers = {}) {
  return http("GET", url, {}, std::move(headers));
}
inline HttpAnswer http_post_json(const std::string& url, const std::string& json,
                                 std::vector<std::string> headers = {}) {
  headers.push_back("Content-Type: application/json");
  return http("POST", url, json, std::move(headers));
}

}  // namespace iaserve::test
