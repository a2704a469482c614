#include "worker/metrics.hpp"

#include <array>
#include <sstream>

namespace iaserve::worker {
namespace {
constexpr std::array<double, 11> kBounds{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300};

std::string label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}
}  // namespace

void Metrics::job_finished(const std::string& app_id, const std::string& outcome) {
  std::lock_guard lock(mutex_);
  ++jobs_[{app_id, outcome}];
}

void Metrics::bytes_downloaded(std::uint64_t n) {
  std::lock_guard lock(mutex_);
  bytes_ += n;
}

void Metrics::step_duration(const std::string& step, std::chrono::duration<double> seconds) {
  std::lock_guard lock(mutex_);
  auto& h = steps_[step];
  ++h.count;
  h.sum += seconds.count();
  for (double b : kBounds)
    if (seconds.count() <= b) {
      ++h.buckets[b];
      break;
    }
}

void Metrics::jobs_running(int delta) {
  std::lock_guard lock(mutex_);
  running_ += delta;
}

std::string Metrics::prometheus() const {
  std::lock_guard lock(mutex_);
  std::ostringstream o;
  o << "# HELP iaworker_jobs_total Jobs ended, by application and outcome.\n"
       "# TYPE iaworker_jobs_total counter\n";
  for (const auto& [key, n] : jobs_)
    o << "iaworker_jobs_total{app=\"" << label_value(key.first) << "\",outcome=\""
      << label_value(key.second) << "\"} " << n << "\n";
  o << "# HELP iaworker_jobs_running Jobs running now.\n"
       "# TYPE iaworker_jobs_running gauge\n"
       "iaworker_jobs_running "
    << running_ << "\n";
  o << "# HELP iaworker_downloaded_bytes_total Slide bytes downloaded.\n"
       "# TYPE iaworker_downloaded_bytes_total counter\n"
       "iaworker_downloaded_bytes_total "
    << bytes_ << "\n";
  o << "# HELP iaworker_step_seconds Duration of each pipeline step.\n"
       "# TYPE iaworker_step_seconds histogram\n";
  for (const auto& [step, h] : steps_) {
    std::uint64_t cumulative = 0;
    for (double b : kBounds) {
      auto it = h.buckets.find(b);
      if (it != h.buckets.end()) cumulative += it->second;
      o << "iaworker_step_seconds_bucket{step=\"" << label_value(step) << "\",le=\"" << b << "\"} "
        << cumulative << "\n";
    }
    o << "iaworker_step_seconds_bucket{step=\"" << label_value(step) << "\",le=\"+Inf\"} "
      << h.count << "\n";
    o << "iaworker_step_seconds_sum{step=\"" << label_value(step) << "\"} " << h.sum << "\n";
    o << "iaworker_step_seconds_count{step=\"" << label_value(step) << "\"} " << h.count << "\n";
  }
  return o.str();
}

}  // namespace iaserve::worker
