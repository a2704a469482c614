#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <csignal>
#include <fstream>
#include <map>
#include <set>
#include <atomic>
#include <limits>
#include <thread>

#include "queue/queue.hpp"
#include "queue/record.hpp"
#include "tests/support/process.hpp"

using namespace iaserve::queue;
using iaserve::test::read_file;
using iaserve::test::TempDir;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

JobSpec spec(const std::string& slide, int priority = 0, const std::string& app = "tissue") {
  JobSpec s;
  s.slide_key = slide;
  s.app_id = app;
  s.priority = priority;
  s.payload = json::object{{"slide", slide}, {"token", "secret-bearer-token"}};
  return s;
}

std::vector<std::string> files(const fs::path& dir, const std::string& suffix = ".json") {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) {
    auto n = e.path().filename().string();
    if (n.size() >= suffix.size() && n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0)
      out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Options fast() {
  Options o;
  o.lease_interval = 50ms;
  o.lease_timeout = 300ms;
  o.recover_interval = 0ms;
  return o;
}

// Runs fn in a forked child; its exit code (128+signal when killed).
template <class F>
int in_child(F fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      code = 98;
    }
    ::_exit(code);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFSIGNALED(st) ? 128 + WTERMSIG(st) : WEXITSTATUS(st);
}

}  // namespace

TEST_CASE("opening makes the state folders 0700 and runs the flock self-test", "[queue]") {
  TempDir t;
  Queue q(t / "q");
  for (auto s : {"pending", "active", "done", "failed", "cancelled", "tmp", "locks"}) {
    struct stat st {};
    REQUIRE(::stat((t / "q" / s).c_str(), &st) == 0);
    CHECK(S_ISDIR(st.st_mode));
    CHECK((st.st_mode & 0777) == 0700);
  }
  auto s = q.selftest();
  CHECK(s.flock_excludes);
  CHECK(s.writable);
  CHECK(s.local);
  CHECK(q.wakeup() == Wakeup::inotify);
  CHECK(q.writable());
  CHECK(files(t / "q", ".lock").empty());  // the self-test lock file is gone
}

TEST_CASE("a file where a state folder should be is an error naming it", "[queue][error]") {
  TempDir t;
  fs::create_directories(t / "q");
  std::ofstream(t / "q" / "active") << "x";
  REQUIRE_THROWS_WITH(Queue(t / "q"), Catch::Matches(".*/q/active: (not a folder|create folder.*)"));
  Options o;
  o.create = false;
  REQUIRE_THROWS_WITH(Queue(t / "absent", o), Catch::Contains("absent: no such folder"));
}

TEST_CASE("job and lease records survive a round trip", "[queue][record]") {
  record::JobFile f;
  f.job.id = record::make_id(7, 1234567890123456789LL, record::slide_hash("a", "s"), "0badf00d");
  f.job.app_id = "a";
  f.job.slide_key = "s";
  f.job.priority = 7;
  f.job.attempts = 2;
  f.job.enqueued = record::from_ns(1234567890123456789LL);
  f.job.finished = record::from_ns(1234567890123456999LL);
  f.job.last_error = "boom";
  f.job.summary = json::object{{"n", 3}};
  f.job.payload = json::object{{"x", json::array{1, 2}}};
  f.outcome = record::Outcome{"done", "r1"};
  f.claim = record::ClaimRecord{"r1", "host-1-abcd"};
  auto text = record::encode_job(f);
  auto back = record::decode_job(text, f.job.id);
  CHECK(record::encode_job(back) == text);

  // Updates appended to the first line apply in order; a torn or malformed
  // one (a crash mid-append) is ignored, and so is what it would have said.
  record::JobFile later = back;
  later.job.attempts = 3;
  later.job.last_error = "lost";
  later.outcome.reset();
  std::string appended = text + "\n" + record::encode_claim({"r2", "host-2-beef"}) +
                         record::encode_update(later) + "\n{\"update\":1,\"attempts\":9";
  auto merged = record::decode_job(appended, f.job.id);
  CHECK(merged.job.attempts == 3);
  CHECK(merged.job.last_error == "lost");
  CHECK_FALSE(merged.outcome);
  REQUIRE(merged.claim);
  CHECK(merged.claim->run == "r2");
  CHECK(merged.job.payload == f.job.payload);
  auto after_torn = record::decode_job(appended + record::encode_note("superseded by x", record::from_ns(5)), f.job.id);
  CHECK(after_torn.job.attempts == 3);  // the torn line stays ignored
  CHECK(after_torn.job.last_error == "superseded by x");
  auto p = record::parse_id(f.job.id);
  REQUIRE(p);
  CHECK(p->priority == 7);
  CHECK(p->time_ns == 1234567890123456789LL);
  CHECK_FALSE(record::parse_id("../../etc/passwd"));
  REQUIRE_THROWS_WITH(record::decode_job(text, "other"), Catch::Contains("does not match the file name"));
  REQUIRE_THROWS_WITH(record::decode_job("{\"id\":1}", "x"), Catch::Contains("field id: expected string"));
  REQUIRE_THROWS_WITH(record::decode_job("[", "x"), Catch::Contains("not JSON"));

  record::LeaseFile l{{"host1", 42, record::from_ns(99), "worker-a", "boot-1:2049"}, "run"};
  auto lt = record::encode_lease(l);
  auto lb = record::decode_lease(lt);
  REQUIRE(lb);
  CHECK(record::encode_lease(*lb) == lt);
  CHECK(lb->lease.label == "worker-a");
  CHECK(lb->lease.domain == "boot-1:2049");
  auto unlabelled = record::decode_lease(R"({"host":"h","pid":1,"time_ns":5,"run":"r"})");  // older writers
  REQUIRE(unlabelled);
  CHECK(unlabelled->lease.label.empty());
  // The flock domain under its own key: a lease of a version that held its
  // flock on the lease file ("domain") is judged by its age alone, and such
  // a version does not read this one's.
  CHECK(lt.find("\"alive_domain\":\"boot-1:2049\"") != std::string::npos);
  CHECK(lt.find("\"domain\"") == std::string::npos);
  auto older = record::decode_lease(R"({"host":"h","pid":1,"time_ns":5,"run":"r","domain":"boot-1:2049"})");
  REQUIRE(older);
  CHECK(older->lease.domain.empty());
  CHECK_FALSE(record::decode_lease("{\"host\":3}"));
}

