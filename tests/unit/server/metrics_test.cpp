// The Prometheus text the server's /metrics renders.
#include <catch2/catch.hpp>

#include <chrono>

#include "server/metrics.hpp"

using namespace iaserve::server;
using namespace std::chrono_literals;

TEST_CASE("the latency sum keeps every digit however large it grows", "[metrics]") {
  Metrics m;
  m.request("/apps/t", 200, 1234567890123us);  // 1,234,567.890123 s
  m.request("/apps/t", 200, 1us);
  const std::string text = m.render("");
  CHECK_THAT(text, Catch::Matchers::Contains("iaserve_request_duration_seconds_sum{route=\"/apps/t\"} 1234567.890124\n"));
  CHECK_THAT(text, Catch::Matchers::Contains("iaserve_request_duration_seconds_count{route=\"/apps/t\"} 2\n"));
  CHECK_THAT(text, Catch::Matchers::Contains("iaserve_callback_errors_total{kind=\"throttled\"} 0\n"));
}
