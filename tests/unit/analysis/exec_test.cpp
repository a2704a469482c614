// The `exec` analysis with real programs: small sh scripts written here and
// the shipped example examples/exec/frame.sh, on a synthetic slide.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "tests/unit/analysis/slides.hpp"
#include "worker/slide/slide.hpp"

using namespace iaserve;
using namespace iaserve::test;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

struct ExecSlide {
  TempDir dir{"iaserve-exec"};
  TruthSlide ts = make_slide(dir, "x.svs", {"--width", "3000", "--height", "2000", "--seed", "9"});
  slide::Slide s = slide::Slide::open(ts.path);

  // An executable sh script in the test folder.
  std::string script(const std::string& name, const std::string& body) const {
    fs::path p = dir / name;
    std::ofstream(p) << "#!/bin/sh\n" << body;
    ::chmod(p.c_str(), 0755);
    return p.string();
  }
  analysis::RunReport run(const json::object& params, const analysis::Hooks& hooks = {},
                          const analysis::Input& input = {}) const {
    return analysis::run_analysis("exec", s, input, params, hooks);
  }
};

// A program that keeps its job in $1, proves its scratch folder is there
// (a file made in it), notes the folder in $1.scratch and its mode in
// $1.mode, and answers.
constexpr const char* kDumpJob = R"SH(cat > "$1"
scratch=$(sed -n 's/.*"scratch":"\([^"]*\)".*/\1/p' "$1")
test -d "$scratch" && touch "$scratch/mine" && echo "$scratch" > "$1.scratch"
stat -c %a "$scratch" > "$1.mode"
echo '{"result": {"displayResult": "seen"}}'
)SH";

std::string first_line(const fs::path& file) {
  std::ifstream in(file);
  std::string line;
  std::getline(in, line);
  return line;
}

bool process_gone(long pid) {
  // Gone, or a zombie waiting for its reaper: either way it runs no more.
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

}  // namespace

TEST_CASE("exec runs the shipped example: its result, outlines and progress", "[exec]") {
  ExecSlide t;
  std::vector<int> progress;
  analysis::Hooks hooks;
  hooks.progress = [&](int p) { progress.push_back(p); };
  const std::string program = (source_dir() / "examples" / "exec" / "frame.sh").string();
  auto r = t.run({{"command", program}, {"args", "--margin 10"}}, hooks);
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  const auto& o = *r.outcome;
  CHECK(o.display_result == "Slide 3000 x 2000 px");
  REQUIRE(o.display_properties.size() == 3);
  CHECK(o.display_properties[0].first == "Width (px)");
  CHECK(std::get<std::int64_t>(o.display_properties[0].second) == 3000);
  CHECK(std::get<std::int64_t>(o.display_properties[2].second) == 10);
  // One outline, 10 % in from each side, in level-0 px for the overlay and
  // in image-width units in the IA-API content.
  REQUIRE(o.overlay.size() == 1);
  REQUIRE(o.overlay[0].rings.size() == 1);
  const auto& ring = o.overlay[0].rings[0];
  REQUIRE(ring.size() == 4);
  CHECK(ring[0].x == 300);
  CHECK(ring[0].y == 200);
  CHECK(ring[2].x == 2700);
  CHECK(ring[2].y == 1800);
  CHECK(o.overlay[0].label == "middle");
  CHECK(o.result_type == "primitive");
  const auto& pts = o.content.at(0).at("polygons").at(0).at("points").as_array();
  CHECK(pts.at(2).at("x").to_number<double>() == Approx(0.9));
  CHECK(pts.at(2).at("y").to_number<double>() == Approx(1800.0 / 3000.0));
  CHECK(progress == std::vector<int>{0, 50, 100});
}