TEST_CASE("enqueue writes one 0600 file, claims go by priority, then age", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto a = q.enqueue(spec("s1"));
  auto b = q.enqueue(spec("s2", 5));
  auto c = q.enqueue(spec("s3"));
  REQUIRE(files(t / "q" / "pending").size() == 3);
  struct stat st {};
  REQUIRE(::stat((t / "q" / "pending" / (a + ".json")).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(files(t / "q" / "tmp", "").empty());
  auto job = q.find(a);
  REQUIRE(job);
  CHECK(job->state == State::pending);
  CHECK(job->slide_key == "s1");
  CHECK(job->payload.at("token") == "secret-bearer-token");

  std::vector<std::string> order;
  for (int i = 0; i < 3; ++i) {
    auto claim = q.try_claim();
    REQUIRE(claim);
    order.push_back(claim->job().id);
    claim->complete();
  }
  CHECK(order == std::vector<std::string>{b, a, c});
  CHECK_FALSE(q.try_claim());
  CHECK(q.stats().done == 3);
}

TEST_CASE("recent gives the newest jobs of a state, processes lists the leases", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  CHECK(q.recent(State::done, 5).empty());
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back(q.enqueue(spec("s" + std::to_string(i), i % 2 ? 7 : 0)));  // priority does not reorder it
    std::this_thread::sleep_for(2ms);
  }
  auto newest = q.recent(State::pending, 3);
  REQUIRE(newest.size() == 3);
  CHECK(newest[0].id == ids[5]);
  CHECK(newest[1].id == ids[4]);
  CHECK(newest[2].id == ids[3]);
  CHECK(newest[0].slide_key == "s5");
  CHECK(q.recent(State::pending, 100).size() == 6);
  CHECK(q.recent(State::pending, 0).empty());

  auto claim = q.try_claim();
  REQUIRE(claim);
  claim->complete(json::object{{"displayResult", "ok"}});
  auto done = q.recent(State::done, 10);
  REQUIRE(done.size() == 1);
  CHECK(done[0].summary.at("displayResult") == "ok");
  CHECK(done[0].finished.time_since_epoch().count() != 0);

  // This process claimed: its lease, fresh, with its pid. A file that is not
  // a lease is left out.
  std::ofstream(t / "q" / "leases" / "junk.lease") << "not json";
  auto procs = q.processes();
  REQUIRE(procs.size() == 1);
  CHECK(procs[0].lease.pid == ::getpid());
  CHECK_FALSE(procs[0].stale);
  CHECK(files(t / "q" / "leases", ".lease").size() == 2);
  claim.reset();
}

TEST_CASE("claim, lease, complete: active then done, nothing deleted on the way", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto id = q.enqueue(spec("s1"));
  auto claim = q.try_claim();
  REQUIRE(claim);
  CHECK(claim->held());
  CHECK(claim->job().id == id);
  CHECK(claim->job().state == State::active);
  CHECK(fs::exists(t / "q" / "active" / (id + ".json")));
  CHECK(fs::exists(t / "q" / "locks" / (id + ".lock")));
  // The job names the claiming process's lease, one file for all its claims.
  auto active = [&] {
    return record::decode_job(read_file(t / "q" / "active" / (id + ".json")), id);
  }();
  REQUIRE(active.claim);
  // Beside it the file whose flock says the process lives (never written:
  // on CIFS a shared flock would refuse the lease's own heartbeat writes).
  CHECK(files(t / "q" / "leases", "") ==
        std::vector<std::string>{active.claim->lease + ".alive", active.claim->lease + ".lease"});
  CHECK_FALSE(q.try_claim());  // nothing else pending

  auto st = q.stats();
  CHECK(st.active == 1);
  REQUIRE(st.active_jobs.size() == 1);
  REQUIRE(st.active_jobs[0].lease);
  CHECK(st.active_jobs[0].lease->pid == ::getpid());

  claim->complete(json::object{{"regions", 4}});
  CHECK_FALSE(claim->held());
  CHECK_THROWS_WITH(claim->complete(), Catch::Contains("claim already ended"));
  auto done = q.find(id);
  REQUIRE(done);
  CHECK(done->state == State::done);
  CHECK(done->summary.at("regions") == 4);
  CHECK(done->finished.time_since_epoch().count() != 0);
  CHECK(files(t / "q" / "active", "").empty());
  // Nothing deleted on the way: the lock file stays until purge removes the
  // job, the lease until the process closes the queue.
  CHECK(fs::exists(t / "q" / "locks" / (id + ".lock")));
  CHECK(files(t / "q" / "leases", "").size() == 2);  // the lease and its alive file
  claim.reset();
  { Queue other(t / "q", fast()); }  // a queue that never claimed leaves no lease
  CHECK(files(t / "q" / "leases", "").size() == 2);
}

TEST_CASE("a closed queue removes its lease, a long-dead process's lease is swept", "[queue]") {
  TempDir t;
  auto o = fast();
  o.lease_timeout = 100ms;
  {
    Queue q(t / "q", o);
    q.enqueue(spec("s1"));
    q.try_claim()->complete();
    CHECK(files(t / "q" / "leases", ".lease").size() == 1);
    CHECK(files(t / "q" / "leases", ".alive").size() == 1);
  }
  CHECK(files(t / "q" / "leases", "").empty());  // both
  Queue q(t / "q", o);
  q.enqueue(spec("s2"));
  // An enqueuing process keeps a lease too (it names its journal).
  auto own = files(t / "q" / "leases", "");
  CHECK(own.size() == (q.commit() == Commit::journal ? 2u : 0u));
  REQUIRE(in_child([&] {
            Queue mine(t / "q", o);
            auto c = mine.try_claim();
            if (!c) return 1;
            c->complete();
            ::raise(SIGKILL);  // no destructor: the lease stays
            return 2;
          }) == 128 + SIGKILL);
  CHECK(files(t / "q" / "leases", "").size() == own.size() + 2);
  CHECK(q.recover_orphans().cleaned == 0);  // not old enough yet
  std::this_thread::sleep_for(10 * o.lease_timeout + 1100ms);
  CHECK(q.recover_orphans().cleaned >= 1);  // the lease, and its alive file once the lease is gone
  q.recover_orphans();
  CHECK(files(t / "q" / "leases", "") == own);  // a live process's lease stays
}

TEST_CASE("a failure reason of bad UTF-8 (a program's Latin-1 stderr) is kept readable, and attempts still count",
          "[queue]") {
  TempDir t;
  auto o = fast();
  o.max_attempts = 2;
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  for (int run = 1; run <= 2; ++run) {
    auto c = q.try_claim();
    REQUIRE(c);
    c->fail("exited with code 1; stderr: Gr\xf6\xdf" "e", true);
    auto j = q.find(id);
    REQUIRE(j);
    // Before, the record's update line was not JSON a reader takes: the
    // attempt was lost and the job retried for ever.
    CHECK(j->attempts == run);
    CHECK(j->last_error == "exited with code 1; stderr: Gr\uFFFD\uFFFDe");
  }
  CHECK(q.find(id)->state == State::failed);
}

TEST_CASE("a claim whose job was recovered elsewhere is lost, and abandoned without moving the job", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto id = q.enqueue(spec("s1"));
  auto c = q.try_claim();
  REQUIRE(c);
  CHECK_FALSE(c->lost());
  c->abandon();  // not lost: nothing happens
  CHECK(c->held());
  // What another host's recovery does after a stale lease.
  fs::rename(t / "q" / "active" / (id + ".json"), t / "q" / "pending" / (id + ".json"));
  for (int i = 0; i < 100 && !c->lost(); ++i) std::this_thread::sleep_for(20ms);
  REQUIRE(c->lost());
  c->abandon();
  CHECK_FALSE(c->held());
  c.reset();  // no release: the job stays where the other host put it
  auto j = q.find(id);
  REQUIRE(j);
  CHECK(j->state == State::pending);
  CHECK(j->attempts == 0);
  auto again = q.wait_claim(5s);  // seen anew, as another host's move is
  REQUIRE(again);
  CHECK(again->job().id == id);
}

TEST_CASE("a claim whose job was claimed again elsewhere at once is lost, and cannot finish the other run's job",
          "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto id = q.enqueue(spec("s1"));
  auto c = q.try_claim();
  REQUIRE(c);
  // Another host recovered the job and claimed it again before this run's
  // heartbeat looked: the file is back in active/, under that host's run
  // (flock does not reach across every share, so nothing here stops it).
  {
    std::ofstream(t / "q" / "active" / (id + ".json"), std::ios::app)
        << record::encode_claim(record::ClaimRecord{"0therrun", "other-host"});
  }
  for (int i = 0; i < 100 && !c->lost(); ++i) std::this_thread::sleep_for(20ms);
  CHECK(c->lost());
  CHECK_THROWS_AS(c->complete({}), QueueError);  // it would have moved the other run's job to done/
  CHECK(fs::exists(t / "q" / "active" / (id + ".json")));
  c->abandon();
  CHECK_FALSE(c->held());
}

TEST_CASE("fail with retry counts attempts up to max_attempts, then failed/", "[queue]") {
  TempDir t;
  auto o = fast();
  o.max_attempts = 2;
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  {
    auto c = q.try_claim();
    REQUIRE(c);
    c->fail("download: timeout", true);
  }
  auto j = q.find(id);
  REQUIRE(j);
  CHECK(j->state == State::pending);
  CHECK(j->attempts == 1);
  CHECK(j->last_error == "download: timeout");
  {
    auto c = q.try_claim();
    REQUIRE(c);
    CHECK(c->job().attempts == 1);
    c->fail("download: timeout again", true);
  }
  j = q.find(id);
  REQUIRE(j);
  CHECK(j->state == State::failed);
  CHECK(j->attempts == 2);
  CHECK(j->last_error == "download: timeout again");

  auto id2 = q.enqueue(spec("s2"));
  {
    auto c = q.try_claim();
    REQUIRE(c);
    c->fail("not a slide", false);
  }
  CHECK(q.find(id2)->state == State::failed);
  CHECK(q.find(id2)->attempts == 1);

  REQUIRE(q.requeue(id));
  j = q.find(id);
  CHECK(j->state == State::pending);
  CHECK(j->attempts == 0);
  CHECK_FALSE(q.requeue(id));  // already pending
  CHECK_FALSE(q.requeue("../../etc/passwd"));
}

TEST_CASE("each claim generation of a job is taken by making its marker folder", "[queue]") {
  TempDir t;
  auto o = fast();
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  auto marker = [&](int g) { return t / "q" / "claims" / (id + "." + std::to_string(g)); };
  {
    auto c = q.try_claim();
    REQUIRE(c);
    CHECK(fs::exists(marker(0)));
    c->fail("timeout", true);  // back to pending: the next claim is generation 1
  }
  {
    auto c = q.try_claim();
    REQUIRE(c);
    CHECK(fs::exists(marker(1)));
    c->release();
  }
  // Generation 2 taken by a claim elsewhere, or one that died before its
  // rename: the job waits until the marker is older than lease_timeout.
  fs::create_directory(marker(2));
  CHECK_FALSE(q.try_claim());
  CHECK(q.find(id)->state == State::pending);
  std::this_thread::sleep_for(o.lease_timeout + 100ms);
  CHECK_FALSE(q.try_claim());  // this pass starts generation 3
  auto c = q.try_claim();
  REQUIRE(c);
  CHECK(c->job().id == id);
  CHECK(fs::exists(marker(3)));
  CHECK(c->job().attempts == 1);  // the dead claim is not an attempt
  c->complete();
  CHECK(q.purge(0s) == 1);
  for (int g = 0; g < 4; ++g) CHECK_FALSE(fs::exists(marker(g)));
  CHECK_FALSE(fs::exists(t / "q" / "locks" / (id + ".lock")));
}

TEST_CASE("release and a dropped claim return the job without counting", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto id = q.enqueue(spec("s1"));
  {
    auto c = q.try_claim();
    REQUIRE(c);
    c->release();
    CHECK_FALSE(c->held());
  }
  CHECK(q.find(id)->state == State::pending);
  {
    auto c = q.try_claim();
    REQUIRE(c);
    Claim moved = std::move(*c);
    CHECK(moved.held());
  }  // dropped
  auto j = q.find(id);
  CHECK(j->state == State::pending);
  CHECK(j->attempts == 0);
  CHECK(files(t / "q" / "active", "").empty());
}

TEST_CASE("a new request for a pending slide replaces it, other slides and apps stay", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto first = q.enqueue(spec("s1"));
  auto other_app = q.enqueue(spec("s1", 0, "stain"));
  auto s = spec("s1");
  s.payload["token"] = "newer-token";
  auto second = q.enqueue(s);
  auto pending = q.list(State::pending);
  REQUIRE(pending.size() == 2);
  CHECK(q.find(first)->state == State::cancelled);
  auto j = q.find(second);
  CHECK(j->state == State::pending);
  CHECK(j->payload.at("token") == "newer-token");
  CHECK(q.find(other_app)->state == State::pending);
}

TEST_CASE("requests of one slide from two enqueuing processes: the newest runs, the older is superseded",
          "[queue]") {
  TempDir t;
  Queue p1(t / "q", fast());
  Queue p2(t / "q", fast());
  p2.enqueue(spec("other"));  // p2 has looked at pending/ before p1's request
  auto a = p1.enqueue(spec("s1"));
  auto b = p2.enqueue(spec("s1"));  // p2 does not know of a: both wait
  CHECK(p1.find(a)->state == State::pending);
  Queue worker(t / "q", fast());
  std::vector<std::string> ran;
  while (auto c = worker.try_claim()) {
    ran.push_back(c->job().id);
    c->complete();
  }
  CHECK(std::count(ran.begin(), ran.end(), b) == 1);
  CHECK(std::count(ran.begin(), ran.end(), a) == 0);
  auto old = worker.find(a);
  CHECK(old->state == State::cancelled);
  CHECK(old->last_error == "superseded by " + b);

  // The newer one already running (it came first by priority): the older
  // one is superseded when claimed, not run after it.
  auto c1 = p1.enqueue(spec("s2"));
  auto c2 = p2.enqueue(spec("s2", 5));
  auto running = worker.try_claim();
  REQUIRE(running);
  CHECK(running->job().id == c2);
  CHECK_FALSE(worker.try_claim());
  CHECK(worker.find(c1)->state == State::cancelled);
  CHECK(worker.find(c1)->last_error == "superseded by " + c2);
  running->complete();
}

TEST_CASE("a request for a slide being worked on waits for that run", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto a = q.enqueue(spec("s1"));
  auto running = q.try_claim();
  REQUIRE(running);
  auto again = q.enqueue(spec("s1"));
  auto other = q.enqueue(spec("s2"));
  CHECK(q.find(a)->state == State::active);  // not superseded: it is running
  auto c = q.try_claim();
  REQUIRE(c);
  CHECK(c->job().id == other);  // s1's new job is skipped while s1 runs
  CHECK_FALSE(q.try_claim());
  running->complete();
  auto next = q.try_claim();
  REQUIRE(next);
  CHECK(next->job().id == again);
}

TEST_CASE("wait_claim wakes on a new job (inotify and polling) and on interrupt", "[queue]") {
  for (auto mode : {Wakeup::inotify, Wakeup::poll}) {
    TempDir t;
    auto o = fast();
    o.wakeup = mode;
    o.poll_interval = 20ms;
    Queue q(t / "q", o);
    CHECK(q.wakeup() == mode);
    std::string id;
    std::thread producer([&] {
      std::this_thread::sleep_for(50ms);
      Queue other(t / "q", o);
      id = other.enqueue(spec("s1"));
    });
    auto c = q.wait_claim(30s);
    producer.join();
    REQUIRE(c);
    CHECK(c->job().id == id);
    c->complete();

    std::thread stopper([&] {
      std::this_thread::sleep_for(50ms);
      q.interrupt();
    });
    auto none = q.wait_claim(60s);  // returns at the interrupt, not after 60 s
    stopper.join();
    CHECK_FALSE(none);
  }
}

TEST_CASE("cancel: pending to cancelled/, active gets a mark its claim sees", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto p = q.enqueue(spec("s1"));
  auto a = q.enqueue(spec("s2"));
  auto c = q.try_claim();
  REQUIRE(c);
  REQUIRE(c->job().id == p);
  CHECK_FALSE(c->cancel_requested());
  CHECK(q.cancel(a));
  CHECK(q.find(a)->state == State::cancelled);
  CHECK(q.cancel(p));
  CHECK(c->cancel_requested());
  CHECK(q.find(p)->cancel_requested);
  c->release();  // a worker stopping for a cancel
  CHECK(q.find(p)->state == State::cancelled);
  CHECK_FALSE(fs::exists(t / "q" / "active" / (p + ".cancel")));
  CHECK_FALSE(q.cancel(p));
  CHECK_FALSE(q.cancel("no-such-job"));

  auto x = q.enqueue(spec("s3"));
  auto y = q.enqueue(spec("s3", 0, "stain"));
  CHECK(q.cancel_slide("tissue", "s3") == 1);
  CHECK(q.find(x)->state == State::cancelled);
  CHECK(q.find(y)->state == State::pending);
  CHECK(q.cancel_slide_any_app("s3") == 1);
  CHECK(q.find(y)->state == State::cancelled);
}

TEST_CASE("a worker killed while holding a job: recovered with attempts + 1, then failed/", "[queue]") {
  TempDir t;
  auto o = fast();
  o.max_attempts = 2;
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  auto die_holding = [&] {
    return in_child([&] {
      Queue mine(t / "q", o);
      auto c = mine.try_claim();
      if (!c) return 1;
      ::raise(SIGKILL);
      return 2;
    });
  };
  REQUIRE(die_holding() == 128 + SIGKILL);
  CHECK(q.find(id)->state == State::active);
  // Lock free, lease fresh, but the lease is of this flock domain (this
  // kernel, this mount) and its flock is free: the worker is gone, now.
  auto r = q.recover_orphans();
  CHECK(r.requeued == 1);
  auto j = q.find(id);
  CHECK(j->state == State::pending);
  CHECK(j->attempts == 1);
  CHECK_THAT(j->last_error, Catch::Contains("worker lost") && Catch::Contains("pid") && Catch::Contains("gone"));
  CHECK(files(t / "q" / "active", "").empty());

  // A lease from another domain (another host or mount, where a free flock
  // says nothing): only its age makes the job an orphan.
  REQUIRE(die_holding() == 128 + SIGKILL);
  for (const auto& e : fs::directory_iterator(t / "q" / "leases")) {
    if (e.path().extension() != ".lease") continue;
    auto l = record::decode_lease(read_file(e.path()));
    REQUIRE(l);
    l->lease.domain = "another-boot:1";
    std::ofstream(e.path(), std::ios::trunc) << record::encode_lease(*l);
  }
  r = q.recover_orphans();
  CHECK(r.requeued + r.failed == 0);
  CHECK(q.find(id)->state == State::active);
  std::this_thread::sleep_for(o.lease_timeout + 100ms);
  r = q.recover_orphans();
  CHECK(r.failed == 1);
  j = q.find(id);
  CHECK(j->state == State::failed);
  CHECK(j->attempts == 2);
}

TEST_CASE("a claim that could not be ended (share errors) is returned by its own process's next sweep",
          "[queue]") {
  TempDir t;
  auto o = fast();
  o.lease_timeout = 60s;  // the lease stays fresh: only the dropped run says it is free
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  {
    auto c = q.try_claim();
    REQUIRE(c);
    // done/ and pending/ unreachable: complete() fails, and so does the
    // release when the claim is dropped.
    fs::rename(t / "q" / "done", t / "q" / "done.away");
    fs::rename(t / "q" / "pending", t / "q" / "pending.away");
    CHECK_THROWS_AS(c->complete(), QueueError);
  }
  fs::rename(t / "q" / "done.away", t / "q" / "done");
  fs::rename(t / "q" / "pending.away", t / "q" / "pending");
  REQUIRE(q.find(id)->state == State::active);
  // Another process on this host (lease locked: this one lives) leaves it.
  REQUIRE(in_child([&] {
            Queue other(t / "q", o);
            auto r = other.recover_orphans();
            return r.requeued + r.failed + r.cleaned + r.cancelled == 0 ? 0 : 1;
          }) == 0);
  REQUIRE(q.find(id)->state == State::active);
  // This process knows its run let go of it: the next sweep finishes the
  // move complete() recorded (the outcome "done" of this run), uncounted.
  auto r = q.recover_orphans();
  CHECK(r.cleaned == 1);
  auto j = q.find(id);
  REQUIRE(j);
  CHECK(j->state == State::done);
  CHECK(j->attempts == 0);
  CHECK(files(t / "q" / "active", "").empty());
}

TEST_CASE("ending a claim again after a failed try counts the run once", "[queue]") {
  TempDir t;
  auto o = fast();
  o.max_attempts = 3;
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  auto c = q.try_claim();
  REQUIRE(c);
  fs::rename(t / "q" / "pending", t / "q" / "pending.away");
  CHECK_THROWS_AS(c->fail("transient", true), QueueError);
  CHECK_THROWS_AS(c->fail("transient", true), QueueError);
  fs::rename(t / "q" / "pending.away", t / "q" / "pending");
  c->fail("transient", true);
  auto j = q.find(id);
  REQUIRE(j);
  CHECK(j->state == State::pending);
  CHECK(j->attempts == 1);
}

TEST_CASE("a live claim is never recovered, even with its lock file unlinked", "[queue]") {
  TempDir t;
  auto o = fast();
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  auto c = q.try_claim();
  REQUIRE(c);
  // Someone removes the lock file: a new opener would lock a fresh inode.
  REQUIRE(fs::remove(t / "q" / "locks" / (id + ".lock")));
  std::this_thread::sleep_for(o.lease_timeout + 100ms);  // several heartbeats
  auto r = q.recover_orphans();  // lock looks free; the fresh lease keeps it
  CHECK(r.requeued == 0);
  CHECK(q.find(id)->state == State::active);
  CHECK_FALSE(c->cancel_requested());
  c->complete();
  CHECK(q.find(id)->state == State::done);
}

TEST_CASE("a worker that died between writing the outcome and moving: finished, not counted", "[queue]") {
  TempDir t;
  auto o = fast();
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("s1"));
  std::string run;
  REQUIRE(in_child([&] {
            Queue mine(t / "q", o);
            auto c = mine.try_claim();
            if (!c) return 1;
            // What complete() writes before its rename.
            auto claimed = record::decode_job([&] {
              return read_file(t / "q" / "active" / (id + ".json"));
            }(), id);
            if (!claimed.claim) return 3;
            record::JobFile f;
            f.job = c->job();
            f.claim = claimed.claim;
            f.outcome = record::Outcome{"done", claimed.claim->run};
            std::ofstream(t / "q" / "active" / (id + ".json")) << record::encode_job(f);
            ::raise(SIGKILL);
            return 2;
          }) == 128 + SIGKILL);
  std::this_thread::sleep_for(o.lease_timeout + 100ms);
  auto r = q.recover_orphans();
  CHECK(r.cleaned == 1);
  CHECK(r.requeued == 0);
  auto j = q.find(id);
  CHECK(j->state == State::done);
  CHECK(j->attempts == 0);
}

