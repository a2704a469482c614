// The `exec` analysis: any program (a Python model, say) as an analysis.
// The protocol is in docs/exec.md. In short: the program gets one JSON job
// description on stdin (slide file and its geometry, the drawn regions in
// level-0 px, the parameters, a scratch folder), writes JSON lines to stdout
// ({"progress": N} while it works, then one {"result": {...}}), and exits 0.
// Anything else on stdout, a non-zero exit, a signal, no result, the time
// limit or a cancel ends it (its whole process group) with a message that
// says which, with the last lines of its stderr.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "iaapi/text.hpp"
#include "worker/analysis/analysis.hpp"
#include "worker/analysis/exec_guard.hpp"
#include "worker/slide/slide.hpp"

extern char** environ;

namespace iaserve::analysis {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

constexpr std::size_t kStderrKept = 4096;      // the tail quoted in errors
constexpr std::size_t kMaxPoints = 1'000'000;  // over all result polygons
constexpr unsigned kMaxDepth = 64;

[[noreturn]] void fail(const std::string& program, const std::string& what) {
  throw std::runtime_error("exec " + program + ": " + what);
}

using exec::resolve;
using exec::split_args;

json::array ring_json(const PolygonPx& ring) {
  json::array pts;
  pts.reserve(ring.size());
  for (const auto& p : ring) pts.push_back(json::array{p.x, p.y});
  return pts;
}

json::object job_description(const Context& ctx, const fs::path& scratch) {
  const slide::Slide& s = ctx.slide();
  json::array levels;
  for (int l = 0; l < s.level_count(); ++l) {
    auto size = s.level_size(l);
    levels.push_back(json::object{{"width", size.width}, {"height", size.height}, {"downsample", s.level_downsample(l)}});
  }
  json::object slide{{"path", s.path().string()},
                     {"vendor", s.vendor()},
                     {"width", s.width()},
                     {"height", s.height()},
                     {"micronsPerPixel", s.mpp() ? json::value(*s.mpp()) : json::value(nullptr)},
                     {"levels", std::move(levels)}};
  json::array regions;
  for (const auto& r : ctx.regions()) regions.push_back(ring_json(r));
  json::object job{{"version", 1},
                   {"slide", std::move(slide)},
                   {"input", {{"type", std::string(to_string(ctx.input().type))}, {"regions", std::move(regions)}}},
                   {"params", ctx.params().to_json()},
                   {"scratch", scratch.string()}};
  if (const auto& a = ctx.input().action)  // a pressed patchCollection button
    job["action"] = json::object{{"id", a->id}, {"content", a->content}};
  return job;
}

// The child and its pipes; a child still running when this ends is killed
// with its process group and reaped.
struct Child {
  pid_t pid = -1;
  int in = -1, out = -1, err = -1;  // our ends
  int result = -1;  // the guard's report of the program's wait status
  int status = 0;
  bool reaped = false;

  ~Child() {
    for (int fd : {in, out, err, result})
      if (fd >= 0) ::close(fd);
    if (pid > 0 && !reaped) reap();
  }
  // Whether the guard has ended, without reaping it: while it is a zombie,
  // its pid (the group's id) cannot be taken by another process.
  bool ended() const {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0)
      return errno != EINTR;  // ECHILD: nothing left to wait for
    return info.si_pid == pid;
  }
  // Ends the run and reaps the guard, taking the program's status from its
  // report. A guard still running (a cancel, the time limit) is asked to
  // end it (SIGTERM): it kills the program and all the run left, even what
  // left the group; should it not be done in 3 s, the group is killed. The
  // group is killed in any case while the guard still holds its id (what
  // the program left running, should the guard have missed it).
  void reap() {
    if (!ended()) {
      ::kill(pid, SIGTERM);
      for (int i = 0; i < 150 && !ended(); ++i) ::usleep(20000);
    }
    ::kill(-pid, SIGKILL);
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    reaped = true;
    take_program_status();
  }
  void close_in() {
    if (in >= 0) ::close(in);
    in = -1;
  }
  // Once the guard is reaped: the program's status as the guard reported
  // it. A guard that reported nothing was killed (with the program, by this
  // worker's cancel or from outside): its own status stands.
  void take_program_status() {
    if (result < 0) return;
    exec_guard::Report r;
    ssize_t n;
    while ((n = ::read(result, &r, sizeof r)) < 0 && errno == EINTR) {
    }
    if (n == static_cast<ssize_t>(sizeof r) && r.kind == exec_guard::ended) status = r.value;
    ::close(result);
    result = -1;
  }
};

