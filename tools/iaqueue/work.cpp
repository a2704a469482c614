// iaqueue work (hidden): a stand-in worker for the multi-process tests and the
// benchmark. It claims jobs, records each run with O_EXCL side files in --out
// (so a job run twice, or twice at once, shows), optionally kills itself with
// SIGKILL at random points, and exits when the queue is empty.
// Exit 3 (with a DOUBLE-* file in --out) when it catches a double run.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <random>
#include <sstream>
#include <thread>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

namespace fs = std::filesystem;

struct WorkOptions {
  std::string out;
  long hold_max_ms = 0;
  int self_kill_per_mille = 0;
  long lease_interval_ms = 2000, lease_timeout_ms = 30000, recover_ms = 15000, idle_ms = 500,
       poll_ms = 500;
  int max_attempts = 3;
  std::string wakeup = "auto";
  bool keep_running = false;
  bool no_fsync = false;
};

bool create_excl(const fs::path& p, const std::string& content) {
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return false;
    throw std::runtime_error(p.string() + ": " + std::strerror(errno));
  }
  [[maybe_unused]] auto n = ::write(fd, content.data(), content.size());
  ::close(fd);
  return true;
}

// Can pid still run code of its own? Not when gone, a zombie, or exiting
// (PF_EXITING in its flags: a SIGKILLed process has let go of its flocks
// before it becomes a zombie, and the queue may hand its job on then).
bool alive(long pid) {
  if (pid <= 0 || ::kill(static_cast<pid_t>(pid), 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(in, line);
  // No stat though /proc works: it was reaped between the two looks.
  if (line.empty()) return ::access("/proc/self/stat", R_OK) != 0 && ::kill(static_cast<pid_t>(pid), 0) == 0;
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) return true;
  if (line[close + 2] == 'Z' || line[close + 2] == 'X') return false;
  // After ") ": state, ppid, pgrp, session, tty_nr, tpgid, flags.
  std::istringstream rest(line.substr(close + 2));
  std::string state;
  long ppid = 0, pgrp = 0, session = 0, tty = 0, tpgid = 0;
  unsigned long flags = 0;
  if (!(rest >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags)) return true;
  constexpr unsigned long kPfExiting = 0x4;
  return (flags & kPfExiting) == 0;
}

int run(const Globals& g, const WorkOptions& o) {
  queue::Options qo;
  qo.lease_interval = std::chrono::milliseconds(o.lease_interval_ms);
  qo.lease_timeout = std::chrono::milliseconds(o.lease_timeout_ms);
  qo.recover_interval = std::chrono::milliseconds(o.recover_ms);
  qo.poll_interval = std::chrono::milliseconds(o.poll_ms);
  qo.max_attempts = o.max_attempts;
  qo.lease_only = g.lease_only;
  qo.fsync = !o.no_fsync;
  qo.wakeup = o.wakeup == "inotify" ? queue::Wakeup::inotify
              : o.wakeup == "poll"  ? queue::Wakeup::poll
                                    : queue::Wakeup::automatic;
  queue::Queue q(g.dir, qo);
  fs::path out(o.out);
  std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(::getpid()));
  std::uniform_int_distribution<int> per_mille(0, 999);
  std::uniform_int_distribution<long> hold(0, std::max(0L, o.hold_max_ms));
  const std::string me = std::to_string(::getpid());
  long completed = 0;
  for (;;) {
    auto c = q.wait_claim(std::chrono::milliseconds(o.idle_ms));
    if (!c) {
      auto s = q.stats();
      if (!o.keep_running && s.pending == 0 && s.active == 0) break;
      continue;
    }
    const auto& job = c->job();
    const std::string tag = job.id + "-" + std::to_string(job.attempts);
    auto maybe_die = [&](const char* where) {
      if (o.self_kill_per_mille > 0 && per_mille(rng) < o.self_kill_per_mille) {
        if (!out.empty()) create_excl(out / ("kill-" + tag), where);
        ::raise(SIGKILL);
      }
    };
    auto doubled = [&](const std::string& what) {
      create_excl(out / ("DOUBLE-" + tag + "-" + me), what);
      std::cerr << "iaqueue work: job " << job.id << " " << what << "\n";
      return 3;
    };
    maybe_die("after claim");
    if (!out.empty()) {
      fs::path marker = out / ("running-" + job.id);
      while (!create_excl(marker, me)) {
        std::ifstream in(marker);
        long pid = 0;
        in >> pid;
        if (pid != 0 && alive(pid)) {
          std::ifstream st("/proc/" + std::to_string(pid) + "/stat");
          std::string stat_line;
          std::getline(st, stat_line);
          return doubled("is running in pid " + std::to_string(pid) + " too (/proc stat: " + stat_line + ")");
        }
        ::unlink(marker.c_str());  // left by a run that was killed
      }
      if (!create_excl(out / ("start-" + tag), me)) return doubled("attempt started twice");
    }
    maybe_die("running");
    if (o.hold_max_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(hold(rng)));
    maybe_die("before done file");
    if (!out.empty()) {
      if (!create_excl(out / ("done-" + tag), me)) return doubled("attempt completed twice");
      ::unlink((out / ("running-" + job.id)).c_str());
    }
    maybe_die("before complete");
    c->complete();
    ++completed;
  }
  std::cout << "completed " << completed << "\n";
  return kOk;
}

const Registration reg(
    "work", "test worker: claims and completes jobs, recording runs in side files",
    [](CLI::App& sub) {
      auto o = std::make_shared<WorkOptions>();
      sub.add_option("--out", o->out, "folder for the O_EXCL side files");
      sub.add_option("--hold-max-ms", o->hold_max_ms, "hold each job a random 0..N ms");
      sub.add_option("--self-kill-per-mille", o->self_kill_per_mille,
                     "chance per kill point of SIGKILL to itself");
      sub.add_option("--lease-interval-ms", o->lease_interval_ms);
      sub.add_option("--lease-timeout-ms", o->lease_timeout_ms);
      sub.add_option("--recover-ms", o->recover_ms);
      sub.add_option("--idle-ms", o->idle_ms);
      sub.add_option("--poll-ms", o->poll_ms);
      sub.add_option("--max-attempts", o->max_attempts);
      sub.add_option("--wakeup", o->wakeup)->check(CLI::IsMember({"auto", "inotify", "poll"}));
      sub.add_flag("--keep-running", o->keep_running, "do not exit when the queue is empty");
      sub.add_flag("--no-fsync", o->no_fsync, "skip fsync (benchmark of the queue's own cost)");
      return Runner([o](const Globals& g) { return run(g, *o); });
    },
    true);

}  // namespace
}  // namespace iaserve::tools::iaqueue
