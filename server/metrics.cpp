#include "server/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <sstream>

namespace iaserve::server {

const std::vector<double>& Metrics::buckets() {
  static const std::vector<double> b{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return b;
}

std::string prometheus_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Metrics::request(const std::string& route, unsigned status, std::chrono::microseconds elapsed) {
  double s = static_cast<double>(elapsed.count()) / 1e6;
  const auto& b = buckets();
  std::size_t i = static_cast<std::size_t>(std::lower_bound(b.begin(), b.end(), s) - b.begin());
  std::lock_guard lock(mutex_);
  ++requests_[{route, status}];
  auto& h = latency_[route];
  if (h.counts.empty()) h.counts.assign(b.size() + 1, 0);
  ++h.counts[i];
  ++h.count;
  h.sum += s;
}

void Metrics::callback_error(const std::string& kind) {
  std::lock_guard lock(mutex_);
  ++callback_errors_[kind];
}

// All the digits a double needs (a stream's default 6 would step a sum of
// seconds in whole seconds, then in tens).
static std::string exact(double v) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

std::string Metrics::render(const std::string& extra) const {
  std::ostringstream os;
  std::lock_guard lock(mutex_);
  os << "# HELP iaserve_requests_total HTTP requests answered, by route and status.\n"
     << "# TYPE iaserve_requests_total counter\n";
  for (const auto& [key, n] : requests_)
    os << "iaserve_requests_total{route=\"" << prometheus_escape(key.first) << "\",status=\"" << key.second
       << "\"} " << n << "\n";
  os << "# HELP iaserve_request_duration_seconds Time from request to answer, by route.\n"
     << "# TYPE iaserve_request_duration_seconds histogram\n";
  const auto& b = buckets();
  for (const auto& [route, h] : latency_) {
    std::string r = prometheus_escape(route);
    std::uint64_t cum = 0;
    for (std::size_t i = 0; i < b.size(); ++i) {
      cum += h.counts[i];
      os << "iaserve_request_duration_seconds_bucket{route=\"" << r << "\",le=\"" << b[i] << "\"} " << cum << "\n";
    }
    os << "iaserve_request_duration_seconds_bucket{route=\"" << r << "\",le=\"+Inf\"} " << h.count << "\n"
       << "iaserve_request_duration_seconds_sum{route=\"" << r << "\"} " << exact(h.sum) << "\n"
       << "iaserve_request_duration_seconds_count{route=\"" << r << "\"} " << h.count << "\n";
  }
  os << "# HELP iaserve_callback_errors_total Failed calls to DPAT's callback API, by kind.\n"
     << "# TYPE iaserve_callback_errors_total counter\n";
  for (const char* kind : {"token_expired", "not_found", "conflict", "throttled", "client", "server", "transport", "protocol"}) {
    auto it = callback_errors_.find(kind);
    os << "iaserve_callback_errors_total{kind=\"" << kind << "\"} " << (it == callback_errors_.end() ? 0 : it->second)
       << "\n";
  }
  os << extra;
  return os.str();
}

}  // namespace iaserve::server
