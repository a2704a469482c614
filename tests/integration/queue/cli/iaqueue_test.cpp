#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "iaapi/log.hpp"
#include "queue/queue.hpp"
#include "tests/support/process.hpp"

using namespace iaserve;
using namespace iaserve::test;
namespace json = boost::json;

namespace {

RunResult iaqueue(const fs::path& dir, std::vector<std::string> args,
                  std::map<std::string, std::string> env = {}) {
  std::vector<std::string> argv = {bin("iaqueue"), "--dir", dir.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  env.emplace("IASERVE_LOG", "warn");
  return run(argv, std::chrono::seconds(60), env);
}

queue::JobSpec spec(const std::string& slide, const std::string& app = "tissue") {
  queue::JobSpec s;
  s.slide_key = slide;
  s.app_id = app;
  s.payload = json::object{{"callback", json::object{{"token", "bearer-secret-0123456789"}}}};
  return s;
}

}  // namespace

TEST_CASE("iaqueue --help lists the subcommands and the exit codes", "[iaqueue]") {
  auto r = run({bin("iaqueue"), "--help"});
  CHECK(r.code == 0);
  for (auto word : {"stats", "ls", "show", "requeue", "cancel", "purge", "recover", "selftest",
                    "Exit codes", "3 no such job"})
    CHECK_THAT(r.out, Catch::Contains(word));
  CHECK_THAT(r.out, !Catch::Contains("work "));  // the test worker stays hidden
  CHECK(run({bin("iaqueue"), "--version"}).code == 0);
  CHECK(run({bin("iaqueue"), "--dir", "/tmp", "nonsense"}).code == 2);
}

TEST_CASE("iaqueue stats, ls, show (token redacted), cancel, requeue, purge", "[iaqueue]") {
  log::setup("warn");
  TempDir t;
  auto dir = t / "q";
  queue::Queue q(dir);
  auto a = q.enqueue(spec("s1"));
  auto b = q.enqueue(spec("s2"));
  auto c = q.enqueue(spec("s3", "stain"));
  auto claim = q.try_claim();
  REQUIRE(claim);
  REQUIRE(claim->job().id == a);

  auto r = iaqueue(dir, {"stats", "--json"});
  REQUIRE(r.code == 0);
  auto st = json::parse(r.out).as_object();
  CHECK(st.at("pending").as_int64() == 2);
  CHECK(st.at("active").as_int64() == 1);
  CHECK(st.at("oldest_pending_age_ms").is_int64());
  auto active = st.at("active_jobs").as_array();
  REQUIRE(active.size() == 1);
  CHECK(active[0].at("id").as_string() == a);
  CHECK(active[0].at("lease").at("pid").as_int64() == ::getpid());

  r = iaqueue(dir, {"stats"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("pending   2") && Catch::Contains(a));

  r = iaqueue(dir, {"ls", "--json"});
  REQUIRE(r.code == 0);
  auto ls = json::parse(r.out).as_array();
  REQUIRE(ls.size() == 2);
  CHECK(ls[0].at("id").as_string() == b);
  CHECK(ls[1].at("id").as_string() == c);
  CHECK(iaqueue(dir, {"ls", "--state", "bogus"}).code == 2);

  r = iaqueue(dir, {"show", b});
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("\"slide_key\":\"s2\""));
  CHECK_THAT(r.out, !Catch::Contains("bearer-secret-0123456789"));
  CHECK(iaqueue(dir, {"show", "no-such-id"}).code == 3);

  r = iaqueue(dir, {"cancel", a});  // active: a mark
  CHECK(r.code == 0);
  CHECK(claim->cancel_requested());
  claim->release();
  CHECK(q.find(a)->state == queue::State::cancelled);
  CHECK(iaqueue(dir, {"cancel", "--slide", "s3"}).code == 0);
  CHECK(q.find(c)->state == queue::State::cancelled);
  CHECK(iaqueue(dir, {"cancel", "--slide", "s3"}).code == 3);

  CHECK(iaqueue(dir, {"requeue", c}).code == 0);
  CHECK(q.find(c)->state == queue::State::pending);
  CHECK(iaqueue(dir, {"requeue", c}).code == 3);

  CHECK(iaqueue(dir, {"purge", "--older-than", "1x"}).code == 2);
  r = iaqueue(dir, {"purge", "--older-than", "200000d"});  // would wrap round to "everything"
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("is more than 100 years"));
  r = iaqueue(dir, {"purge", "--older-than", "0s"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("removed 1"));  // a (cancelled)
  CHECK_FALSE(q.find(a));

  r = iaqueue(dir, {"recover"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("requeued 0"));
}

TEST_CASE("a folder where flock does not exclude is refused unless lease-only", "[iaqueue][selftest]") {
  TempDir t;
  auto dir = t / "q";
  { queue::Queue q(dir); }
  auto r = iaqueue(dir, {"selftest"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("flock excludes"));

  // The preload makes flock a no-op, as a nobrl/nolock CIFS mount does.
  std::map<std::string, std::string> nolock = {{"LD_PRELOAD", FLOCK_NOOP_LIB}};
  r = iaqueue(dir, {"selftest"}, nolock);
  CHECK(r.code == 4);
  CHECK_THAT(r.out, Catch::Contains("does not exclude") && Catch::Contains("nolock/nobrl"));
  r = iaqueue(dir, {"stats"}, nolock);
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains(dir.string()) && Catch::Contains("does not exclude"));
  r = iaqueue(dir, {"--lease-only", "stats"}, nolock);
  CHECK(r.code == 0);
}

TEST_CASE("iaqueue on a missing folder says which", "[iaqueue]") {
  TempDir t;
  auto r = iaqueue(t / "absent", {"stats"});
  CHECK(r.code == 1);
  CHECK_THAT(r.err, Catch::Contains("absent"));
}
