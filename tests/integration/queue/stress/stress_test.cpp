#include <catch2/catch.hpp>

#include <csignal>
#include <memory>
#include <random>

#include "tests/integration/queue/common.hpp"

using namespace iaserve;
using namespace iaserve::test;
using namespace iaserve::test::queue_support;
using namespace std::chrono_literals;

TEST_CASE("8 worker processes, 2,000 jobs: every job done exactly once", "[queue][stress]") {
  TempDir t;
  auto dir = t / "q", out = t / "out";
  fs::create_directories(out);
  // The jobs go in without fsync (enqueue durability has its unit test):
  // this test is about the claims, and must stay short on a busy machine.
  queue::Options no_sync;
  no_sync.fsync = false;
  auto ids = enqueue_many(dir, 2000, 8, no_sync);
  REQUIRE(ids.size() == 2000);

  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 0; i < 8; ++i)
    workers.push_back(std::make_unique<Process>(
        worker_argv(dir, out, {"--idle-ms", "200", "--lease-interval-ms", "500"}), kQuiet));
  for (auto& w : workers) {
    auto code = w->wait(150s);
    REQUIRE(code);
    INFO(w->stderr_text());
    CHECK(*code == 0);
  }
  auto side = read_side_files(out);
  CHECK(side.doubles.empty());
  CHECK(side.done.size() == 2000);
  std::size_t twice = 0;
  for (auto& id : ids) {
    auto it = side.done.find(id);
    if (it == side.done.end() || it->second != std::set<int>{0}) ++twice;
    if (side.start[id] != std::set<int>{0}) ++twice;
  }
  CHECK(twice == 0);
  queue::Queue q(dir);
  auto s = q.stats();
  CHECK(s.done == 2000);
  CHECK(s.pending + s.active + s.failed + s.cancelled == 0);
  // Each worker took part: the claims are spread, not serialised on one.
  std::size_t total = 0;
  for (auto& w : workers) {
    auto text = w->stdout_text();
    REQUIRE(text.rfind("completed ", 0) == 0);
    total += std::stoul(text.substr(10));
  }
  CHECK(total == 2000);
}

TEST_CASE("workers killed -9 at random points: every job ends done or failed with its attempts",
          "[queue][stress][crash]") {
  TempDir t;
  auto dir = t / "q", out = t / "out";
  fs::create_directories(out);
  const int jobs = 300, max_attempts = 4;
  queue::Options no_sync;
  no_sync.fsync = false;
  auto ids = enqueue_many(dir, jobs, 8, no_sync);
  const std::vector<std::string> opts = {
      "--idle-ms", "100", "--lease-interval-ms", "50", "--lease-timeout-ms", "400",
      "--recover-ms", "100", "--max-attempts", std::to_string(max_attempts), "--hold-max-ms", "15",
      "--self-kill-per-mille", "20"};
  std::vector<std::unique_ptr<Process>> workers;
  for (int i = 0; i < 6; ++i) workers.push_back(std::make_unique<Process>(worker_argv(dir, out, opts), kQuiet));

  std::mt19937 rng(12345);
  int external_kills = 0, self_kills = 0, restarts = 0;
  std::vector<std::string> doubled;
  queue::Queue q(dir);
  auto deadline = std::chrono::steady_clock::now() + 90s;
  auto next_kill = std::chrono::steady_clock::now() + 150ms;
  bool drained = false;
  while (std::chrono::steady_clock::now() < deadline) {
    bool any_running = false;
    for (auto& w : workers) {
      if (w->running()) {
        any_running = true;
        continue;
      }
      auto code = w->wait(0ms);
      if (code == 3) doubled.push_back(w->stderr_text());
      if (code == 128 + SIGKILL) ++self_kills;
      if (code == 0 && drained) continue;
      if (code == 0) {
        auto s = q.stats();
        if (s.pending == 0 && s.active == 0) continue;
      }
      w = std::make_unique<Process>(worker_argv(dir, out, opts), kQuiet);
      ++restarts;
      any_running = true;
    }
    auto s = q.stats();
    drained = s.pending == 0 && s.active == 0;
    if (drained && !any_running) break;
    if (!drained && std::chrono::steady_clock::now() >= next_kill) {
      auto& victim = workers[std::uniform_int_distribution<std::size_t>(0, workers.size() - 1)(rng)];
      if (victim->running()) {
        victim->kill9();
        victim->wait(5s);
        ++external_kills;
        victim = std::make_unique<Process>(worker_argv(dir, out, opts), kQuiet);
      }
      next_kill = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 250)(rng));
    }
    std::this_thread::sleep_for(10ms);
  }
  for (auto& w : workers) w.reset();
  INFO("external kills " << external_kills << ", self kills " << self_kills << ", restarts " << restarts);
  std::string caught;
  for (auto& d : doubled) caught += "a worker caught a double run:\n" + d.substr(0, 3000) + "\n";
  INFO(caught);
  REQUIRE(doubled.empty());
  auto s = q.stats();
  REQUIRE(s.pending == 0);
  REQUIRE(s.active == 0);
  CHECK(s.done + s.failed == static_cast<std::size_t>(jobs));
  CHECK(s.cancelled == 0);
  CHECK(external_kills + self_kills > 10);  // the test did kill workers

  auto side = read_side_files(out);
  CHECK(side.doubles.empty());
  int retried = 0, bad = 0;
  for (auto& job : q.list(queue::State::done)) {
    int a = job.attempts;
    if (a > 0) ++retried;
    auto& st = side.start[job.id];
    auto& dn = side.done[job.id];
    // The run that completed had the final attempt number; no run came after it.
    bool ok = st.count(a) && dn.count(a) && *st.rbegin() == a && a < max_attempts;
    for (int k : side.kill[job.id]) ok = ok && k < a;
    if (!ok) {
      ++bad;
      UNSCOPED_INFO("done job " << job.id << " attempts " << a);
    }
  }
  for (auto& job : q.list(queue::State::failed)) {
    auto& st = side.start[job.id];
    bool ok = job.attempts == max_attempts && job.last_error.find("worker lost") != std::string::npos &&
              (st.empty() || *st.rbegin() < max_attempts);
    if (!ok) {
      ++bad;
      UNSCOPED_INFO("failed job " << job.id << " attempts " << job.attempts << ": " << job.last_error);
    }
  }
  CHECK(bad == 0);
  CHECK(retried > 0);
}
