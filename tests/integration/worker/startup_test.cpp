// iaworker run refuses a configuration that would fail every job.
#include <catch2/catch.hpp>

#include "tests/support/process.hpp"

using namespace iaserve::test;

namespace {
RunResult worker_with(TempDir& dir, const std::string& set) {
  return run({bin("iaworker"), "run", "--config", (source_dir() / "examples" / "iaserve.toml").string(),
              "--queue-dir", (dir / "queue").string(), "--data-dir", (dir / "data").string(), "--set",
              set},
             std::chrono::seconds(30));
}
}  // namespace

TEST_CASE("iaworker run refuses an unknown analysis parameter, naming the key", "[worker][config]") {
  TempDir dir;
  auto r = worker_with(dir, "apps[0].params.thresold=3");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("apps[0].params.thresold: unknown for analysis tissue"));
}

TEST_CASE("iaworker run refuses an out-of-range analysis parameter", "[worker][config]") {
  TempDir dir;
  auto r = worker_with(dir, "apps[0].params.target_mpp=-1");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("apps[0].params.target_mpp: -1 is below 1"));
}

TEST_CASE("iaworker run refuses an unknown analysis name", "[worker][config]") {
  TempDir dir;
  auto r = worker_with(dir, "apps[0].analysis=\"nuclei\"");
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("apps[0].analysis: unknown analysis \"nuclei\""));
}