TEST_CASE("exec hands the program the slide, the drawn regions, the parameters and a scratch folder", "[exec]") {
  ExecSlide t;
  const fs::path seen = t.dir / "job.json";
  const std::string program = t.script("dump.sh", kDumpJob);
  analysis::Input input;
  input.type = analysis::InputType::tagged_polygon;
  input.regions.push_back({{10, 20}, {500, 20}, {500, 400}});
  auto r = t.run({{"command", program}, {"args", seen.string()}}, {}, input);
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  CHECK(r.outcome->display_result == "seen");
  CHECK(r.outcome->content.as_array().empty());

  const json::object job = json::parse(iaserve::test::read_file(seen)).as_object();
  CHECK(job.at("version") == 1);
  CHECK(job.at("slide").at("path") == t.ts.path.c_str());
  CHECK(job.at("slide").at("width") == 3000);
  CHECK(job.at("slide").at("height") == 2000);
  CHECK(job.at("slide").at("levels").as_array().size() == static_cast<std::size_t>(t.s.level_count()));
  CHECK(job.at("input").at("type") == "taggedPolygon");
  CHECK(json::serialize(job.at("input").at("regions")) == "[[[1E1,2E1],[5E2,2E1],[5E2,4E2]]]");
  CHECK(job.at("params").at("args") == seen.c_str());
  // The scratch folder existed while it ran and is gone after.
  const std::string scratch = first_line(seen.string() + ".scratch");
  REQUIRE_FALSE(scratch.empty());
  CHECK(fs::path(scratch).parent_path() == fs::temp_directory_path());  // no Hooks::scratch_dir given
  CHECK_FALSE(fs::exists(scratch));
}

TEST_CASE("exec makes its scratch folder in the caller's scratch_dir (the worker's slide folder)", "[exec]") {
  ExecSlide t;
  const fs::path seen = t.dir / "job.json";
  const std::string program = t.script("dump.sh", kDumpJob);
  analysis::Hooks hooks;
  hooks.scratch_dir = t.dir / "slide-folder";
  fs::create_directories(hooks.scratch_dir);
  auto r = t.run({{"command", program}, {"args", seen.string()}}, hooks);
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  const std::string scratch = first_line(seen.string() + ".scratch");
  REQUIRE_FALSE(scratch.empty());
  CHECK(fs::path(scratch).parent_path() == hooks.scratch_dir);
  CHECK(iaserve::test::read_file(seen.string() + ".mode") == "700\n");
  CHECK_FALSE(fs::exists(scratch));
  CHECK(fs::is_empty(hooks.scratch_dir));  // removed after the run, nothing left beside it

  // A scratch_dir that cannot take a folder: the run fails naming it, not elsewhere.
  hooks.scratch_dir = t.dir / "missing";
  r = t.run({{"command", program}, {"args", seen.string()}}, hooks);
  CHECK(r.status == analysis::RunStatus::failed);
  CHECK_THAT(r.error, Catch::Matchers::Contains((t.dir / "missing").string()));
}