// Starts the program under its guard (tools/iaexec-guard,
// exec_guard.hpp), with posix_spawn: no copy of this process, however
// large, is made or kept. The guard leads the program's process group
// (killed whole on a cancel), and kills the group when this worker dies, so
// a worker killed with SIGKILL leaves nothing of the analysis running on its
// host: the job's next run (on any host) is the only one. Only the program's
// stdin, stdout and stderr and the guard's report pipe reach it; every
// signal is at its default (a server in this process may ignore SIGPIPE).
void spawn(Child& c, const std::string& program, const std::vector<std::string>& args,
           const std::function<void()>& check) {
  const std::optional<std::string> path = resolve(program);
  if (!path) fail(program, "cannot start: not an executable file (nor on PATH)");
  const std::optional<std::string> guard = exec::guard_path();
  if (!guard)
    throw HostError("exec " + program + ": cannot start: " + exec_guard::kProgram +
                    " is not beside this program (it is installed with iaworker)");
  int in[2], out[2], err[2], report[2];
  int made = 0;
  auto close_made = [&] {
    int* pairs[] = {in, out, err, report};
    for (int i = 0; i < made; ++i) ::close(pairs[i][0]), ::close(pairs[i][1]);
  };
  for (int* p : {in, out, err, report}) {
    if (::pipe2(p, O_CLOEXEC) != 0) {
      const int e = errno;
      close_made();
      // Out of descriptors is this host's trouble (a retry may do better).
      throw HostError("exec " + program + ": pipe: " + std::strerror(e));
    }
    ++made;
  }
  const std::string worker = std::to_string(::getpid());
  std::vector<char*> argv{const_cast<char*>(guard->c_str()), const_cast<char*>(worker.c_str()),
                          const_cast<char*>(path->c_str()), const_cast<char*>(program.c_str())};
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t files;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&files);
  ::posix_spawnattr_init(&attr);
  // Targets 0-2 are this process's own stdin, stdout and stderr (never one
  // of these pipes) and 3 comes last: no dup2 overwrites a pipe end before
  // it was taken.
  sigset_t all;
  sigfillset(&all);
  int spawned = 0;
  for (int step : {::posix_spawn_file_actions_adddup2(&files, in[0], 0),
                   ::posix_spawn_file_actions_adddup2(&files, out[1], 1),
                   ::posix_spawn_file_actions_adddup2(&files, err[1], 2),
                   ::posix_spawn_file_actions_adddup2(&files, report[1], exec_guard::kReportFd),
                   ::posix_spawn_file_actions_addclosefrom_np(&files, exec_guard::kReportFd + 1),
                   ::posix_spawnattr_setsigmask(&attr, &all), ::posix_spawnattr_setsigdefault(&attr, &all),
                   ::posix_spawnattr_setpgroup(&attr, 0),
                   ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                                         POSIX_SPAWN_SETPGROUP)})
    if (step != 0 && spawned == 0) spawned = step;
  pid_t pid = -1;
  if (spawned == 0) spawned = ::posix_spawn(&pid, guard->c_str(), &files, &attr, argv.data(), environ);
  ::posix_spawn_file_actions_destroy(&files);
  ::posix_spawnattr_destroy(&attr);
  for (int fd : {in[0], out[1], err[1], report[1]}) ::close(fd);
  c.in = in[1];
  c.out = out[0];
  c.err = err[0];
  c.result = report[0];
  // The guard not starting is this host's trouble (an install half done,
  // an upgrade under way): another worker may do.
  if (spawned != 0)
    throw HostError("exec " + program + ": cannot start: " + *guard + ": " + std::strerror(spawned));
  c.pid = pid;
  // The guard's first report: the program started, or why not. Its execve
  // may hang (a program on a share that stopped answering): cancel and the
  // time limit are honoured meanwhile.
  for (;;) {
    pollfd p{c.result, POLLIN, 0};
    const int ready = ::poll(&p, 1, 100);
    if (ready > 0) break;
    if (ready < 0 && errno != EINTR) throw HostError("exec " + program + ": poll: " + std::strerror(errno));
    check();
  }
  exec_guard::Report first;
  ssize_t n;
  while ((n = ::read(c.result, &first, sizeof first)) < 0 && errno == EINTR) {
  }
  if (n != static_cast<ssize_t>(sizeof first) || first.kind != exec_guard::started) {
    c.reap();
    c.pid = -1;
    // Killed before its first report (from outside: the program, as it
    // starts, may be what killed it) or failed itself.
    if (n != static_cast<ssize_t>(sizeof first)) {
      std::string how;
      if (WIFEXITED(c.status))
        how = " (exit code " + std::to_string(WEXITSTATUS(c.status)) + ")";
      else if (WIFSIGNALED(c.status))
        how = std::string(" (killed by ") +
              (WTERMSIG(c.status) == SIGKILL ? "SIGKILL" : ::strsignal(WTERMSIG(c.status))) + ")";
      throw HostError("exec " + program + ": " + exec_guard::kProgram + " ended before it said the program started" +
                      how);
    }
    const std::string what = std::string("cannot start: ") + std::strerror(first.value);
    // No memory or processes for it, or its file being written: another try may do.
    if (host_errno(first.value)) throw HostError("exec " + program + ": " + what);
    fail(program, what);
  }
  for (int fd : {c.in, c.out, c.err}) ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
}