TEST_CASE("corrupt job files go to failed/ with the cause, the claim loop goes on", "[queue][error]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto good = q.enqueue(spec("s1"));
  std::string bad_id = record::make_id(100, 1, record::slide_hash("x", "y"), "00000000");
  std::ofstream(t / "q" / "pending" / (bad_id + ".json")) << "{\"id\": \"trunc";
  std::ofstream(t / "q" / "pending" / "junk.json") << "[1,2]";
  auto c = q.try_claim();
  REQUIRE(c);
  CHECK(c->job().id == good);
  c->complete();
  CHECK_FALSE(q.try_claim());  // reaches junk.json, moves it aside, finds nothing
  CHECK(files(t / "q" / "pending").empty());
  auto failed = q.list(State::failed);
  REQUIRE(failed.size() == 2);
  auto j = q.find(bad_id);
  REQUIRE(j);
  CHECK(j->state == State::failed);
  CHECK_THAT(j->last_error, Catch::Contains("pending/" + bad_id + ".json: corrupt job file: not JSON"));
  CHECK(fs::exists(t / "q" / "failed" / (bad_id + ".corrupt")));
  CHECK_THAT(q.find("junk")->last_error, Catch::Contains("not a JSON object"));
}

TEST_CASE("a cancel that answers yes is never lost, however it races the job's release", "[queue][cancel]") {
  TempDir t;
  Queue q(t / "q", fast());
  int acknowledged = 0;
  for (int i = 0; i < 300; ++i) {
    auto id = q.enqueue(spec("s" + std::to_string(i)));
    auto c = q.try_claim();
    REQUIRE(c);
    REQUIRE(c->job().id == id);
    std::atomic<bool> go{false};
    bool said_yes = false;
    std::thread canceller([&] {
      while (!go) {
      }
      said_yes = q.cancel(id);
    });
    go = true;
    c->release();
    canceller.join();
    auto j = q.find(id);
    REQUIRE(j);
    INFO("round " << i << ": cancel said " << said_yes << ", job " << to_string(j->state));
    if (said_yes) {
      ++acknowledged;
      CHECK(j->state == State::cancelled);
    }
    if (j->state == State::pending) q.cancel(id);  // out of the next rounds' way
  }
  CHECK(acknowledged > 0);
}

