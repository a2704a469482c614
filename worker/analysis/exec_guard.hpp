#pragma once
// What the exec analysis (exec.cpp) and its guard program (tools/iaexec-guard)
// say to each other. The worker starts the guard with posix_spawn:
//
//   iaexec-guard WORKER_PID PATH ARGV0 [ARG...]
//
// in a process group of its own, every signal blocked and at its default,
// with the program's stdin, stdout and stderr as 0, 1, 2, the report pipe as
// 3 and nothing else. The guard starts PATH (argv ARGV0 ARG...) and writes
// reports on 3, each a Report: started (or not_started with the errno of
// execve), then ended with the program's wait status. When the program
// ends, on SIGTERM from the worker (a cancel, the time limit) and when the
// worker dies, the guard kills what is left of the run: its process group
// and its children (as child subreaper it inherits the run's orphans, also
// those that left the group), then reports ended (not when the worker died).
namespace iaserve::analysis::exec_guard {

constexpr const char* kProgram = "iaexec-guard";
constexpr int kReportFd = 3;

enum Kind : int { started = 1, not_started = 2, ended = 3 };

struct Report {
  int kind = 0;
  int value = 0;  // not_started: errno; ended: the wait status
};

}  // namespace iaserve::analysis::exec_guard
