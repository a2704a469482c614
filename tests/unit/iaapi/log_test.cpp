// The log as a reader of stderr gets it: real lines written to a real file
// (stderr pointed at it for the test), JSON lines parsed back.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "iaapi/log.hpp"

namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// stderr goes to a file while it lives; lines() reads what was written.
class CapturedStderr {
 public:
  CapturedStderr() : path_(fs::temp_directory_path() / ("iaserve-log-" + std::to_string(::getpid()) + ".txt")) {
    saved_ = ::dup(STDERR_FILENO);
    const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::dup2(fd, STDERR_FILENO) == STDERR_FILENO);
    ::close(fd);
  }
  ~CapturedStderr() {
    restore();
    fs::remove(path_);
  }
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
  }
  std::vector<std::string> lines() const {
    std::ifstream in(path_);
    std::vector<std::string> out;
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  }

 private:
  fs::path path_;
  int saved_ = -1;
};

}  // namespace

TEST_CASE("JSON log lines stay JSON whatever the message holds", "[log]") {
  const std::string nasty = "quote \" backslash \\ tab \t newline \n bell \x07 del \x7f slide=\"a\\b\" é end";
  std::vector<std::string> lines;
  {
    CapturedStderr cap;
    iaserve::log::setup("info", true);
    auto l = iaserve::log::get("logtest");
    l->info("{}", nasty);
    l->warn("plain");
    l->debug("below the level: not written");
    iaserve::log::setup("info", false);
    l->info("back to text: {}", "x");
    cap.restore();
    lines = cap.lines();
  }
  REQUIRE(lines.size() == 3);
  const json::object first = json::parse(lines[0]).as_object();
  CHECK(first.at("msg") == nasty.c_str());
  CHECK(first.at("level") == "info");
  CHECK(first.at("component") == "logtest");
  CHECK(first.at("pid") == static_cast<std::int64_t>(::getpid()));
  const json::object second = json::parse(lines[1]).as_object();
  CHECK(second.at("msg") == "plain");
  CHECK(second.at("level") == "warning");
  CHECK_THAT(lines[2], Catch::Matchers::EndsWith("[logtest] back to text: x"));
}

TEST_CASE("lines logged from many threads come out whole, each once", "[log]") {
  constexpr int kThreads = 16, kLines = 2000;
  std::vector<std::string> lines;
  {
    CapturedStderr cap;
    iaserve::log::setup("info", false);
    auto l = iaserve::log::get("logtest");
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        for (int i = 0; i < kLines; ++i) l->info("thread {} line {} {}", t, i, std::string(static_cast<std::size_t>(i % 97), 'x'));
      });
    for (auto& th : threads) th.join();
    cap.restore();
    lines = cap.lines();
  }
  REQUIRE(lines.size() == static_cast<std::size_t>(kThreads * kLines));
  std::set<std::pair<int, int>> seen;
  for (const auto& line : lines) {
    const auto at = line.find("[logtest] thread ");
    REQUIRE(at != std::string::npos);
    int t = -1, i = -1;
    REQUIRE(std::sscanf(line.c_str() + at, "[logtest] thread %d line %d", &t, &i) == 2);
    // Nothing of another line in between: the line is exactly this one.
    const std::string expected = "[logtest] thread " + std::to_string(t) + " line " + std::to_string(i) + " " +
                                 std::string(static_cast<std::size_t>(i % 97), 'x');
    CHECK(line.substr(at) == expected);
    seen.insert({t, i});
  }
  CHECK(seen.size() == static_cast<std::size_t>(kThreads * kLines));
}
