// iaexec-guard: the process iaworker's exec analysis runs a program under
// (worker/analysis/exec_guard.hpp says how it is started and what it
// reports). It leads the program's process group, is the run's child
// subreaper (PR_SET_CHILD_SUBREAPER: a process of the run whose parent dies
// becomes its child, even one that left the group with setsid), and asks
// the kernel for SIGUSR1 when the worker ends (PR_SET_PDEATHSIG). When the
// program ends, when the worker asks (SIGTERM from the worker: a cancel or
// the time limit) and when the worker is gone, it kills what is left of the
// run: its group and its children, until none is left. So nothing of the
// analysis (not a wrapper script's python, not a daemon the model started)
// keeps running once its job has ended, or on a host whose worker is gone.
// A small program of its own rather than a fork of the worker, so that it
// holds none of the worker's memory while the program runs.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>

#include "worker/analysis/exec_guard.hpp"

namespace {

namespace guard = iaserve::analysis::exec_guard;

volatile sig_atomic_t g_worker_gone = 0;
volatile sig_atomic_t g_child_ended = 0;
volatile sig_atomic_t g_stop = 0;
pid_t g_worker = 0;

void on_signal(int sig, siginfo_t* info, void*) {
  if (sig == SIGCHLD)
    g_child_ended = 1;
  else if (sig == SIGUSR1)
    g_worker_gone = 1;
  else if (sig == SIGTERM && info->si_pid == g_worker)
    g_stop = 1;  // the worker's; the program's own (`kill 0`, say) does not end the run
}

void report(guard::Kind kind, int value) {
  const guard::Report r{kind, value};
  ssize_t ignored = ::write(guard::kReportFd, &r, sizeof r);
  (void)ignored;
}

// Whether pid is alive (not a zombie) and of the run: in this guard's
// process group, or its child.
bool of_the_run(int proc, pid_t pid, pid_t self) {
  char path[32], text[512];
  std::snprintf(path, sizeof path, "%d/stat", static_cast<int>(pid));
  const int fd = ::openat(proc, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  if (n <= 0) return false;
  text[n] = '\0';
  // "pid (comm) state ppid pgrp ...": comm may hold anything, ')' included.
  const char* close = std::strrchr(text, ')');
  char state = 0;
  int ppid = 0, pgrp = 0;
  if (!close || std::sscanf(close + 1, " %c %d %d", &state, &ppid, &pgrp) != 3) return false;
  if (state == 'Z' || state == 'X') return false;
  return pgrp == self || ppid == self;
}

// SIGKILL to pid if it is (still) of the run. Through a pidfd taken before
// the check: should pid end and its number be taken meanwhile, the signal
// finds the old process gone instead of reaching the new one. False when
// the signal could not be sent (a setuid program of the run: EPERM), so
// that the sweep does not wait for what it cannot end.
bool kill_if_of_the_run(int proc, pid_t pid, pid_t self) {
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    if (errno == ENOSYS && of_the_run(proc, pid, self)) return ::kill(pid, SIGKILL) == 0;  // before Linux 5.3
    return false;
  }
  bool sent = false;
  if (of_the_run(proc, pid, self)) sent = ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0) == 0;
  ::close(pidfd);
  return sent;
}

// Reaps the guard's children that have ended; the program's wait status
// goes to *status.
bool reap_children(pid_t program, int* status) {
  bool program_reaped = false;
  int st = 0;
  pid_t p;
  while ((p = ::waitpid(-1, &st, WNOHANG)) > 0)
    if (p == program) {
      *status = st;
      program_reaped = true;
    }
  return program_reaped;
}

