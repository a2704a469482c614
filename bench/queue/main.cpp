// bench_queue: the disk queue's throughput (enqueue + claim + complete with
// 1, 2 and 8 worker processes) and enqueue-to-start latency of a waiting
// worker (inotify and polling), on a folder of the local disk.
//
// The figures are set against the fsync cost of the same disk, measured in
// the same run: a durable enqueue costs two fsyncs (file, folder) and a
// durable completion two more, so fsync bounds jobs/s on a slow disk. The
// same runs with Options::fsync off show the queue's own cost.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/fs_cost.hpp"
#include "iaapi/log.hpp"
#include "queue/queue.hpp"

namespace fs = std::filesystem;
using namespace iaserve;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Milliseconds per durable small write: write, fsync, rename, fsync folder.
double fsync_cost_ms(const fs::path& dir, int rounds) {
  fs::create_directories(dir);
  auto t = Clock::now();
  for (int i = 0; i < rounds; ++i) {
    auto tmp = dir / ("t" + std::to_string(i)), dst = dir / ("f" + std::to_string(i));
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    std::string body(400, 'x');
    if (fd < 0 || ::write(fd, body.data(), body.size()) < 0 || ::fsync(fd) != 0) std::abort();
    ::close(fd);
    ::rename(tmp.c_str(), dst.c_str());
    int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::fsync(d);
    ::close(d);
  }
  return ms_since(t) / rounds;  // the files stay until the end: see create_cost_us
}

using iaserve::bench::create_cost_us;

queue::JobSpec job(int i) {
  queue::JobSpec s;
  s.slide_key = "slide-" + std::to_string(i);
  s.app_id = "bench";
  s.payload = boost::json::object{{"callback", boost::json::object{{"url", "http://127.0.0.1:1/x"},
                                                                   {"token", std::string(40, 't')}}},
                                  {"t_ns", now_ns()}};
  return s;
}

// User + system CPU of this process and its waited-for children.
double cpu_seconds() {
  double total = 0;
  for (int who : {RUSAGE_SELF, RUSAGE_CHILDREN}) {
    struct rusage u {};
    ::getrusage(who, &u);
    total += u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  }
  return total;
}

double cpu_us_per_job = 0;  // of the last throughput() run: producer + workers

// Worker processes claim and complete until the producer is done and the
// queue is empty. Returns jobs/s over the whole run.
int producers = 16;  // enqueuing threads: the server enqueues from its callback pool

double throughput(const fs::path& dir, int workers, int jobs, bool durable, bool sync_finish = false,
                  queue::Commit commit = queue::Commit::automatic) {
  // A fresh folder each run; main() removes them all at the end. Removing the
  // last run's thousands of files here would time the filesystem's cost of
  // creating files just after mass deletions (ext4 without a journal skips
  // recently freed inodes), not the queue: purge deletes in batches too.
  queue::Options o;
  o.fsync = durable;
  o.sync_finish = sync_finish;
  o.commit = commit;
  o.lease_interval = 2s;
  o.poll_interval = 200ms;
  { queue::Queue create(dir, o); }
  auto producer_done = dir / "producer.done";
  double cpu0 = cpu_seconds();
  auto start = Clock::now();
  std::vector<pid_t> kids;
  for (int w = 0; w < workers; ++w) {
    pid_t pid = ::fork();
    if (pid == 0) {
      try {
        queue::Queue q(dir, o);
        for (;;) {
          if (auto c = q.wait_claim(20ms)) {
            c->complete();
            continue;
          }
          if (fs::exists(producer_done)) {
            auto s = q.stats();
            if (s.pending == 0 && s.active == 0) break;
          }
        }
      } catch (const std::exception& e) {
        std::fprintf(stderr, "worker: %s\n", e.what());
        ::_exit(1);
      }
      ::_exit(0);
    }
    kids.push_back(pid);
  }
  {
    queue::Queue q(dir, o);
    std::vector<std::thread> threads;
    std::atomic<int> next{0};
    for (int p = 0; p < producers; ++p)
      threads.emplace_back([&] {
        for (int i; (i = next++) < jobs;) q.enqueue(job(i));
      });
    for (auto& t : threads) t.join();
  }
  ::close(::open(producer_done.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  for (pid_t k : kids) ::waitpid(k, nullptr, 0);
  double secs = ms_since(start) / 1000.0;
  cpu_us_per_job = (cpu_seconds() - cpu0) * 1e6 / jobs;
  queue::Queue q(dir, o);
  auto s = q.stats();
  if (s.done != static_cast<std::size_t>(jobs)) {
    std::fprintf(stderr, "bench: %zu of %d jobs done\n", s.done, jobs);
    std::exit(1);
  }
  return jobs / secs;
}

struct Latency {
  double p50_call = 0, p99_call = 0;      // from the enqueue call
  double p50_return = 0, p99_return = 0;  // from enqueue's return (job durable)
};

double pct(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5))];
}

