#include <catch2/catch.hpp>

#include <atomic>
#include <csignal>
#include <thread>

#include "iaapi/thread_pool.hpp"
#include "tests/support/process.hpp"

using namespace iaserve::test;

TEST_CASE("a started process is read line by line and ended by pid", "[support]") {
  Process p({"/bin/sh", "-c", "echo 'listening on http://127.0.0.1:1/x'; echo two; sleep 30"});
  CHECK(p.listening_url() == "http://127.0.0.1:1/x");
  CHECK(p.line(1) == "two");
  CHECK(p.running());
  p.signal(SIGTERM);
  auto code = p.wait();
  REQUIRE(code);
  CHECK(*code == 128 + SIGTERM);
}

TEST_CASE("run() gives the exit code and both outputs", "[support]") {
  auto r = run({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  CHECK(r.code == 3);
  CHECK(r.out == "out\n");
  CHECK(r.err == "err\n");
}

TEST_CASE("a line that never comes is an error naming the program", "[support]") {
  Process p({"/bin/sh", "-c", "echo oops >&2; exit 1"});
  CHECK_THROWS_WITH(p.line(0), Catch::Contains("sh: exited before stdout line 0") &&
                                   Catch::Contains("oops"));
}

TEST_CASE("the thread pool refuses work past its queue bound", "[support]") {
  iaserve::ThreadPool pool(1, 1);
  std::atomic<bool> release{false};
  std::atomic<int> ran{0};
  REQUIRE(pool.post([&] { while (!release) std::this_thread::yield(); ++ran; }));
  // The first task may or may not have left the queue yet; fill it up.
  int accepted = 0;
  for (int i = 0; i < 3; ++i) accepted += pool.post([&] { ++ran; }) ? 1 : 0;
  CHECK(accepted <= 1);
  release = true;
  pool.stop();
  CHECK(ran == 1 + accepted);
}