// Kills what is left of the run (the program too, if it still runs) and
// reaps the guard's own, until none is left, or for two seconds at most (a
// process stuck in the kernel does not die at once; the worker's SIGKILL to
// the group follows).
void sweep(pid_t self, pid_t program, int* status) {
  const int proc = ::open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (proc < 0) return;
  auto now_ns = [] {
    timespec t{};
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    return static_cast<long long>(t.tv_sec) * 1'000'000'000LL + t.tv_nsec;
  };
  const long long deadline = now_ns() + 2'000'000'000LL;
  while (now_ns() < deadline) {
    int left = 0;
    if (DIR* d = ::opendir("/proc")) {  // anew each round (a dup of proc would share its offset)
      while (const dirent* e = ::readdir(d)) {
        char* end = nullptr;
        const long pid = std::strtol(e->d_name, &end, 10);
        if (pid <= 0 || *end != '\0' || pid == self) continue;
        if (!of_the_run(proc, static_cast<pid_t>(pid), self)) continue;
        if (kill_if_of_the_run(proc, static_cast<pid_t>(pid), self)) ++left;
      }
      ::closedir(d);
    }
    reap_children(program, status);
    if (left == 0) break;
    const timespec pause{0, 2'000'000};
    ::nanosleep(&pause, nullptr);
  }
  ::close(proc);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s WORKER_PID PATH ARGV0 [ARG...] (started by iaworker's exec analysis)\n",
                 argv[0]);
    return 2;
  }
  const pid_t worker = static_cast<pid_t>(std::strtol(argv[1], nullptr, 10));
  g_worker = worker;
  // Every signal is blocked on entry; these three are taken in sigsuspend only.
  struct sigaction on {};
  on.sa_sigaction = on_signal;
  on.sa_flags = SA_SIGINFO;
  sigfillset(&on.sa_mask);
  for (int sig : {SIGCHLD, SIGUSR1, SIGTERM}) ::sigaction(sig, &on, nullptr);
  if (::prctl(PR_SET_PDEATHSIG, SIGUSR1) != 0 || ::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    report(guard::not_started, errno);
    return 127;
  }
  if (::getppid() != worker) return 127;  // the worker is gone already: nobody reads the answer
  ::fcntl(guard::kReportFd, F_SETFD, FD_CLOEXEC);
  // Empty when execve took the program, else its errno.
  int started[2];
  if (::pipe2(started, O_CLOEXEC) != 0) {
    report(guard::not_started, errno);
    return 127;
  }
  const pid_t self = ::getpid();
  const pid_t program = ::fork();
  if (program == 0) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGCHLD, SIGUSR1, SIGTERM}) ::sigaction(sig, &dfl, nullptr);
    int e = 0;
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) {
      e = errno;
    } else if (::getppid() != self) {
      ::_exit(127);
    } else {
      sigset_t none;
      sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::execv(argv[2], argv + 3);
      e = errno;
    }
    ssize_t ignored = ::write(started[1], &e, sizeof e);
    (void)ignored;
    ::_exit(127);
  }
  if (program < 0) {
    report(guard::not_started, errno);
    return 127;
  }
  ::close(started[1]);
  int e = 0;
  ssize_t n;
  while ((n = ::read(started[0], &e, sizeof e)) < 0 && errno == EINTR) {
  }
  ::close(started[0]);
  if (n > 0) {
    while (::waitpid(program, nullptr, 0) < 0 && errno == EINTR) {
    }
    report(guard::not_started, e);
    return 127;
  }
  report(guard::started, 0);
  // The program's pipes are its alone: they end when it does.
  for (int fd : {0, 1, 2}) ::close(fd);
  sigset_t waiting;
  sigfillset(&waiting);
  for (int sig : {SIGCHLD, SIGUSR1, SIGTERM}) sigdelset(&waiting, sig);
  int status = SIGKILL;  // as the wait status of a program killed by the sweep and never reaped
  for (;;) {
    // SIGUSR1 with the worker still its parent came from the program: not
    // the worker's end.
    if (g_worker_gone) {
      g_worker_gone = 0;
      if (::getppid() != worker) {
        sweep(self, program, &status);
        return 0;  // nobody reads the report
      }
    }
    if (g_stop) {  // a cancel or the time limit
      sweep(self, program, &status);
      break;
    }
    if (g_child_ended) {
      g_child_ended = 0;
      // Also what was handed to this guard (as subreaper) and ended.
      if (reap_children(program, &status)) {
        sweep(self, program, &status);  // what the program left running
        break;
      }
    }
    ::sigsuspend(&waiting);  // the handlers run only in here: no wake-up is missed
  }
  report(guard::ended, status);
  return 0;
}