// A worker waiting in wait_claim(); one job at a time, each after the
// previous one started, at a random moment.
// Jobs arrive at a random moment of the poll period, not just after the
// worker started waiting (that would measure the whole period).
Latency latency(const fs::path& dir, queue::Wakeup mode, int samples) {
  queue::Options o;
  o.wakeup = mode;
  { queue::Queue create(dir, o); }
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) std::abort();
  pid_t kid = ::fork();
  if (kid == 0) {
    ::close(pipefd[0]);
    queue::Queue q(dir, o);
    for (int i = 0; i < samples; ++i) {
      auto c = q.wait_claim(60s);
      if (!c) ::_exit(1);
      std::int64_t started = now_ns();
      c->complete();
      if (::write(pipefd[1], &started, sizeof started) != sizeof started) ::_exit(1);
    }
    ::_exit(0);
  }
  ::close(pipefd[1]);
  queue::Queue q(dir, o);
  std::mt19937 rng(7);
  std::vector<double> from_call, from_return;
  std::this_thread::sleep_for(100ms);  // the worker is waiting
  for (int i = 0; i < samples; ++i) {
    int max_gap = mode == queue::Wakeup::poll ? 1000 : 40;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(5, max_gap)(rng)));
    std::int64_t call = now_ns();
    q.enqueue(job(i));
    std::int64_t ret = now_ns();
    std::int64_t started = 0;
    if (::read(pipefd[0], &started, sizeof started) != sizeof started) {
      std::fprintf(stderr, "bench: the waiting worker died\n");
      std::exit(1);
    }
    from_call.push_back((started - call) / 1e6);
    from_return.push_back((started - ret) / 1e6);
  }
  ::waitpid(kid, nullptr, 0);
  ::close(pipefd[0]);
  return {pct(from_call, 0.5), pct(from_call, 0.99), pct(from_return, 0.5), pct(from_return, 0.99)};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_queue: disk queue throughput and wake-up latency on a local folder"};
  std::string where = fs::temp_directory_path().string();
  int jobs = 400, fast_jobs = 2000, samples = 50, poll_samples = 20;
  app.add_option("--dir", where, "a folder on the disk to measure (default $TMPDIR)");
  app.add_option("--jobs", jobs, "jobs per durable throughput run");
  app.add_option("--fast-jobs", fast_jobs, "jobs per run with fsync off");
  app.add_option("--producers", producers, "enqueuing threads in the producer process")->capture_default_str();
  app.add_option("--samples", samples, "latency samples with inotify");
  app.add_option("--poll-samples", poll_samples, "latency samples with polling (500 ms period)");
  CLI11_PARSE(app, argc, argv);
  log::setup("warn");
  fs::path root = fs::path(where) / ("bench-queue-" + std::to_string(::getpid()));
  fs::create_directories(root);

  {
    std::FILE* f = std::fopen("/proc/loadavg", "r");
    char load[64] = "?";
    if (f && std::fgets(load, sizeof load, f)) std::printf("load average at start: %s", load);
    if (f) std::fclose(f);
    std::printf("cores: %u\n", std::thread::hardware_concurrency());
  }
  double create_before = create_cost_us(root / "create-before", 2000);
  double fs_ms = fsync_cost_ms(root / "fsync", 100);
  // enqueue: file + folder; complete: file + folder.
  // One thread writing durably one after another: the disk's serial limit.
  double fsync_bound = 1000.0 / fs_ms;
  std::printf("disk: durable small write (write+fsync+rename+fsync folder) %.2f ms; creating an empty file %.0f us\n",
              fs_ms, create_before);
  std::printf("one thread writing durably in a loop: %.0f writes/s (the ratios below are to this)\n\n",
              fsync_bound);

  std::printf("throughput: enqueue + claim + complete, 1 producer process with %d threads, N worker processes\n"
              "  durable: enqueue on disk before it returns (the default commit: journal on a local disk);\n"
              "  finishing not fsynced (Options::sync_finish off, the default)\n",
              producers);
  for (int w : {1, 2, 8}) {
    double durable = throughput(root / ("tp-durable-" + std::to_string(w)), w, jobs, true);
    double durable_cpu = cpu_us_per_job;
    double fast = throughput(root / ("tp-fast-" + std::to_string(w)), w, fast_jobs, false);
    std::printf("  %d worker%s: durable %7.0f jobs/s (%.2f x serial writes, %4.0f us CPU/job)"
                "   fsync off %7.0f jobs/s (%4.0f us CPU/job)%s\n",
                w, w == 1 ? " " : "s", durable, durable / fsync_bound, durable_cpu, fast, cpu_us_per_job,
                w == 2 ? "   target >= 2000 jobs/s" : "");
    if (w == 2) {
      double each = throughput(root / "tp-fsync-each", w, jobs, true, false, queue::Commit::fsync);
      std::printf("  2 workers, each job file fsynced (commit = fsync, the default on a share): %7.0f jobs/s (%4.0f us CPU/job)\n",
                  each, cpu_us_per_job);
      double all = throughput(root / "tp-sync-finish", w, jobs, true, true);
      std::printf("  2 workers, finishing fsynced too (sync_finish on): %7.0f jobs/s (%4.0f us CPU/job)\n", all,
                  cpu_us_per_job);
    }
  }

  std::printf("\nenqueue -> a waiting worker starts (ms)\n");
  auto ino = latency(root / "lat-inotify", queue::Wakeup::inotify, samples);
  std::printf("  inotify: p50 %.1f  p99 %.1f from the call; p50 %.2f  p99 %.2f after enqueue returned"
              "   target p50 <= 20 ms (%.2f x target)\n",
              ino.p50_call, ino.p99_call, ino.p50_return, ino.p99_return, ino.p50_call / 20.0);
  auto pol = latency(root / "lat-poll", queue::Wakeup::poll, poll_samples);
  std::printf("  polling (500 ms + jitter): p50 %.1f  p99 %.1f from the call; p50 %.1f  p99 %.1f after\n",
              pol.p50_call, pol.p99_call, pol.p50_return, pol.p99_return);
  double create_after = create_cost_us(root / "create-after", 2000);
  std::printf("\ncreating an empty file: %.0f us before the runs, %.0f us after (a job creates 2 files;\n"
              "  on ext4 without a journal, files deleted near this folder in the last minutes slow every creation)\n",
              create_before, create_after);
  fs::remove_all(root);
  return 0;
}