TEST_CASE("a job file that cannot be read for now is left where it is, not taken for corrupt", "[queue][error]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto id = q.enqueue(spec("s1"));
  const fs::path file = t / "q" / "pending" / (id + ".json");
  // read(2) failing on it (EISDIR here; EIO or EMFILE on a share that
  // reconnects): the job stays, untouched, and is claimed once readable.
  fs::rename(file, t / "q" / "aside.json");
  fs::create_directory(file);
  CHECK_FALSE(q.try_claim());
  CHECK(fs::is_directory(file));
  CHECK_FALSE(fs::exists(t / "q" / "failed" / (id + ".corrupt")));
  CHECK(q.list(State::failed).empty());
  fs::remove(file);
  fs::rename(t / "q" / "aside.json", file);
  auto c = q.try_claim();
  REQUIRE(c);
  CHECK(c->job().id == id);
  c->complete();
}

TEST_CASE("a full disk (RLIMIT_FSIZE) is an error naming the file, nothing half-written", "[queue][error]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto s = spec("s1");
  s.payload["blob"] = std::string(64 * 1024, 'x');
  int code = in_child([&] {
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim {4096, 4096};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 3;
    try {
      q.enqueue(s);
    } catch (const QueueError& e) {
      std::string m = e.what();
      bool ok = m.find("/q/tmp/") != std::string::npos && m.find("write: File too large") != std::string::npos;
      if (!ok) std::fprintf(stderr, "unexpected: %s\n", m.c_str());
      return ok ? 0 : 4;
    }
    return 5;
  });
  CHECK(code == 0);
  CHECK(files(t / "q" / "pending").empty());
  CHECK(files(t / "q" / "tmp", "").empty());
}

