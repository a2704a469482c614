#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <unistd.h>

#include <memory>

#include "tests/integration/queue/common.hpp"

using namespace iaserve;
using namespace iaserve::test;
using namespace iaserve::test::queue_support;
using namespace std::chrono_literals;

namespace {

// One FUSE mount of a folder made by bindfs, unmounted at the end. Two of
// them on one folder play two hosts sharing a share.
class BindMount {
 public:
  BindMount(const fs::path& src, const fs::path& mnt, bool lock_forwarding) : mnt_(mnt) {
    fs::create_directories(mnt);
    std::vector<std::string> argv = {"/usr/bin/bindfs"};
    if (lock_forwarding) argv.insert(argv.end(), {"--multithreaded", "--enable-lock-forwarding"});
    argv.insert(argv.end(), {src.string(), mnt.string()});
    auto r = run(argv, 30s);
    if (r.code != 0) throw std::runtime_error("bindfs " + mnt.string() + ": " + r.err);
    mounted_ = true;
  }
  ~BindMount() {
    if (mounted_ && ::umount2(mnt_.c_str(), 0) != 0) ::umount2(mnt_.c_str(), MNT_DETACH);
  }
  const fs::path& path() const { return mnt_; }

 private:
  fs::path mnt_;
  bool mounted_ = false;
};

// Why this machine cannot run the test, or empty.
std::string cannot_mount() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "/dev/fuse is absent or not usable";
  if (::access("/usr/bin/bindfs", X_OK) != 0) return "bindfs is not installed (scripts/setup)";
  return {};
}

bool flock_shared(const fs::path& a, const fs::path& b) {
  int fa = ::open((a / "probe.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int fb = ::open((b / "probe.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  bool shared = ::flock(fa, LOCK_EX | LOCK_NB) == 0 && ::flock(fb, LOCK_EX | LOCK_NB) != 0;
  ::close(fa);
  ::close(fb);
  ::unlink((a / "probe.lock").c_str());
  return shared;
}

void two_hosts(bool lock_forwarding) {
  auto why = cannot_mount();
  if (!why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  TempDir t;
  auto src = t / "share", out = t / "out";
  fs::create_directories(src / "q");
  fs::create_directories(out);
  BindMount host_a(src, t / "a", lock_forwarding), host_b(src, t / "b", lock_forwarding);
  // The premise of the test: the mounts do (or do not) share flock.
  REQUIRE(flock_shared(host_a.path(), host_b.path()) == lock_forwarding);

  const int jobs = 300;
  auto ids = enqueue_many(host_a.path() / "q", jobs, 4);
  {
    queue::Queue qa(host_a.path() / "q");
    CHECK(qa.wakeup() == queue::Wakeup::poll);  // FUSE: inotify would not see the other host
    CHECK_FALSE(qa.selftest().local);
  }
  std::vector<std::unique_ptr<Process>> workers;
  const std::vector<std::string> opts = {"--idle-ms", "200", "--poll-ms", "20",
                                         "--lease-interval-ms", "100", "--lease-timeout-ms", "3000",
                                         "--hold-max-ms", "5"};
  for (int i = 0; i < 6; ++i) {
    auto& host = i % 2 ? host_b : host_a;
    workers.push_back(std::make_unique<Process>(worker_argv(host.path() / "q", out, opts), kQuiet));
  }
  for (auto& w : workers) {
    auto code = w->wait(120s);
    REQUIRE(code);
    INFO(w->stderr_text());
    CHECK(*code == 0);
  }
  check_each_ran_once(out, ids);
  queue::Queue qb(host_b.path() / "q");
  auto s = qb.stats();
  CHECK(s.done == static_cast<std::size_t>(jobs));
  CHECK(s.pending + s.active + s.failed == 0);
  // Both hosts worked.
  std::size_t on_a = 0, on_b = 0;
  for (std::size_t i = 0; i < workers.size(); ++i) (i % 2 ? on_b : on_a) += completed_by(*workers[i]);
  CHECK(on_a + on_b == static_cast<std::size_t>(jobs));
  CHECK(on_a > 0);
  CHECK(on_b > 0);
}

}  // namespace

TEST_CASE("two hosts sharing flock (bindfs --enable-lock-forwarding): each job once",
          "[queue][mounts]") {
  two_hosts(true);
}

TEST_CASE("two hosts whose flock is per mount (bindfs): rename and lease keep jobs exclusive",
          "[queue][mounts]") {
  two_hosts(false);
}

TEST_CASE("a live worker on another host is not recovered while its lease is fresh", "[queue][mounts]") {
  auto why = cannot_mount();
  if (!why.empty()) {
    WARN("skipped: " << why);
    return;
  }
  log::setup("warn");
  TempDir t;
  auto src = t / "share";
  fs::create_directories(src / "q");
  BindMount host_a(src, t / "a", false), host_b(src, t / "b", false);
  queue::Options o;
  o.lease_interval = 50ms;
  o.lease_timeout = 400ms;
  queue::Queue qa(host_a.path() / "q", o), qb(host_b.path() / "q", o);
  auto id = qa.enqueue({"s1", "app", 0, {}});
  auto claim = qa.try_claim();
  REQUIRE(claim);
  std::this_thread::sleep_for(1s);  // two lease timeouts: only the heartbeat keeps it
  // Host B takes the lock (flock is per mount) but the lease is fresh.
  auto r = qb.recover_orphans();
  CHECK(r.requeued == 0);
  CHECK(qb.find(id)->state == queue::State::active);
  CHECK_FALSE(qb.try_claim());
  claim->complete();
  CHECK(qb.find(id)->state == queue::State::done);
}