TEST_CASE("exec: a misbehaving program ends with a message that says how", "[exec]") {
  ExecSlide t;
  struct Case {
    std::string name, body, expected;
  };
  const std::vector<Case> cases = {
      {"exit3.sh", "echo 'model file missing' >&2\nexit 3\n", "exited with code 3; stderr: model file missing"},
      // Latin-1 on stderr, bad UTF-8 in a line: the message stays valid
      // UTF-8 (the queue's record and DPAT's result take it).
      {"latin1.sh", "printf 'Gr\\366\\337e\\n' >&2\nexit 1\n", "exited with code 1; stderr: Gr\uFFFD\uFFFDe"},
      {"badline.sh", "printf 'x\\377y\\n'\n", "stdout line 1 is not a JSON object: x\uFFFDy (print other text to stderr)"},
      {"noise.sh", "echo '{\"progress\": 5}'\necho 'loading weights'\n",
       "stdout line 2 is not a JSON object: loading weights (print other text to stderr)"},
      {"none.sh", "echo '{\"progress\": 5}'\n", "exited 0 without a {\"result\": ...} line on stdout"},
      {"twice.sh", "echo '{\"result\": {\"displayResult\": \"a\"}}'\necho '{\"result\": {\"displayResult\": \"b\"}}'\n",
       "stdout line 2: a second result"},
      {"signal.sh", "echo 'about to crash' >&2\nkill -SEGV $$\n", "killed by signal Segmentation fault; stderr: about to crash"},
      {"nodisplay.sh", "echo '{\"result\": {\"displayProperties\": {}}}'\n", "result.displayResult: expected a string"},
      {"badpoly.sh", "echo '{\"result\": {\"displayResult\": \"x\", \"polygons\": [{\"points\": [[1,2],[3]]}]}}'\n",
       "result.polygons[0].points[1]: expected [x, y]"},
      {"other.sh", "echo '{\"hello\": 1}'\n", "stdout line 1: expected \"progress\" or \"result\""},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    const std::string program = t.script(c.name, c.body);
    auto r = t.run({{"command", program}});
    CHECK(r.status == analysis::RunStatus::failed);
    CHECK(r.error == "exec " + program + ": " + c.expected);
    CHECK_FALSE(r.transient);  // its own fault: failed for good
  }
  // SIGKILL from outside the worker (the OOM killer, most likely): the
  // host's trouble, retried.
  const std::string oom = t.script("oom.sh", "echo 'allocating' >&2\nkill -KILL $$\n");
  auto killed = t.run({{"command", oom}});
  CHECK(killed.status == analysis::RunStatus::failed);
  CHECK(killed.transient);
  CHECK(killed.error == "exec " + oom + ": killed by SIGKILL from outside this worker (out of memory?); stderr: allocating");
  // Too much on stdout.
  const std::string flood = t.script("flood.sh", "yes '{\"progress\": 1}' | head -c 3000000\n");
  auto r = t.run({{"command", flood}, {"max_output_mb", 1}});
  CHECK(r.status == analysis::RunStatus::failed);
  CHECK(r.error == "exec " + flood + ": more than 1 MB on stdout (max_output_mb)");
}

TEST_CASE("exec: a display text cut at its limit is cut between characters", "[exec]") {
  ExecSlide t;
  // 999 bytes, then two-byte characters: byte 1000 is the first half of one.
  const std::string program =
      t.script("long.sh", "printf '{\"result\": {\"displayResult\": \"%s\\303\\251\\303\\251\"}}\\n' \"$(head -c 999 /dev/zero | tr '\\0' a)\"\n");
  auto r = t.run({{"command", program}});
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  CHECK(r.outcome->display_result == std::string(999, 'a'));
}