TEST_CASE("a read-only folder (a read-only bind mount: root is refused too)", "[queue][error]") {
  TempDir t;
  { Queue q(t / "q", fast()); q.enqueue(spec("s1")); }
  fs::create_directories(t / "ro");
  int code = in_child([&] {
    if (::unshare(CLONE_NEWNS) != 0) return 10;
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return 11;
    if (::mount((t / "q").c_str(), (t / "ro").c_str(), nullptr, MS_BIND, nullptr) != 0) return 12;
    if (::mount(nullptr, (t / "ro").c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0)
      return 13;
    try {
      Queue q(t / "ro", fast());
      return 20;
    } catch (const QueueError& e) {
      std::string m = e.what();
      if (m.find("/ro/") == std::string::npos || m.find("Read-only file system") == std::string::npos) {
        std::fprintf(stderr, "unexpected: %s\n", m.c_str());
        return 21;
      }
    }
    return 0;
  });
  if (code >= 10 && code <= 13) {
    // Not silent: this sandbox forbids mount namespaces; say which step.
    WARN("read-only bind mount not possible here (step " << code << "); checking a tmp/ made a file instead");
  } else {
    CHECK(code == 0);
  }
  // And a queue whose tmp/ was replaced by a file cannot enqueue.
  Queue q(t / "q", fast());
  fs::remove_all(t / "q" / "tmp");
  std::ofstream(t / "q" / "tmp") << "x";
  CHECK_THROWS_WITH(q.enqueue(spec("s2")), Catch::Contains("/q/tmp/") && Catch::Contains("Not a directory"));
  CHECK_FALSE(q.writable());
}

TEST_CASE("purge removes finished jobs older than the age, keeps the rest", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto a = q.enqueue(spec("s1"));
  auto b = q.enqueue(spec("s2"));
  auto p = q.enqueue(spec("s3"));
  q.try_claim()->complete();
  q.try_claim()->fail("x", false);
  CHECK(q.purge(std::chrono::hours(1)) == 0);
  // Ages past the epoch keep everything: no wrap-around to "all".
  CHECK(q.purge(std::chrono::hours(24 * 200000)) == 0);
  CHECK(q.purge(std::chrono::seconds(std::numeric_limits<std::int64_t>::max())) == 0);
  std::this_thread::sleep_for(1100ms);
  CHECK(q.purge(std::chrono::seconds(1)) == 2);
  CHECK_FALSE(q.find(a));
  CHECK_FALSE(q.find(b));
  CHECK(q.find(p)->state == State::pending);
  // The jobs' leases and lock files went with them.
  for (auto& id : {a, b}) {
    CHECK_FALSE(fs::exists(t / "q" / "done" / (id + ".lease")));
    CHECK_FALSE(fs::exists(t / "q" / "failed" / (id + ".lease")));
    CHECK_FALSE(fs::exists(t / "q" / "locks" / (id + ".lock")));
  }
  CHECK(files(t / "q" / "done", "").empty());
  CHECK(files(t / "q" / "failed", "").empty());
}

TEST_CASE("no descriptor leaks into a child program (O_CLOEXEC)", "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  q.enqueue(spec("s1"));
  auto c = q.try_claim();
  REQUIRE(c);
  // The child lists its open descriptors; the job's lock must not be among them.
  auto r = iaserve::test::run({"/bin/sh", "-c", "ls -l /proc/self/fd"});
  CHECK(r.out.find("/locks/") == std::string::npos);
  CHECK(r.out.find("/q") == std::string::npos);
  c->complete();
}

TEST_CASE("a job returning to pending while a newer request for its slide waits is superseded",
          "[queue]") {
  TempDir t;
  Queue q(t / "q", fast());
  auto a = q.enqueue(spec("s1"));
  auto running = q.try_claim();
  REQUIRE(running);
  auto b = q.enqueue(spec("s1"));
  running->release();  // e.g. a worker shutting down
  auto j = q.find(a);
  CHECK(j->state == State::cancelled);
  CHECK(j->last_error == "superseded by " + b);
  auto next = q.try_claim();
  REQUIRE(next);
  CHECK(next->job().id == b);
  auto c = q.enqueue(spec("s1"));
  next->fail("timeout", true);  // a retry would run the older token
  CHECK(q.find(b)->state == State::cancelled);
  CHECK(q.find(c)->state == State::pending);
}

TEST_CASE("several threads waiting on one queue all wake for their jobs", "[queue]") {
  TempDir t;
  auto o = fast();
  o.poll_interval = 60000ms;  // only inotify can wake them in time
  Queue q(t / "q", o);
  REQUIRE(q.wakeup() == Wakeup::inotify);
  std::vector<std::string> got(3);
  std::vector<std::thread> waiters;
  for (int i = 0; i < 3; ++i)
    waiters.emplace_back([&, i] {
      if (auto c = q.wait_claim(20s)) {
        got[i] = c->job().id;
        c->complete();
      }
    });
  std::this_thread::sleep_for(100ms);
  Queue producer(t / "q", o);
  std::set<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.insert(producer.enqueue(spec("s" + std::to_string(i))));
  for (auto& w : waiters) w.join();
  CHECK(std::set<std::string>(got.begin(), got.end()) == ids);
}

namespace {

Options journaled() {
  Options o = fast();
  o.commit = Commit::journal;
  o.checkpoint_interval = std::chrono::hours(1);  // the tests decide when a journal goes
  return o;
}


}  // namespace

TEST_CASE("journal commit: concurrent enqueues share the journal, a checkpoint or close empties it", "[queue][journal]") {
  TempDir t;
  auto o = journaled();
  o.checkpoint_interval = 200ms;
  std::vector<std::string> ids(64);
  {
    Queue q(t / "q", o);
    REQUIRE(q.commit() == Commit::journal);
    std::vector<std::thread> threads;
    for (int th = 0; th < 8; ++th)
      threads.emplace_back([&, th] {
        for (int i = 0; i < 8; ++i) ids[static_cast<std::size_t>(th * 8 + i)] = q.enqueue(spec("s" + std::to_string(th * 8 + i)));
      });
    for (auto& th : threads) th.join();
    // Every acknowledged job has its file and its record.
    std::string journal;
    for (auto& n : files(t / "q" / "journal", ".jnl")) journal += read_file(t / "q" / "journal" / n);
    for (auto& id : ids) {
      CHECK(fs::exists(t / "q" / "pending" / (id + ".json")));
      CHECK(journal.find(id + " {") != std::string::npos);
    }
    CHECK((fs::status(t / "q" / "journal").permissions() & fs::perms::group_all) == fs::perms::none);
    // The checkpoint (every 200 ms here) empties what it made durable; the
    // files stay while the process lives (no deletions on the hot path).
    auto journal_bytes = [&] {
      std::uintmax_t n = 0;
      for (auto& f : files(t / "q" / "journal", ".jnl")) n += fs::file_size(t / "q" / "journal" / f);
      return n;
    };
    for (int i = 0; i < 100 && journal_bytes() > 0; ++i) std::this_thread::sleep_for(50ms);
    CHECK(journal_bytes() == 0);
    CHECK_FALSE(files(t / "q" / "journal", ".jnl").empty());
    q.enqueue(spec("late"));
    CHECK(journal_bytes() > 0);
  }
  // Closing checkpoints the rest.
  CHECK(files(t / "q" / "journal", "").empty());
  CHECK(files(t / "q" / "pending").size() == 65);
}

TEST_CASE("a power cut after the acknowledgement: recovery writes lost and torn job files again", "[queue][journal]") {
  TempDir t;
  auto o = journaled();
  // A process enqueues, then dies with its journal unchecked (as at a power
  // cut). The cut itself cannot be made here: the files the kernel would have
  // lost are removed or torn by hand below.
  REQUIRE(in_child([&] {
            Queue q(t / "q", o);
            for (int i = 0; i < 6; ++i) q.enqueue(spec("p" + std::to_string(i)));
            ::raise(SIGKILL);
            return 2;
          }) == 128 + SIGKILL);
  auto segs = files(t / "q" / "journal", ".jnl");
  REQUIRE(segs.size() == 1);
  auto ids = files(t / "q" / "pending");
  REQUIRE(ids.size() == 6);
  std::map<std::string, std::string> before;
  for (auto& n : ids) before[n] = read_file(t / "q" / "pending" / n);
  // A record torn by the cut (never acknowledged) at the journal's end.
  std::ofstream(t / "q" / "journal" / segs[0], std::ios::app) << "50000-0179 {\"id\":\"50000-01";

  Queue q(t / "q", o);
  // One job ran meanwhile: it is done, and stays done.
  auto ran = q.try_claim();
  REQUIRE(ran);
  std::string ran_id = ran->job().id;
  ran->complete();
  // Lost: two files gone, one empty, one cut in half.
  std::vector<std::string> lost;
  for (auto& n : ids)
    if (n != ran_id + ".json") lost.push_back(n);
  fs::remove(t / "q" / "pending" / lost[0]);
  fs::remove(t / "q" / "pending" / lost[1]);
  fs::resize_file(t / "q" / "pending" / lost[2], 0);
  fs::resize_file(t / "q" / "pending" / lost[3], before[lost[3]].size() / 2);

  auto r = q.recover_orphans();
  CHECK(r.replayed == 4);
  for (int i = 0; i < 4; ++i) CHECK(read_file(t / "q" / "pending" / lost[static_cast<std::size_t>(i)]) == before[lost[static_cast<std::size_t>(i)]]);
  CHECK(read_file(t / "q" / "pending" / lost[4]) == before[lost[4]]);  // intact: untouched
  CHECK(q.find(ran_id)->state == State::done);
  CHECK_FALSE(fs::exists(t / "q" / "pending" / (ran_id + ".json")));
  CHECK(files(t / "q" / "journal", "").empty());
  CHECK(q.stats().pending == 5);
  CHECK(q.recover_orphans().replayed == 0);
  // Purge takes the replay markers with their jobs.
  while (auto c = q.try_claim()) c->complete();
  CHECK(q.purge(std::chrono::seconds(0)) == 6);
  CHECK(files(t / "q" / "claims", ".replay").empty());
}

TEST_CASE("a job cancelled before a power cut that tore its file stays cancelled, and a failed restore is tried again",
          "[queue][journal]") {
  TempDir t;
  auto o = journaled();
  std::string id;
  REQUIRE(in_child([&] {
            Queue q(t / "q", o);
            auto j = q.enqueue(spec("c1"));
            q.cancel(j);  // answered yes
            ::raise(SIGKILL);
            return 2;
          }) == 128 + SIGKILL);
  auto ids = files(t / "q" / "cancelled");
  REQUIRE(ids.size() == 1);
  id = ids[0].substr(0, ids[0].size() - 5);
  // The cut tore the cancelled copy (its data never reached the disk).
  fs::resize_file(t / "q" / "cancelled" / ids[0], 0);
  Queue q(t / "q", o);
  // The first replay cannot write (tmp/ is briefly not a folder): the
  // segment stays and the job's marker is not left to block the next.
  fs::rename(t / "q" / "tmp", t / "q" / "tmp.away");
  std::ofstream(t / "q" / "tmp") << "x";
  CHECK_THROWS(q.recover_orphans());
  CHECK_FALSE(files(t / "q" / "journal", ".jnl").empty());
  fs::remove(t / "q" / "tmp");
  fs::rename(t / "q" / "tmp.away", t / "q" / "tmp");
  CHECK(q.recover_orphans().replayed == 1);
  auto j = q.find(id);
  REQUIRE(j);
  CHECK(j->state == State::cancelled);  // not back in pending/ to run after all
  CHECK_FALSE(q.try_claim());
  CHECK(files(t / "q" / "journal", "").empty());
}

TEST_CASE("a job moved aside as corrupt after a power cut comes back from the journal", "[queue][journal]") {
  TempDir t;
  auto o = journaled();
  REQUIRE(in_child([&] {
            Queue q(t / "q", o);
            q.enqueue(spec("c1"));
            ::raise(SIGKILL);
            return 2;
          }) == 128 + SIGKILL);
  auto ids = files(t / "q" / "pending");
  REQUIRE(ids.size() == 1);
  std::string id = ids[0].substr(0, ids[0].size() - 5);
  std::string whole = read_file(t / "q" / "pending" / ids[0]);
  std::ofstream(t / "q" / "pending" / ids[0], std::ios::trunc) << whole.substr(0, 20);
  Queue q(t / "q", o);
  CHECK_FALSE(q.try_claim());  // the torn file goes to failed/
  CHECK(fs::exists(t / "q" / "failed" / (id + ".corrupt")));
  CHECK(q.recover_orphans().replayed == 1);
  CHECK(read_file(t / "q" / "pending" / ids[0]) == whole);
  CHECK(files(t / "q" / "failed", "").empty());
  auto c = q.try_claim();
  REQUIRE(c);
  CHECK(c->job().slide_key == "c1");
}

TEST_CASE("the journal of a live process is never replayed", "[queue][journal]") {
  TempDir t;
  auto o = journaled();
  o.lease_timeout = 100ms;
  Queue q(t / "q", o);
  auto id = q.enqueue(spec("live"));
  fs::remove(t / "q" / "pending" / (id + ".json"));  // as if lost; its owner still runs
  std::this_thread::sleep_for(3 * o.lease_timeout);  // its lease is refreshed meanwhile
  CHECK(in_child([&] {
          Queue other(t / "q", o);
          return static_cast<int>(other.replay_journals());
        }) == 0);
  CHECK(files(t / "q" / "journal", ".jnl").size() == 1);
  CHECK_FALSE(fs::exists(t / "q" / "pending" / (id + ".json")));
}

TEST_CASE("a journal that cannot be written fails the enqueue, naming it, and leaves no job", "[queue][journal][error]") {
  TempDir t;
  auto o = journaled();
  int code = in_child([&] {
    Queue q(t / "q", o);
    ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim {3000, 3000};
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) return 3;
    int ok = 0;
    for (int i = 0; i < 3; ++i) {
      auto s = spec("f" + std::to_string(i));
      s.payload["blob"] = std::string(1200, 'x');
      try {
        q.enqueue(s);
        ++ok;
      } catch (const QueueError& e) {
        std::string m = e.what();
        if (m.find("/q/journal/") == std::string::npos || m.find("File too large") == std::string::npos) {
          std::fprintf(stderr, "unexpected: %s\n", m.c_str());
          return 4;
        }
      }
    }
    return ok == 2 ? 0 : 10 + ok;
  });
  CHECK(code == 0);
  CHECK(files(t / "q" / "pending").size() == 2);
  CHECK(files(t / "q" / "tmp", "").empty());
}

TEST_CASE("a worker claims only the apps it accepts, the others' jobs wait for theirs", "[queue]") {
  TempDir t;
  auto only_a = fast();
  only_a.accept_app = [](const std::string& app) { return app == "a"; };
  Queue qa(t / "q", only_a);
  auto b_spec = spec("s1");
  b_spec.app_id = "b";
  auto b = qa.enqueue(b_spec);
  auto a_spec = spec("s2");
  a_spec.app_id = "a";
  auto a = qa.enqueue(a_spec);
  auto c = qa.try_claim();
  REQUIRE(c);
  CHECK(c->job().id == a);
  c->complete();
  CHECK_FALSE(qa.try_claim());
  CHECK_FALSE(qa.try_claim());  // still not b: remembered, not failed
  auto jb = qa.find(b);
  REQUIRE(jb);
  CHECK(jb->state == State::pending);
  CHECK(jb->attempts == 0);
  Queue any(t / "q", fast());  // a worker with every app takes it
  auto cb = any.try_claim();
  REQUIRE(cb);
  CHECK(cb->job().id == b);
}
