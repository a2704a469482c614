#pragma once
// Prometheus counters of the server: requests by route and status, latency
// histogram by route, callback errors by kind. Route labels are the
// configured patterns, never raw paths, so the label set stays bounded.
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace iaserve::server {

class Metrics {
 public:
  void request(const std::string& route, unsigned status, std::chrono::microseconds elapsed);
  void callback_error(const std::string& kind);
  // Text exposition format; `extra` is appended as it is (gauges the caller owns).
  std::string render(const std::string& extra = {}) const;

  static const std::vector<double>& buckets();  // seconds

 private:
  struct Histogram {
    std::vector<std::uint64_t> counts;  // per bucket, not cumulative
    std::uint64_t count = 0;
    double sum = 0;
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, unsigned>, std::uint64_t> requests_;
  std::map<std::string, Histogram> latency_;
  std::map<std::string, std::uint64_t> callback_errors_;
};

// A Prometheus label value with \, " and newline escaped.
std::string prometheus_escape(const std::string& s);

}  // namespace iaserve::server
