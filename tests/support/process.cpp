#include "tests/support/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <cstring>
#include <thread>

extern char** environ;

namespace iaserve::test {
std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

fs::path make_temp(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp " + tmpl + " failed");
  return fs::path(buf.data());
}

int decode_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

}  // namespace

std::string bin(const std::string& name) { return std::string(IASERVE_BIN_DIR) + "/" + name; }

fs::path source_dir() { return fs::path(IASERVE_SOURCE_DIR); }

std::optional<fs::path> shared_data() {
  if (const char* env = std::getenv("IASERVE_SHARED_DATA")) {
    if (fs::is_directory(env)) return fs::path(env);
    return std::nullopt;
  }
  auto p = source_dir().parent_path() / "shared" / "data";
  if (fs::is_directory(p)) return p;
  return std::nullopt;
}

TempDir::TempDir(const std::string& prefix) : path_(make_temp(prefix)) {}
TempDir::~TempDir() {
  std::error_code ec;
  // Folders a test made read-only must not survive it.
  for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_directory(ec))
      fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
  }
  fs::remove_all(path_, ec);
}

Process::Process(std::vector<std::string> argv, std::map<std::string, std::string> env) {
  if (argv.empty()) throw std::invalid_argument("Process: empty argv");
  static std::atomic<int> counter{0};
  name_ = fs::path(argv[0]).filename().string();
  auto dir = make_temp("iaserve-proc-" + name_);
  out_ = dir / "stdout";
  err_ = dir / "stderr";

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);

  std::map<std::string, std::string> vars;
  for (char** e = environ; *e; ++e) {
    std::string kv(*e);
    auto eq = kv.find('=');
    if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (auto& [k, v] : env) vars[k] = v;
  std::vector<std::string> envs;
  for (auto& [k, v] : vars) envs.push_back(k + "=" + v);
  std::vector<char*> envp, args;
  for (auto& s : envs) envp.push_back(s.data());
  envp.push_back(nullptr);
  for (auto& s : argv) args.push_back(s.data());
  args.push_back(nullptr);

  int rc = posix_spawn(&pid_, args[0], &fa, nullptr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  (void)counter;
}

Process::~Process() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGTERM);
    if (!wait(10s)) {
      ::kill(pid_, SIGKILL);
      wait(10s);
    }
  }
  std::error_code ec;
  fs::remove_all(out_.parent_path(), ec);
}

bool Process::running() {
  if (status_) return false;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = decode_status(st);
    return false;
  }
  return true;
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!status_) {
    if (!running()) break;
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(5ms);
  }
  return status_;
}

void Process::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

void Process::kill9() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait(10s);
  }
}

std::string Process::line(std::size_t n, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::string text = read_file(out_);
    std::size_t start = 0;
    for (std::size_t i = 0;; ++i) {
      auto nl = text.find('\n', start);
      if (nl == std::string::npos) break;
      if (i == n) return text.substr(start, nl - start);
      start = nl + 1;
    }
    bool alive = running();
    if (!alive || std::chrono::steady_clock::now() >= deadline) {
      throw std::runtime_error(name_ + (alive ? ": no stdout line " : ": exited before stdout line ") +
                               std::to_string(n) + "; stderr:\n" + stderr_text());
    }
    std::this_thread::sleep_for(5ms);
  }
}

std::string Process::listening_url(std::chrono::milliseconds timeout) {
  std::string l = line(0, timeout);
  const std::string prefix = "listening on ";
  if (l.rfind(prefix, 0) != 0)
    throw std::runtime_error(name_ + ": first line is not 'listening on ...': " + l);
  return l.substr(prefix.size());
}

std::string Process::stdout_text() const { return read_file(out_); }
std::string Process::stderr_text() const { return read_file(err_); }

RunResult run(std::vector<std::string> argv, std::chrono::milliseconds timeout,
              std::map<std::string, std::string> env) {
  Process p(std::move(argv), std::move(env));
  auto code = p.wait(timeout);
  RunResult r;
  if (!code) {
    p.kill9();
    r.code = -1;
  } else {
    r.code = *code;
  }
  r.out = p.stdout_text();
  r.err = p.stderr_text();
  return r;
}

}  // namespace iaserve::test
