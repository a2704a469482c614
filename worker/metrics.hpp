#pragma once
// The worker's counters in Prometheus text format: jobs by outcome, bytes
// downloaded, step durations. Thread-safe; one instance per iaworker process.
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace iaserve::worker {

class Metrics {
 public:
  // outcome: "done", "failed", "retry", "cancelled", "released".
  void job_finished(const std::string& app_id, const std::string& outcome);
  void bytes_downloaded(std::uint64_t n);
  // step: "info", "thumbnail", "download", "open", "analysis", "result".
  void step_duration(const std::string& step, std::chrono::duration<double> seconds);
  void jobs_running(int delta);

  // The exposition text served at /metrics.
  std::string prometheus() const;

 private:
  struct Histogram {
    std::uint64_t count = 0;
    double sum = 0;
    std::map<double, std::uint64_t> buckets;  // upper bound -> count (not cumulative)
  };
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> jobs_;
  std::uint64_t bytes_ = 0;
  std::map<std::string, Histogram> steps_;
  long running_ = 0;
};

}  // namespace iaserve::worker
