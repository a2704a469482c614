#pragma once
// The worker loop: claims jobs from the shared queue (the queue's inotify or
// polling wake-up), runs up to `jobs` of them at once on their own threads
// (so one job's download overlaps another's analysis; the analyses
// themselves share a bound of `analysis_slots`), recovers orphans, purges old
// jobs and removes old slide data. stop() ends it gracefully: no new jobs,
// running ones get the grace period, then are handed back to pending.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <semaphore>
#include <set>
#include <string>
#include <thread>

#include "queue/queue.hpp"
#include "worker/job.hpp"
#include "worker/metrics.hpp"

namespace iaserve::worker {

struct WorkerOptions {
  std::filesystem::path queue_dir;
  queue::Options queue;
  JobSettings job;
  unsigned jobs = 1;
  unsigned analysis_slots = 0;  // 0: the number of cores
  std::chrono::milliseconds grace_period{30'000};
  std::chrono::seconds retention{7 * 24 * 3600};       // slide data and finished jobs
  std::chrono::milliseconds housekeeping_interval{60'000};  // orphans, purge, retention
};

class Worker {
 public:
  // Opens the queue (its self-test included): throws queue::QueueError.
  explicit Worker(WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs until stop(); returns when every job ended or was handed back.
  void run();
  // From any thread (a signal thread): stop taking jobs; running jobs finish
  // within the grace period or are released. A second call shortens the
  // grace to nothing.
  void stop();

  Metrics& metrics() { return metrics_; }
  queue::Queue& queue() { return *queue_; }
  // Runs orphan recovery, purge and slide-data retention now.
  void housekeeping();

 private:
  struct Running;
  void start_job(queue::Claim claim);
  void finish_job(std::uint64_t slot);
  bool slide_in_use(const std::string& key);

  WorkerOptions options_;
  std::unique_ptr<queue::Queue> queue_;
  Metrics metrics_;
  std::counting_semaphore<> analysis_slots_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> release_now_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  std::map<std::uint64_t, std::unique_ptr<Running>> running_;
  std::multiset<std::string> busy_slides_;
  std::uint64_t next_slot_ = 0;
  std::chrono::steady_clock::time_point last_housekeeping_{};
};

}  // namespace iaserve::worker