// write(2) on a pipe whose reader is gone, without SIGPIPE: the signal this
// thread raises stays blocked and pending, and is taken back before return.
ssize_t write_quietly(int fd, const char* data, std::size_t size) {
  sigset_t pipe_only, old;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
  ssize_t w = ::write(fd, data, size);
  int saved = errno;
  if (w < 0 && saved == EPIPE) {
    timespec zero{0, 0};
    while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
    }
  }
  ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = saved;
  return w;
}

std::string last_lines(const std::string& tail) {
  std::string t = tail;
  while (!t.empty() && (t.back() == '\n' || t.back() == '\r' || t.back() == ' ')) t.pop_back();
  if (t.empty()) return "";
  // The last three lines at most.
  std::size_t at = t.size();
  for (int n = 0; n < 3 && at != std::string::npos && at > 0; ++n) at = t.rfind('\n', at - 1);
  if (at != std::string::npos && at < t.size()) t = t.substr(at + 1);
  return "; stderr: " + iaapi::valid_utf8(t);  // the program's bytes: any at all
}

double number_at(const json::value& v, const std::string& where) {
  if (!v.is_number()) throw std::invalid_argument(where + ": expected a number");
  double d = v.to_number<double>();
  if (!std::isfinite(d)) throw std::invalid_argument(where + ": not a finite number");
  return d;
}

PolygonPx ring_from(const json::value& v, const std::string& where, double W, double H, std::size_t& points) {
  if (!v.is_array()) throw std::invalid_argument(where + ": expected an array of [x, y]");
  PolygonPx ring;
  for (std::size_t i = 0; i < v.get_array().size(); ++i) {
    const auto& p = v.get_array()[i];
    const std::string at = where + "[" + std::to_string(i) + "]";
    if (!p.is_array() || p.get_array().size() != 2) throw std::invalid_argument(at + ": expected [x, y]");
    if (++points > kMaxPoints)
      throw std::invalid_argument("result.polygons: more than " + std::to_string(kMaxPoints) + " points");
    ring.push_back({std::clamp(number_at(p.get_array()[0], at), 0.0, W),
                    std::clamp(number_at(p.get_array()[1], at), 0.0, H)});
  }
  if (ring.size() < 3) throw std::invalid_argument(where + ": a polygon needs at least 3 points");
  return ring;
}

json::object point_json(const PointPx& p, double width) { return {{"x", p.x / width}, {"y", p.y / width}}; }

