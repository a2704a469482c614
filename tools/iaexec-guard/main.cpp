// iaexec-guard: the process iaworker's exec analysis runs a program under
// (worker/analysis/exec_guard.hpp says how it is started and what it
// reports). It leads the program's process group and asks the kernel for
// SIGUSR1 when the worker ends (PR_SET_PDEATHSIG): then it kills the whole
// group, so nothing of the analysis (not even what the program started, a
// wrapper script's python) keeps running on a host whose worker is gone.
// A small program of its own rather than a fork of the worker, so that it
// holds none of the worker's memory while the program runs.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>

#include "worker/analysis/exec_guard.hpp"

namespace {

namespace guard = iaserve::analysis::exec_guard;

volatile sig_atomic_t g_worker_gone = 0;
volatile sig_atomic_t g_program_ended = 0;

void on_signal(int sig) {
  if (sig == SIGCHLD)
    g_program_ended = 1;
  else
    g_worker_gone = 1;
}

void report(guard::Kind kind, int value) {
  const guard::Report r{kind, value};
  ssize_t ignored = ::write(guard::kReportFd, &r, sizeof r);
  (void)ignored;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s WORKER_PID PATH ARGV0 [ARG...] (started by iaworker's exec analysis)\n",
                 argv[0]);
    return 2;
  }
  const pid_t worker = static_cast<pid_t>(std::strtol(argv[1], nullptr, 10));
  // Every signal is blocked on entry; these two are taken in sigsuspend only.
  struct sigaction on {};
  on.sa_handler = on_signal;
  sigfillset(&on.sa_mask);
  ::sigaction(SIGCHLD, &on, nullptr);
  ::sigaction(SIGUSR1, &on, nullptr);
  if (::prctl(PR_SET_PDEATHSIG, SIGUSR1) != 0) {
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
    ::sigaction(SIGCHLD, &dfl, nullptr);
    ::sigaction(SIGUSR1, &dfl, nullptr);
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
  sigdelset(&waiting, SIGCHLD);
  sigdelset(&waiting, SIGUSR1);
  int status = 0;
  for (;;) {
    // SIGUSR1 with the worker still its parent came from the program: not
    // the worker's end.
    if (g_worker_gone) {
      g_worker_gone = 0;
      if (::getppid() != worker) ::kill(0, SIGKILL);  // the whole group, this guard too
    }
    if (g_program_ended) {
      g_program_ended = 0;
      if (::waitpid(program, &status, WNOHANG) == program) break;
    }
    ::sigsuspend(&waiting);  // the handlers run only in here: no wake-up is missed
  }
  report(guard::ended, status);
  return 0;
}