TEST_CASE("exec: a missing or unrunnable program is a parameter error before any run", "[exec]") {
  const auto* d = analysis::find("exec");
  REQUIRE(d != nullptr);
  auto error_of = [&](const json::object& p) -> std::string {
    try {
      analysis::validate_params(*d, p);
    } catch (const analysis::ParameterError& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK(error_of({}) == "parameter command: required (the program to run)");
  CHECK(error_of({{"command", "/nonexistent/model"}}) ==
        "parameter command: \"/nonexistent/model\" is not an executable file (nor on PATH)");
  TempDir dir;
  const fs::path plain = dir / "model.txt";  // a file without execute bits
  std::ofstream(plain) << "weights\n";
  ::chmod(plain.c_str(), 0644);
  CHECK(error_of({{"command", plain.string()}}) ==
        "parameter command: \"" + plain.string() + "\" is not an executable file (nor on PATH)");
  CHECK(error_of({{"command", dir.path().string()}}) ==
        "parameter command: \"" + dir.path().string() + "\" is not an executable file (nor on PATH)");
  CHECK(error_of({{"command", "sh"}}) == "no error");  // found on PATH
  // args' quoting is checked at start-up too.
  CHECK(error_of({{"command", "sh"}, {"args", "--model 'my model.pt"}}) ==
        "parameter args: unclosed ' at character 9: --model 'my model.pt");
  CHECK(error_of({{"command", "sh"}, {"args", "--name \"a b"}}) == "parameter args: unclosed \" at character 8: --name \"a b");
  CHECK(error_of({{"command", "sh"}, {"args", "x \\"}}) == "parameter args: ends with a lone backslash: x \\");
  CHECK(error_of({{"command", "sh"}, {"args", "--model '/opt/my model.pt'"}}) == "no error");
}

TEST_CASE("an app's analysis setting: the server checks what holds on any host, a worker also the program",
          "[exec]") {
  using analysis::Checks;
  const json::object missing{{"command", "/nonexistent/model"}};
  // The server may run where the program is not installed: it queues the job.
  CHECK(analysis::app_config_error(0, "exec", missing, Checks::any_host) == std::nullopt);
  CHECK(analysis::app_config_error(3, "exec", missing, Checks::this_host) ==
        "apps[3].params.command: \"/nonexistent/model\" is not an executable file (nor on PATH)");
  // The rest is checked everywhere.
  for (Checks c : {Checks::any_host, Checks::this_host}) {
    CHECK(analysis::app_config_error(1, "exec", {}, c) ==
          "apps[1].params.command: required (the program to run)");
    CHECK(analysis::app_config_error(1, "exec", {{"command", "sh"}, {"args", "'x"}}, c) ==
          "apps[1].params.args: unclosed ' at character 1: 'x");
    CHECK(analysis::app_config_error(2, "tissue", {{"min_area", 5}}, c) ==
          "apps[2].params.min_area: unknown for analysis tissue (known: method, target_mpp, "
          "min_region_um2, simplify_tolerance_px, max_points)");
    CHECK(analysis::app_config_error(0, "tisue", {}, c) ==
          "apps[0].analysis: unknown analysis \"tisue\" (built in: tissue, exec)");
    CHECK(analysis::app_config_error(0, "tissue", {{"target_mpp", 16}}, c) == std::nullopt);
  }
}

TEST_CASE("exec: args are split as a shell would, with nothing expanded", "[exec]") {
  ExecSlide t;
  const fs::path seen = t.dir / "argv.txt";
  // Writes each argument on its own line between brackets, to the file named
  // by the first one.
  const std::string program = t.script("argv.sh", R"SH(out=$1; shift
for a in "$@"; do printf '[%s]\n' "$a" >> "$out"; done
echo '{"result": {"displayResult": "ok"}}'
)SH");
  const std::string args = seen.string() +
                           R"( --model '/opt/my model.pt'  "say \"hi\" \\ there" a\ b $HOME ~ '*' don\'t "" end)";
  auto r = t.run({{"command", program}, {"args", args}});
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  std::string all = iaserve::test::read_file(seen);
  CHECK(all ==
        "[--model]\n[/opt/my model.pt]\n[say \"hi\" \\ there]\n[a b]\n[$HOME]\n[~]\n[*]\n[don't]\n[]\n[end]\n");

  // A bad quote found only at run time (no start-up check, e.g. `iaworker
  // analyse`) fails the job with the same message.
  auto bad = t.run({{"command", program}, {"args", "'open"}});
  CHECK(bad.status == analysis::RunStatus::failed);
  CHECK_THAT(bad.error, Catch::Contains("parameter args: unclosed ' at character 1: 'open"));
}

// Waits up to 5 s for pid to end; kills it should it still run (a failed
// check leaves nothing behind).
bool ends(long pid) {
  bool gone = false;
  for (int i = 0; i < 100 && !(gone = process_gone(pid)); ++i) std::this_thread::sleep_for(50ms);
  if (!gone) ::kill(static_cast<pid_t>(pid), SIGKILL);
  return gone;
}

long pid_in(const fs::path& file) {
  long pid = 0;
  std::ifstream(file) >> pid;
  return pid;
}

TEST_CASE("exec: the time limit and a cancel kill the program and what it started", "[exec]") {
  ExecSlide t;
  // It starts a child of its own (as a Python model may) and one that
  // leaves the process group (a daemon, setsid), then waits.
  const fs::path pids = t.dir / "pids";
  const std::string program =
      t.script("hang.sh", "sleep 600 &\necho $! > \"$1\"\nsetsid sleep 600 &\necho $! > \"$1.escaped\"\n"
                          "echo '{\"progress\": 10}'\nwait\n");
  for (bool cancel : {false, true}) {
    INFO((cancel ? "cancel" : "time limit"));
    fs::remove(pids);
    fs::remove(pids.string() + ".escaped");
    analysis::Hooks hooks;
    bool stop = false;
    if (cancel) {
      hooks.progress = [&](int p) { stop = p >= 10; };
      hooks.cancelled = [&] { return stop; };
    } else {
      hooks.time_limit = 1s;
    }
    auto r = t.run({{"command", program}, {"args", pids.string()}}, hooks);
    CHECK(r.status == (cancel ? analysis::RunStatus::cancelled : analysis::RunStatus::timed_out));
    CHECK(r.seconds < 60);
    const long pid = pid_in(pids), escaped = pid_in(pids.string() + ".escaped");
    REQUIRE(pid > 0);
    REQUIRE(escaped > 0);
    // The grandchild went with its process group, the one that left it too.
    CHECK(ends(pid));
    CHECK(ends(escaped));
  }
}

TEST_CASE("exec: the program's parent is the small guard program, and its SIGUSR1 or SIGTERM is not the worker's",
          "[exec]") {
  ExecSlide t;
  // The parent is iaexec-guard (not a copy of this process holding its
  // memory), which kills the group when the worker is gone (SIGUSR1) or
  // asks (SIGTERM); the same signals from the program must not end the run.
  const fs::path parent = t.dir / "parent";
  const std::string program = t.script("usr1.sh",
                                       "cat /proc/$PPID/comm > \"$1\"\nkill -USR1 $PPID\nkill -TERM $PPID\nsleep 0.3\n"
                                                  "echo '{\"result\": {\"displayResult\": \"still here\"}}'\n");
  auto r = t.run({{"command", program}, {"args", parent.string()}});
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  CHECK(r.outcome->display_result == "still here");
  std::string comm;
  std::ifstream(parent) >> comm;
  CHECK(comm == "iaexec-guard");
}

TEST_CASE("exec: without iaexec-guard beside the worker's program, a run fails naming it", "[exec][cli]") {
  ExecSlide t;
  // iaworker alone in a folder, as a partial install would leave it.
  const fs::path alone = t.dir / "iaworker";
  fs::copy_file(bin("iaworker"), alone);
  ::chmod(alone.c_str(), 0755);
  auto r = run({alone.string(), "analyse", t.ts.path, "--analysis", "exec", "--param", "command=/bin/true"});
  CHECK(r.code != 0);
  CHECK_THAT(r.err, Catch::Matchers::Contains(
                        "exec /bin/true: cannot start: iaexec-guard is not beside this program (it is installed with "
                        "iaworker)"));
  // A worker with an exec app does not even start: it would fail every job.
  fs::create_directories(t.dir / "q");
  std::ofstream(t.dir / "exec.toml") << "[[apps]]\nroute = \"/t\"\napplication_id = \"t\"\nanalysis = \"exec\"\n"
                                        "[apps.params]\ncommand = \"/bin/true\"\n";
  r = run({alone.string(), "run", "--config", (t.dir / "exec.toml").string(), "--queue-dir", (t.dir / "q").string(),
           "--check"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains("apps[0].analysis: exec runs its programs under iaexec-guard, which is "
                                              "not beside this program"));
  // Beside it, the same run gets as far as the program (which answers nothing).
  fs::copy_file(bin("iaexec-guard"), t.dir / "iaexec-guard");
  ::chmod((t.dir / "iaexec-guard").c_str(), 0755);
  r = run({alone.string(), "analyse", t.ts.path, "--analysis", "exec", "--param", "command=/bin/true"});
  CHECK(r.code != 0);
  CHECK_THAT(r.err, Catch::Matchers::Contains("exec /bin/true: "));
  CHECK_THAT(r.err, !Catch::Matchers::Contains("iaexec-guard"));
  r = run({alone.string(), "run", "--config", (t.dir / "exec.toml").string(), "--queue-dir", (t.dir / "q").string(),
           "--check"});
  INFO(r.err);
  CHECK(r.code == 0);
}

TEST_CASE("exec: a guard killed from outside takes its program with it, and the run is retried", "[exec]") {
  ExecSlide t;
  const fs::path pid_file = t.dir / "pid";
  // The program notes its pid, kills its guard, then would sleep half a minute.
  const std::string program =
      t.script("orphan.sh", "echo $$ > \"$1\"\nkill -KILL $PPID\nsleep 30\ntouch \"$1.survived\"\n"
                            "echo '{\"result\": {\"displayResult\": \"too late\"}}'\n");
  analysis::Hooks hooks;
  hooks.time_limit = 60s;
  auto r = t.run({{"command", program}, {"args", pid_file.string()}}, hooks);
  CHECK(r.status == analysis::RunStatus::failed);
  // Killed after its report that the program started, or (the program
  // being quick) before it: a fault of the host either way.
  CHECK_THAT(r.error, Catch::Matchers::StartsWith("exec " + program + ": killed by SIGKILL from outside this worker") ||
                          Catch::Matchers::Equals("exec " + program +
                                                  ": iaexec-guard ended before it said the program started (killed by "
                                                  "SIGKILL)"));
  CHECK(r.transient);
  // The program went with its guard: it never woke from its sleep (had it
  // lived, the run would have waited for it, and the mark would be there).
  CHECK_FALSE(fs::exists(pid_file.string() + ".survived"));
  const long pid = pid_in(pid_file);
  REQUIRE(pid > 0);
  CHECK(ends(pid));
}

TEST_CASE("exec: the program's exit ends the run though something it left holds its stdout", "[exec]") {
  ExecSlide t;
  const fs::path pids = t.dir / "pids";
  // The result, then a background sleep that keeps stdout and stderr open,
  // and one that left the process group (as a daemon does).
  const std::string program =
      t.script("leave.sh", "echo '{\"result\": {\"displayResult\": \"done early\"}}'\nsleep 600 &\necho $! > \"$1\"\n"
                           "setsid sleep 600 < /dev/null > /dev/null 2>&1 &\necho $! > \"$1.escaped\"\nexit 0\n");
  analysis::Hooks hooks;
  hooks.time_limit = 60s;  // before the fix the run waited for the sleep and timed out here
  auto r = t.run({{"command", program}, {"args", pids.string()}}, hooks);
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  CHECK(r.outcome->display_result == "done early");
  const long pid = pid_in(pids), escaped = pid_in(pids.string() + ".escaped");
  REQUIRE(pid > 0);
  REQUIRE(escaped > 0);
  CHECK(ends(pid));      // killed with the rest of its group
  CHECK(ends(escaped));  // handed to the guard when the program ended, and killed
}

TEST_CASE("exec: the program gets stdin, stdout and stderr, none of the worker's other files", "[exec]") {
  ExecSlide t;
  // A descriptor of this process that is not close-on-exec (a library's
  // socket, say) must not reach the program.
  const fs::path marker = t.dir / "leak-marker";
  std::ofstream(marker) << "x";
  const int fd = ::open(marker.c_str(), O_RDONLY);  // no O_CLOEXEC, on purpose
  REQUIRE(fd >= 0);
  const std::string program = t.script("fds.sh", R"SH(n=0
for f in /proc/$$/fd/*; do
  case "$(readlink "$f")" in *leak-marker) n=$((n+1));; esac
done
echo "{\"result\": {\"displayResult\": \"$n\"}}"
)SH");
  auto r = t.run({{"command", program}});
  ::close(fd);
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  CHECK(r.outcome->display_result == "0");
}
