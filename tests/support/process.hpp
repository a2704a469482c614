#pragma once
// Test support: the real programs, started by pid, on ephemeral ports.
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace iaserve::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

// Path of a program built by this project (bin/NAME).
std::string bin(const std::string& name);
// The source tree (for examples/, scripts/).
fs::path source_dir();
// A whole file as bytes; empty when it cannot be read.
std::string read_file(const fs::path& p);
// ../shared/data beside the checkout, or nullopt when that folder is absent.
// Tests that need it call SKIP_WITHOUT_SHARED_DATA() which says why it skips.
std::optional<fs::path> shared_data();

// A fresh folder under $TMPDIR, removed with everything in it at the end.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "iaserve-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

// A child process whose stdout and stderr go to files in a private folder
// (nothing blocks on a full pipe). The destructor sends SIGTERM, waits up to
// 10 s, then SIGKILL: a test never leaves a process behind.
class Process {
 public:
  Process(std::vector<std::string> argv, std::map<std::string, std::string> env = {});
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  // Line n (0-based) of stdout, waiting for it up to timeout; throws with the
  // program's stderr when the process exits or the time runs out first.
  std::string line(std::size_t n = 0, std::chrono::milliseconds timeout = 20s);
  // For "listening on http://HOST:PORT/..." first lines: the URL.
  std::string listening_url(std::chrono::milliseconds timeout = 20s);
  std::string stdout_text() const;
  std::string stderr_text() const;
  void signal(int sig);
  void kill9();
  // Exit code (128+signal when killed by one); nullopt when still running after timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout = 30s);

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  fs::path out_, err_;
  std::string name_;
};

// Runs a program to its end; the exit code and both outputs.
struct RunResult {
  int code = -1;
  std::string out, err;
};
RunResult run(std::vector<std::string> argv, std::chrono::milliseconds timeout = 120s,
              std::map<std::string, std::string> env = {});

}  // namespace iaserve::test

#define SKIP_WITHOUT_SHARED_DATA()                                                   \
  do {                                                                               \
    if (!::iaserve::test::shared_data()) {                                           \
      WARN("skipped: ../shared/data is absent beside the checkout (real slide test)"); \
      return;                                                                        \
    }                                                                                \
  } while (0)
