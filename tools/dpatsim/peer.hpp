#pragma once
// The client side of dpatsim's commands: plain HTTP calls (libcurl) to an
// app or to a running simulator, and the simulator's own routes.
#include <boost/json/value.hpp>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "iaapi/messages.hpp"

namespace iaserve::dpatsim {

struct Reply {
  long status = 0;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower) const {
    auto it = headers.find(lower);
    return it == headers.end() ? std::string() : it->second;
  }
};

// One HTTP exchange; throws std::runtime_error naming the URL when there is
// no answer at all (refused, timeout).
Reply call(const std::string& method, const std::string& url, const std::string& body = {},
           std::vector<std::string> headers = {}, std::chrono::milliseconds timeout = std::chrono::seconds(60));

// "http://127.0.0.1:4000" from "http://127.0.0.1:4000/Sectra/..." (the simulator's own routes live there).
std::string origin_of(const std::string& url);
// A fresh token from the simulator at `sim_url` (POST /_sim/token).
std::string mint_token(const std::string& sim_url, std::optional<double> ttl = std::nullopt);
// Parses a JSON answer; ProtocolError naming `what` otherwise.
boost::json::value parse_answer(const std::string& what, const Reply& reply);
// Pretty JSON for people (two-space indent).
std::string pretty(const boost::json::value& v);

// A result is final when its displayProperties have no "Progress" entry, or
// its data.context has "state": "final" (iaapi's progress_result always
// sets Progress; the worker's answers and failure frames do not).
bool is_final(const iaapi::Result& r);
bool is_failed(const iaapi::Result& r);  // displayProperties Status == "failed"

}  // namespace iaserve::dpatsim