// The program's result object to an Outcome (see docs/exec.md).
Outcome outcome_from(const json::object& r, const slide::Slide& s) {
  Outcome out;
  auto dr = r.if_contains("displayResult");
  if (!dr || !dr->is_string()) throw std::invalid_argument("result.displayResult: expected a string");
  out.display_result = std::string(iaapi::utf8_prefix(dr->get_string().subview(), 1000));
  if (auto dp = r.if_contains("displayProperties")) {
    if (!dp->is_object()) throw std::invalid_argument("result.displayProperties: expected an object");
    for (const auto& [k, v] : dp->get_object()) {
      const std::string where = "result.displayProperties." + std::string(k);
      if (v.is_string()) out.display_properties.emplace_back(std::string(k), std::string(v.get_string()));
      else if (v.is_int64()) out.display_properties.emplace_back(std::string(k), v.get_int64());
      else if (v.is_number()) out.display_properties.emplace_back(std::string(k), number_at(v, where));
      else throw std::invalid_argument(where + ": expected a string or a number");
    }
  }
  const double W = static_cast<double>(s.width()), H = static_cast<double>(s.height());
  std::size_t points = 0;
  json::array polys, labels;
  if (auto pv = r.if_contains("polygons")) {
    if (!pv->is_array()) throw std::invalid_argument("result.polygons: expected an array");
    for (std::size_t i = 0; i < pv->get_array().size(); ++i) {
      const std::string where = "result.polygons[" + std::to_string(i) + "]";
      const auto& e = pv->get_array()[i];
      if (!e.is_object()) throw std::invalid_argument(where + ": expected an object");
      const auto& o = e.get_object();
      auto pts = o.if_contains("points");
      if (!pts) throw std::invalid_argument(where + ".points: missing");
      OverlayShape shape;
      shape.rings.push_back(ring_from(*pts, where + ".points", W, H, points));
      json::array ring_pts;
      for (const auto& p : shape.rings.back()) ring_pts.push_back(point_json(p, W));
      polys.push_back(json::object{{"points", std::move(ring_pts)}});
      shape.label_at = shape.rings.back().front();
      if (auto l = o.if_contains("label")) {
        if (!l->is_string()) throw std::invalid_argument(where + ".label: expected a string");
        shape.label = std::string(iaapi::utf8_prefix(l->get_string().subview(), 200));
        labels.push_back(json::object{{"location", point_json(shape.label_at, W)}, {"label", shape.label}});
      }
      out.overlay.push_back(std::move(shape));
    }
  }
  if (auto c = r.if_contains("content")) {
    // IA-API content as it is (image-width units); the worker validates it.
    auto t = r.if_contains("type");
    out.result_type = t && t->is_string() ? std::string(t->get_string()) : "primitive";
    if (out.result_type != "primitive" && out.result_type != "patchCollection")
      throw std::invalid_argument("result.type: expected primitive or patchCollection");
    out.content = *c;
  } else {
    json::array items;
    if (!polys.empty())
      items.push_back({{"style", {{"strokeStyle", "#2d6cdf"}, {"fillStyle", "rgba(0,0,0,0)"}, {"size", 2}}},
                       {"polygons", std::move(polys)},
                       {"labels", std::move(labels)}});
    out.result_type = "primitive";
    out.content = std::move(items);
  }
  return out;
}

