#include "worker/worker.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <exception>

#include "iaapi/log.hpp"
#include "worker/retention.hpp"

namespace iaserve::worker {
namespace {
unsigned cores() { return std::max(1u, std::thread::hardware_concurrency()); }
}  // namespace

struct Worker::Running {
  std::thread thread;
  std::string slide_key;
  bool finished = false;
};

Worker::Worker(WorkerOptions options)
    : options_(std::move(options)),
      analysis_slots_(static_cast<std::ptrdiff_t>(options_.analysis_slots ? options_.analysis_slots : cores())) {
  queue_ = std::make_unique<queue::Queue>(options_.queue_dir, options_.queue);
  options_.job.max_attempts = options_.queue.max_attempts;
  if (options_.jobs == 0) options_.jobs = 1;
}

Worker::~Worker() {
  stop();
  std::unique_lock lock(mutex_);
  for (auto& [slot, r] : running_)
    if (r->thread.joinable()) {
      lock.unlock();
      r->thread.join();
      lock.lock();
    }
}

void Worker::stop() {
  if (stopping_.exchange(true)) release_now_.store(true);
  if (queue_) queue_->interrupt();
  cv_.notify_all();
}

bool Worker::slide_in_use(const std::string& key) {
  std::lock_guard lock(mutex_);
  return busy_slides_.count(key) > 0;
}

void Worker::housekeeping() {
  auto log = log::get("worker");
  try {
    auto r = queue_->recover_orphans();
    if (r.requeued || r.failed || r.cancelled)
      log->info("orphans: {} back to pending, {} failed, {} cancelled", r.requeued, r.failed, r.cancelled);
  } catch (const std::exception& e) {
    log->warn("orphan recovery: {}", e.what());
  }
  try {
    if (auto n = queue_->purge(options_.retention)) log->info("purged {} finished jobs", n);
  } catch (const std::exception& e) {
    log->warn("purge: {}", e.what());
  }
  try {
    remove_old_slide_data(options_.job.data_dir, options_.retention,
                          [this](const std::string& key) { return slide_in_use(key); });
  } catch (const std::exception& e) {
    log->warn("slide data retention: {}", e.what());
  }
}

void Worker::start_job(queue::Claim claim) {
  std::lock_guard lock(mutex_);
  const std::uint64_t slot = next_slot_++;
  auto running = std::make_unique<Running>();
  running->slide_key = claim.job().slide_key;
  busy_slides_.insert(running->slide_key);
  metrics_.jobs_running(+1);
  running->thread = std::thread([this, slot, c = std::make_shared<queue::Claim>(std::move(claim))] {
    auto log = log::get("worker");
    const queue::Job& job = c->job();
    JobReport report;
    try {
      JobRequest request = request_from_payload(job.payload);
      request.job_id = job.id;
      request.attempts = job.attempts;
      if (request.slide_key != job.slide_key) request.slide_key = job.slide_key;
      JobControl control;
      // A lost claim (the job recovered elsewhere after a stale lease) is no
      // cancel: the run stops without writing "analysis cancelled" over
      // the other run's result.
      control.cancel_requested = [c] { return !c->lost() && c->cancel_requested(); };
      control.stop_requested = [this, c] { return release_now_.load() || c->lost(); };
      control.analysis_slots = &analysis_slots_;
      control.metrics = &metrics_;
      report = run_job(options_.job, request, control);
    } catch (const std::exception& e) {  // a payload this worker cannot read
      report.status = JobStatus::failed;
      report.reason = std::string("bad job: ") + e.what();
      log->error("job {}: {}", job.id, report.reason);
      metrics_.job_finished(job.app_id, "failed");
    }
    // A share that fails for a moment does not cost the run: ending the
    // claim is tried three times over about 3 s. After that the claim is
    // dropped and this process's next recovery sweep returns the job.
    c->abandon();  // lost meanwhile: the job is another run's, nothing to end
    for (int attempt = 1; c->held(); ++attempt) {
      try {
        switch (report.status) {
          case JobStatus::done: c->complete(report.summary); break;
          case JobStatus::failed: c->fail(report.reason, false); break;
          case JobStatus::retry: c->fail(report.reason, true); break;
          case JobStatus::cancelled:  // release() moves a job with a cancel mark to cancelled/
          case JobStatus::released: c->release(); break;
        }
      } catch (const std::exception& e) {
        if (c->lost()) {  // found out only now: the job is another run's
          c->abandon();
          break;
        }
        log->error("job {}: ending the claim ({}), try {} of 3: {}", job.id, to_string(report.status), attempt,
                   e.what());
        if (attempt == 3 || !c->held()) break;
        std::this_thread::sleep_for(std::chrono::seconds(attempt));
      }
    }
    finish_job(slot);
  });
  running_.emplace(slot, std::move(running));
}

void Worker::finish_job(std::uint64_t slot) {
  {
    std::lock_guard lock(mutex_);
    auto it = running_.find(slot);
    if (it != running_.end()) {
      it->second->finished = true;
      auto b = busy_slides_.find(it->second->slide_key);
      if (b != busy_slides_.end()) busy_slides_.erase(b);
    }
  }
  metrics_.jobs_running(-1);
  cv_.notify_all();
}

void Worker::run() {
  auto log = log::get("worker");
  log->info("worker {}: queue {}, data {}, {} job(s) at once, wake-up {}", options_.job.host_id,
            options_.queue_dir.string(), options_.job.data_dir.string(), options_.jobs,
            queue_->wakeup() == queue::Wakeup::inotify ? "inotify" : "polling");
  housekeeping();
  last_housekeeping_ = std::chrono::steady_clock::now();
  auto reap = [this](std::unique_lock<std::mutex>& lock) {
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->second->finished) {
        auto r = std::move(it->second);
        it = running_.erase(it);
        lock.unlock();
        if (r->thread.joinable()) r->thread.join();
        lock.lock();
      } else {
        ++it;
      }
    }
  };
  while (!stopping_) {
    {
      std::unique_lock lock(mutex_);
      reap(lock);
      cv_.wait_for(lock, std::chrono::seconds(1),
                   [this] { return stopping_ || running_.size() < options_.jobs; });
      reap(lock);
      if (stopping_) break;
      if (running_.size() >= options_.jobs) continue;
    }
    if (std::chrono::steady_clock::now() - last_housekeeping_ >= options_.housekeeping_interval) {
      housekeeping();
      last_housekeeping_ = std::chrono::steady_clock::now();
    }
    try {
      if (auto claim = queue_->wait_claim(std::chrono::milliseconds(1000))) {
        if (stopping_) {
          claim->release();
          break;
        }
        log->info("job {} slide {} app {}: claimed (attempt {})", claim->job().id,
                  claim->job().slide_key, claim->job().app_id, claim->job().attempts + 1);
        start_job(std::move(*claim));
      }
    } catch (const std::exception& e) {
      log->error("claiming a job: {}", e.what());
      std::unique_lock lock(mutex_);
      cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_.load(); });
    }
  }
  // Graceful end: the running jobs get the grace period, then are released.
  std::unique_lock lock(mutex_);
  if (!running_.empty())
    log->info("stopping: {} running job(s) get {} ms to finish", running_.size(),
              options_.grace_period.count());
  const auto deadline = std::chrono::steady_clock::now() + options_.grace_period;
  while (true) {
    reap(lock);
    if (running_.empty()) break;
    if (release_now_ || std::chrono::steady_clock::now() >= deadline) {
      if (!release_now_.exchange(true))
        log->info("grace period over: handing {} job(s) back to the queue", running_.size());
      cv_.wait_for(lock, std::chrono::milliseconds(200));
    } else {
      cv_.wait_until(lock, std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(200)));
    }
  }
  log->info("worker stopped");
}

}  // namespace iaserve::worker