Outcome run(Context& ctx) {
  const Params& params = ctx.params();
  const std::string command = params.text("command");
  const std::size_t max_out = static_cast<std::size_t>(params.integer("max_output_mb")) << 20;

  std::error_code ec;
  fs::path scratch = (ctx.scratch_dir().empty() ? fs::temp_directory_path(ec) : ctx.scratch_dir()) /
                     "iaserve-exec-XXXXXX";
  std::string templ = scratch.string();
  if (!::mkdtemp(templ.data())) {
    const int e = errno;
    const std::string what = "scratch folder " + templ + ": " + std::strerror(e);
    if (host_errno(e)) throw HostError("exec " + command + ": " + what);
    fail(command, what);
  }
  scratch = templ;
  struct RemoveScratch {
    fs::path p;
    ~RemoveScratch() {
      std::error_code e;
      fs::remove_all(p, e);
    }
  } remove_scratch{scratch};

  const std::string input = json::serialize(job_description(ctx, scratch)) + "\n";
  Child child;
  spawn(child, command, split_args(params.text("args")), [&ctx] { ctx.check(); });

  std::size_t written = 0, out_total = 0, line_no = 0;
  std::string out_buf, err_tail;
  std::optional<json::object> result;
  std::string protocol_error;
  auto take_line = [&](std::string_view line) {
    ++line_no;
    if (!protocol_error.empty()) return;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (line.empty()) return;
    json::parse_options po;
    po.max_depth = kMaxDepth;
    std::error_code jec;
    json::value v = json::parse(line, jec, {}, po);
    if (jec || !v.is_object()) {
      protocol_error = "stdout line " + std::to_string(line_no) + " is not a JSON object: " +
                       iaapi::valid_utf8(iaapi::utf8_prefix(line, 120)) + " (print other text to stderr)";
      return;
    }
    auto& o = v.get_object();
    if (auto p = o.if_contains("progress")) {
      if (!p->is_number()) {
        protocol_error = "stdout line " + std::to_string(line_no) + ": progress: expected a number";
        return;
      }
      double pct = p->to_number<double>();
      if (std::isfinite(pct)) ctx.progress(static_cast<int>(std::clamp(pct, 0.0, 99.0)));
    } else if (auto r = o.if_contains("result")) {
      if (result) protocol_error = "stdout line " + std::to_string(line_no) + ": a second result";
      else if (!r->is_object()) protocol_error = "stdout line " + std::to_string(line_no) + ": result: expected an object";
      else result = r->get_object();
    } else {
      protocol_error = "stdout line " + std::to_string(line_no) + ": expected \"progress\" or \"result\"";
    }
  };

  char buf[65536];
  // The program's exit ends the run even when something it started still
  // holds its stdout or stderr: what it wrote before exiting is read, then
  // the rest of its group is killed.
  bool exited = false;
  auto exited_at = std::chrono::steady_clock::now();
  while (child.out >= 0 || child.err >= 0) {
    ctx.check();  // cancel or time limit: the Child's end kills the group
    pollfd fds[3];
    nfds_t n = 0;
    int idx_in = -1, idx_out = -1, idx_err = -1;
    if (child.in >= 0) fds[idx_in = static_cast<int>(n++)] = {child.in, POLLOUT, 0};
    if (child.out >= 0) fds[idx_out = static_cast<int>(n++)] = {child.out, POLLIN, 0};
    if (child.err >= 0) fds[idx_err = static_cast<int>(n++)] = {child.err, POLLIN, 0};
    int rc = ::poll(fds, n, exited ? 20 : 200);
    if (rc < 0) {
      if (errno == EINTR) continue;
      fail(command, std::string("poll: ") + std::strerror(errno));
    }
    if (idx_in >= 0 && fds[idx_in].revents) {
      ssize_t w = write_quietly(child.in, input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<std::size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size())
        child.close_in();  // done, or the program does not read (EPIPE): its business
    }
    if (idx_out >= 0 && fds[idx_out].revents) {
      ssize_t r = ::read(child.out, buf, sizeof buf);
      if (r > 0) {
        out_total += static_cast<std::size_t>(r);
        if (out_total > max_out)
          fail(command, "more than " + std::to_string(max_out >> 20) + " MB on stdout (max_output_mb)");
        out_buf.append(buf, static_cast<std::size_t>(r));
        std::size_t start = 0, nl;
        while ((nl = out_buf.find('\n', start)) != std::string::npos) {
          take_line(std::string_view(out_buf).substr(start, nl - start));
          start = nl + 1;
        }
        out_buf.erase(0, start);
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::close(child.out);
        child.out = -1;
      }
    }
    if (idx_err >= 0 && fds[idx_err].revents) {
      ssize_t r = ::read(child.err, buf, sizeof buf);
      if (r > 0) {
        err_tail.append(buf, static_cast<std::size_t>(r));
        if (err_tail.size() > 2 * kStderrKept) err_tail.erase(0, err_tail.size() - kStderrKept);
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        ::close(child.err);
        child.err = -1;
      }
    }
    if (!protocol_error.empty()) fail(command, protocol_error + last_lines(err_tail));
    if (!exited) {
      if (child.ended()) {
        exited = true;
        exited_at = std::chrono::steady_clock::now();
      }
    } else if (rc == 0 || std::chrono::steady_clock::now() - exited_at > std::chrono::seconds(2)) {
      break;  // drained: whoever still holds the pipes is left over from it
    }
  }
  if (!out_buf.empty()) take_line(out_buf);  // a last line without its newline
  child.close_in();
  // Both pipes closed: the program exited (or closed them); wait, still
  // honouring cancel and the time limit.
  while (!exited && !child.ended()) {
    ctx.check();
    ::usleep(20000);
  }
  child.reap();  // with anything the program left running in its group
  if (!protocol_error.empty()) fail(command, protocol_error + last_lines(err_tail));
  // Not by this worker (a cancel or the time limit end above): the kernel's
  // out-of-memory killer, most likely, or an administrator.
  if (WIFSIGNALED(child.status) && WTERMSIG(child.status) == SIGKILL)
    throw HostError("exec " + command + ": killed by SIGKILL from outside this worker (out of memory?)" +
                    last_lines(err_tail));
  if (WIFSIGNALED(child.status))
    fail(command, std::string("killed by signal ") + ::strsignal(WTERMSIG(child.status)) + last_lines(err_tail));
  if (WIFEXITED(child.status) && WEXITSTATUS(child.status) != 0)
    fail(command, "exited with code " + std::to_string(WEXITSTATUS(child.status)) + last_lines(err_tail));
  if (!result) fail(command, "exited 0 without a {\"result\": ...} line on stdout" + last_lines(err_tail));
  try {
    return outcome_from(*result, ctx.slide());
  } catch (const std::invalid_argument& e) {
    fail(command, e.what());
  }
}

}  // namespace

extern const Descriptor exec_analysis{exec_spec(), run, {}};

}  // namespace iaserve::analysis
