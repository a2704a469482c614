// The worker end to end, with the real programs: dpatsim plays DPAT, iaserve
// takes the invocations and queues them, iaworkers run them. What a
// pathologist would see is read back from the simulator (/_sim/results,
// /_sim/calls), what the queue did from its folders.
#include <catch2/catch.hpp>

#include <boost/json.hpp>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <chrono>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "iaapi/decode.hpp"
#include "queue/queue.hpp"
#include "tests/support/http.hpp"
#include "tests/support/process.hpp"

namespace json = boost::json;
using namespace iaserve::test;
using namespace std::chrono_literals;
namespace q = iaserve::queue;

namespace {

const std::string kApp = "iaserve-tissue";  // examples/iaserve.toml apps[0]
const std::string kRoute = "/apps/tissue";
// The app's outputs in a slide folder.
const std::string kResultFile = iaserve::iaapi::result_file_name(kApp);
const std::string kOverlayFile = iaserve::iaapi::overlay_file_name(kApp);

std::string origin(const std::string& url) {
  auto p = url.find("://");
  auto slash = url.find('/', p == std::string::npos ? 0 : p + 3);
  return slash == std::string::npos ? url : url.substr(0, slash);
}

json::value get_json(const std::string& url) {
  auto a = http_get(url);
  INFO("GET " << url << ": " << a.status << " " << a.error << " " << a.body);
  REQUIRE(a.status == 200);
  return json::parse(a.body);
}

// Slides made once per test: small, different seeds, ground truth moved aside.
void make_slides(const fs::path& dir, int count, int width, int height, const std::string& prefix = "s") {
  fs::create_directories(dir);
  fs::create_directories(dir.parent_path() / "truth");
  for (int i = 0; i < count; ++i) {
    const fs::path out = dir / (prefix + std::to_string(i) + ".svs");
    auto r = run({bin("mkslide"), "--width", std::to_string(width), "--height", std::to_string(height), "--seed",
                  std::to_string(100 + i), "--threads", "1", out.string()});
    INFO(r.err);
    REQUIRE(r.code == 0);
    fs::path truth = out;
    truth += ".truth.json";
    if (fs::exists(truth)) fs::rename(truth, dir.parent_path() / "truth" / truth.filename());
  }
}

// The newest result of the app per slide, and how many results it has there.
struct SlideResults {
  std::map<std::string, std::vector<json::object>> by_slide;
};
SlideResults results(const std::string& sim_root) {
  SlideResults out;
  const json::value v = get_json(sim_root + "/_sim/results");
  for (const auto& e : v.as_array()) {
    const auto& o = e.as_object();
    if (o.at("applicationId").as_string() != kApp.c_str()) continue;
    const auto& r = o.at("result").as_object();
    out.by_slide[std::string(r.at("slideId").as_string())].push_back(r);
  }
  return out;
}

bool is_final(const json::object& r) {
  auto* p = r.if_contains("displayProperties");
  return !(p && p->is_object() && p->as_object().contains("Progress"));
}
std::string display(const json::object& r) { return std::string(r.at("displayResult").as_string()); }

// The whole system on loopback; workers added by the test.
struct Stack {
  TempDir dir{"iaserve-worker"};
  fs::path slides = dir / "slides";
  fs::path queue_dir = dir / "queue";
  fs::path server_data = dir / "server-data";
  std::unique_ptr<Process> sim, server;
  std::map<std::string, std::unique_ptr<Process>> workers;
  std::string callback, sim_root, app_url;

  fs::path config_file;  // empty: examples/iaserve.toml
  std::string config() const {
    return config_file.empty() ? (source_dir() / "examples" / "iaserve.toml").string() : config_file.string();
  }
  // examples/iaserve.toml with its app running `exec` on this program.
  void use_exec(const std::string& command, const std::string& args) {
    std::string text = read_file(source_dir() / "examples" / "iaserve.toml");
    const auto params = text.find("[apps.params]"), next = text.find("[apps.notifications]");
    REQUIRE(params != std::string::npos);
    REQUIRE(next != std::string::npos);
    text = text.substr(0, params) + "[apps.params]\ncommand = \"" + command + "\"\nargs = \"" + args + "\"\n\n" +
           text.substr(next);
    const auto analysis = text.find("analysis = \"tissue\"");
    REQUIRE(analysis != std::string::npos);
    text.replace(analysis, std::string("analysis = \"tissue\"").size(), "analysis = \"exec\"");
    config_file = dir / "exec.toml";
    std::ofstream(config_file) << text;
  }

  void start_sim(std::vector<std::string> extra = {}, std::string listen = "127.0.0.1:0") {
    std::vector<std::string> argv{bin("dpatsim"), "serve", "--slides", slides.string(), "--listen", listen};
    argv.insert(argv.end(), extra.begin(), extra.end());
    sim = std::make_unique<Process>(argv);
    callback = sim->listening_url();
    sim_root = origin(callback);
  }
  void start_server(std::vector<std::string> extra = {}, std::string listen = "127.0.0.1:0") {
    std::vector<std::string> argv{bin("iaserve"), "--config", config(), "--listen", listen, "--queue-dir",
                                  queue_dir.string(), "--data-dir", server_data.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    server = std::make_unique<Process>(argv);
    app_url = server->listening_url() + kRoute;
  }
  // A worker with its own data folder (as on its own host).
  std::vector<std::string> worker_argv(const std::string& name, std::vector<std::string> extra = {},
                                       const std::string& queue = {}, const fs::path& data = {}) const {
    std::vector<std::string> argv{bin("iaworker"), "run", "--config", config(), "--queue-dir",
                                  queue.empty() ? queue_dir.string() : queue, "--data-dir",
                                  (data.empty() ? dir / ("data-" + name) : data).string(), "--host-id", name, "--set",
                                  "queue.lease_timeout=3s"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    return argv;
  }
  Process& start_worker(const std::string& name, std::vector<std::string> extra = {}) {
    workers[name] = std::make_unique<Process>(worker_argv(name, std::move(extra)));
    return *workers[name];
  }

  // As DPAT does on a right-click; a 502 (DPAT's callback failed) is retried
  // like a pathologist clicking again.
  // Returns how many creates it took.
  int create(const std::string& slide, int tries = 1, const std::string& token = {},
             const std::string& context = {}) {
    RunResult r;
    for (int i = 0; i < tries; ++i) {
      std::vector<std::string> argv{bin("dpatsim"), "invoke", "create", app_url, "--slide", slide, "--sim",
                                    callback, "--quiet"};
      if (!token.empty()) argv.insert(argv.end(), {"--token", token});
      if (!context.empty()) argv.insert(argv.end(), {"--context", context});
      r = run(argv, 120s);
      if (r.code == 0) return i + 1;
    }
    INFO("create on " << slide << ": " << r.out << r.err);
    FAIL("no create on " << slide << " succeeded in " << tries << " tries");
    return tries;
  }

  // Waits (bounded) until every slide has a final result of the app.
  SlideResults wait_final(const std::vector<std::string>& ids, std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    SlideResults r;
    while (true) {
      r = results(sim_root);
      std::size_t final_count = 0;
      for (const auto& id : ids) {
        auto it = r.by_slide.find(id);
        if (it != r.by_slide.end() && !it->second.empty() && is_final(it->second.back())) ++final_count;
      }
      if (final_count == ids.size() || std::chrono::steady_clock::now() > end) {
        INFO("final results on " << final_count << " of " << ids.size() << " slides");
        for (auto& [name, w] : workers) INFO(name << " log:\n" << w->stderr_text().substr(0, 4000));
        REQUIRE(final_count == ids.size());
        return r;
      }
      std::this_thread::sleep_for(200ms);
    }
  }

  std::vector<q::Job> jobs(q::State s) const {
    q::Options o;
    o.create = false;
    q::Queue queue(queue_dir, o);
    return queue.list(s);
  }
  // Waits until `n` jobs are in `s` (the worker ends the claim just after the result).
  std::vector<q::Job> wait_jobs(q::State s, std::size_t n, std::chrono::seconds limit) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (true) {
      auto list = jobs(s);
      if (list.size() >= n || std::chrono::steady_clock::now() > end) return list;
      std::this_thread::sleep_for(100ms);
    }
  }
};

std::vector<std::string> ids_of(int count, const std::string& prefix = "s") {
  std::vector<std::string> ids;
  for (int i = 0; i < count; ++i) ids.push_back(prefix + std::to_string(i));
  return ids;
}

// One final result per slide, not failed, and one done/ job per slide. A
// create answered 502 (DPAT failed to store the frame) keeps its job queued;
// when a worker took it before the retried create came, both run, one after
// the other: `creates` says how many creates each slide got.
void check_each_once(Stack& s, const std::vector<std::string>& ids, const SlideResults& r,
                     const std::map<std::string, int>& creates = {}) {
  for (const auto& id : ids) {
    INFO("slide " << id);
    const auto& list = r.by_slide.at(id);
    REQUIRE(list.size() == 1);
    CHECK(display(list.front()).rfind("Tissue ", 0) == 0);
  }
  auto done = s.wait_jobs(q::State::done, ids.size(), 60s);
  std::multiset<std::string> keys;
  for (const auto& j : done) keys.insert(j.slide_key);
  std::size_t allowed = 0;
  for (const auto& id : ids) {
    INFO("slide " << id);
    auto it = creates.find(id);
    int most = it == creates.end() ? 1 : it->second;
    allowed += static_cast<std::size_t>(most);
    CHECK(keys.count(iaserve::iaapi::slide_key(id)) >= 1);
    CHECK(keys.count(iaserve::iaapi::slide_key(id)) <= static_cast<std::size_t>(most));
  }
  CHECK(done.size() >= ids.size());
  CHECK(done.size() <= allowed);
  CHECK(s.jobs(q::State::failed).empty());
  CHECK(s.jobs(q::State::pending).empty());
}

}  // namespace

TEST_CASE("two workers take 20 slides: one final result and one done job per slide, progress on the way",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 20, 1024, 768);
  s.start_sim();
  s.start_server();
  auto& w1 = s.start_worker("w1", {"--jobs", "2", "--set", "worker.metrics_listen=\"127.0.0.1:0\""});
  const std::string metrics_url = w1.listening_url();
  s.start_worker("w2", {"--jobs", "2"});
  const auto ids = ids_of(20);
  for (const auto& id : ids) s.create(id);
  auto r = s.wait_final(ids, 300s);
  check_each_once(s, ids, r);

  // Progress went onto the one result of each slide (PUTs over the queued
  // frame), never as new results: one POST per slide, several PUTs on each.
  const json::value calls_doc = get_json(s.sim_root + "/_sim/calls");
  const json::array& calls = calls_doc.as_array();
  std::map<std::string, int> puts;
  int posts = 0;
  for (const auto& c : calls) {
    const auto& o = c.as_object();
    const std::string path(o.at("path").as_string()), method(o.at("method").as_string());
    if (path.find("/applications/" + kApp + "/results") == std::string::npos) continue;
    if (method == "POST") ++posts;
    if (method == "PUT") ++puts[path];
  }
  CHECK(posts == 20);
  CHECK(puts.size() == 20);
  int total_puts = 0;
  for (const auto& [path, n] : puts) {
    INFO(path);
    CHECK(n >= 1);  // at least the final result over the frame
    total_puts += n;
  }
  // Progress words ("analysis started", ...) went over the frames too. (A job
  // that starts before the server has stored its frame skips them: progress
  // never becomes a second result.)
  CHECK(total_puts > 20);
  // Both workers worked, each on its own data folder, which keeps what the
  // pathologist's result was made from.
  int overlays = 0;
  for (const char* w : {"w1", "w2"})
    for (const auto& e : fs::directory_iterator(s.dir / (std::string("data-") + w)))
      if (fs::exists(e.path() / kOverlayFile) && fs::exists(e.path() / kResultFile) &&
          fs::exists(e.path() / "metadata.json") && fs::exists(e.path() / "thumbnail.jpg"))
        ++overlays;
  CHECK(overlays == 20);

  // w1's metrics port counts what w1 did: its done jobs are its data folders.
  long w1_jobs = 0;
  for (const auto& e : fs::directory_iterator(s.dir / "data-w1"))
    if (fs::exists(e.path() / kResultFile)) ++w1_jobs;
  auto m = http_get(metrics_url + "/metrics");
  REQUIRE(m.status == 200);
  INFO(m.body);
  auto value_of = [&](const std::string& series) -> double {
    auto at = m.body.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(m.body.substr(at + series.size() + 2));
  };
  // (A series appears with its first count: absent means none.)
  CHECK(std::max(0.0, value_of("iaworker_jobs_total{app=\"" + kApp + "\",outcome=\"done\"}")) ==
        static_cast<double>(w1_jobs));
  CHECK(value_of("iaworker_jobs_running") == 0);
  CHECK((value_of("iaworker_downloaded_bytes_total") > 0) == (w1_jobs > 0));
  CHECK(std::max(0.0, value_of("iaworker_step_seconds_count{step=\"analysis\"}")) == static_cast<double>(w1_jobs));
  CHECK(http_get(metrics_url + "/healthz").status == 200);
  CHECK(http_get(metrics_url + "/nothing").status == 404);
}

TEST_CASE("two apps on one slide: each app's result and overlay kept apart in the slide's folder",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 2000, 1500);
  // examples/iaserve.toml and a second app: another method and context.
  {
    std::string text = read_file(source_dir() / "examples" / "iaserve.toml");
    text += "\n[[apps]]\nroute = \"/apps/tissue-od\"\napplication_id = \"iaserve-tissue-od\"\nanalysis = \"tissue\"\n"
            "[apps.context]\nmodel = \"tissue-od-v1\"\n[apps.params]\nmethod = \"otsu_od\"\n";
    s.config_file = s.dir / "two-apps.toml";
    std::ofstream(s.config_file) << text;
  }
  s.start_sim();
  s.start_server();
  s.start_worker("w1", {"--jobs", "2"});
  s.create("s0");
  const std::string od_url = s.server->listening_url() + "/apps/tissue-od";
  auto r = run({bin("dpatsim"), "invoke", "create", od_url, "--slide", "s0", "--sim", s.callback, "--quiet"}, 120s);
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  s.wait_final({"s0"}, 120s);
  // Both jobs done (the second app's result comes with its own job).
  auto done = s.wait_jobs(q::State::done, 2, 120s);
  REQUIRE(done.size() == 2);
  const fs::path folder = s.dir / "data-w1" / iaserve::iaapi::slide_key("s0");
  const std::string first = read_file(folder / kResultFile);
  const std::string second = read_file(folder / iaserve::iaapi::result_file_name("iaserve-tissue-od"));
  CHECK(first.find("\"tissue-v1\"") != std::string::npos);
  CHECK(first.find("tissue-od-v1") == std::string::npos);
  CHECK(second.find("\"tissue-od-v1\"") != std::string::npos);
  CHECK(fs::exists(folder / kOverlayFile));
  CHECK(fs::exists(folder / iaserve::iaapi::overlay_file_name("iaserve-tissue-od")));
  CHECK_FALSE(fs::exists(folder / "result.json"));
}

TEST_CASE("the status page shows the queue, the worker and the finished jobs with their pictures",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 2, 1024, 768);
  s.start_sim();
  s.start_server();
  // On one host the server and the worker share the data folder: the page
  // shows the worker's pictures from there.
  s.workers["w1"] = std::make_unique<Process>(s.worker_argv("w1", {}, {}, s.server_data));
  const std::string base = origin(s.app_url);
  const auto ids = ids_of(2);
  for (const auto& id : ids) s.create(id);
  s.wait_final(ids, 120s);
  REQUIRE(s.wait_jobs(q::State::done, 2, 60s).size() == 2);

  auto page = http_get(base + "/status");
  REQUIRE(page.status == 200);
  CHECK(page.header("content-type").rfind("text/html", 0) == 0);
  CHECK_THAT(page.header("content-security-policy"), Catch::Matchers::Contains("script-src 'self'"));
  CHECK_THAT(page.body, Catch::Matchers::Contains("<script src=\"status.js\""));
  auto js = http_get(base + "/status.js");
  REQUIRE(js.status == 200);
  CHECK(js.header("content-type").rfind("text/javascript", 0) == 0);
  CHECK_THAT(js.body, Catch::Matchers::Contains("status.json"));
  CHECK(js.body.find("innerHTML") == std::string::npos);  // outside text stays text
  CHECK(http_get(base + "/status.css").status == 200);
  auto slash = http_get(base + "/status/");  // relative links need the page at /status
  CHECK(slash.status == 301);
  CHECK(slash.header("location") == "../status");

  auto snap = http_get(base + "/status.json");
  REQUIRE(snap.status == 200);
  INFO(snap.body);
  CHECK(snap.body.find("\"token\"") == std::string::npos);
  CHECK(snap.body.find("callbackInfo") == std::string::npos);
  const json::object st = json::parse(snap.body).as_object();
  CHECK(st.at("queue").at("done") == 2);
  CHECK(st.at("queue").at("pending") == 0);
  CHECK(st.at("server").at("apps").as_array().size() >= 1);

  // The worker's lease, and the server's own (it enqueued). Leases name the
  // machine's host name (flock and pid checks need it), not --host-id.
  bool worker_seen = false, self_seen = false;
  const std::int64_t worker_pid = s.workers.at("w1")->pid();
  for (const auto& p : st.at("processes").as_array()) {
    if (p.at("pid") == worker_pid && p.at("self") == false && p.at("stale") == false) {
      worker_seen = true;
      CHECK(p.at("label") == "iaworker w1");  // its --host-id, for people
    }
    if (p.at("self") == true && p.at("pid") == st.at("server").at("pid")) self_seen = true;
  }
  CHECK(worker_seen);
  CHECK(self_seen);

  const auto& recent = st.at("recent").as_array();
  REQUIRE(recent.size() == 2);
  std::set<std::string> slides;
  for (const auto& v : recent) {
    const auto& j = v.as_object();
    slides.insert(std::string(j.at("slideId").as_string()));
    CHECK(j.at("state") == "done");
    CHECK(j.at("host") == "w1");
    CHECK(std::string(j.at("result").as_string()).rfind("Tissue ", 0) == 0);
    CHECK(j.at("seconds").as_double() > 0);
    const std::string key(j.at("slideKey").as_string());
    for (const char* name : {"thumbnail", "overlay"}) {
      INFO(name);
      REQUIRE(j.at(name).is_string());
      auto pic = http_get(base + "/" + std::string(j.at(name).as_string()));
      REQUIRE(pic.status == 200);
      const fs::path file = s.server_data / key / (name == std::string("thumbnail") ? std::string("thumbnail.jpg") : kOverlayFile);
      CHECK(pic.body == read_file(file));
      CHECK(pic.header("content-type") == (name == std::string("thumbnail") ? "image/jpeg" : "image/png"));
    }
  }
  CHECK(slides == std::set<std::string>(ids.begin(), ids.end()));

  // Only the two picture names of a plain slide key, nothing else there.
  const std::string key = iaserve::iaapi::slide_key(ids[0]);
  REQUIRE(fs::exists(s.server_data / key / kResultFile));
  REQUIRE(fs::exists(s.server_data / key / kOverlayFile));
  // A file in the slide's folder named like an overlay, of no app here.
  std::ofstream(s.server_data / key / iaserve::iaapi::overlay_file_name("not-an-app-here")) << "x";
  for (const std::string& bad :
       {key + "/" + kResultFile, key + "/metadata.json", std::string("..%2F..%2Fqueue/x.png"),
        ".hidden/" + kOverlayFile, key, "%2e%2e/" + kOverlayFile, key + "/overlay.png", key + "/overlay..png",
        key + "/overlay..hidden.png", key + "/overlay.x%2F..%2F..%2Fy.png",
        key + "/" + iaserve::iaapi::overlay_file_name("not-an-app-here")}) {
    INFO(bad);
    auto a = http_get(base + "/status/slides/" + bad);
    CHECK(a.status == 404);
    CHECK(a.body.find("\"error\"") != std::string::npos);
  }
  CHECK(http("POST", base + "/status.json", "{}", {"Content-Type: application/json"}).status == 405);
}

TEST_CASE("an exec app: the program's result on the slide, its failure as the job's error", "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 2, 1024, 768);
  // s1 makes the program fail: a wrapper that runs the example for s0 only.
  const fs::path wrapper = s.dir / "model.sh";
  std::ofstream(wrapper) << "#!/bin/sh\njob=$(cat)\ncase \"$job\" in *'/s1.svs\"'*|*'/s1\"'*) echo 'no model for s1' >&2; exit 3;; esac\n"
                         << "printf '%s' \"$job\" | exec " << (source_dir() / "examples" / "exec" / "frame.sh").string()
                         << " \"$@\"\n";
  ::chmod(wrapper.c_str(), 0755);
  s.use_exec(wrapper.string(), "--margin 20");
  s.start_sim();
  s.start_server();
  s.start_worker("w1");
  s.create("s0");
  auto r = s.wait_final({"s0"}, 120s);
  const auto& done = r.by_slide.at("s0").back();
  CHECK(display(done) == "Slide 1024 x 768 px");
  CHECK(done.at("displayProperties").at("Margin (%)") == 20);
  const auto& pts = done.at("data").at("result").at("content").at(0).at("polygons").at(0).at("points").as_array();
  CHECK(pts.at(0).at("x").to_number<double>() == Approx(204.0 / 1024.0));  // 20 % of 1024, whole px
  REQUIRE(s.wait_jobs(q::State::done, 1, 60s).size() == 1);

  s.create("s1", 1, {}, R"({"useGPU": true, "seedValue": 7})");
  auto failed = s.wait_jobs(q::State::failed, 1, 120s);
  REQUIRE(failed.size() == 1);
  INFO(failed.front().last_error);
  CHECK_THAT(failed.front().last_error, Catch::Matchers::Contains("exited with code 3; stderr: no model for s1"));
  // The pathologist sees it on the slide, and DPAT's context stays on it.
  auto on_slide = results(s.sim_root).by_slide.at("s1").back();
  CHECK_THAT(display(on_slide), Catch::Matchers::Contains("no model for s1"));
  CHECK(on_slide.at("data").at("context") == boost::json::parse(R"({"useGPU": true, "seedValue": 7})"));
}

TEST_CASE("a pressed patchCollection button reaches the exec program, whose new result replaces the gallery",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 1024, 768);
  // A gallery with one button; the job of the button's press says so.
  const fs::path program = s.dir / "gallery.sh";
  std::ofstream(program) << R"SH(#!/bin/sh
job=$(cat)
case "$job" in
  *'"action":{"id":"more","content":{'*'"state":1'*) echo '{"result": {"displayResult": "pressed more"}}' ;;
  *'"action"'*) echo 'an action, but not as expected' >&2; exit 3 ;;
  *) echo '{"result": {"displayResult": "gallery", "type": "patchCollection", "content": {"description": "d", "polygons": [], "patches": [], "tags": ["t"], "patchSize": 64, "magnification": 20, "actions": [{"id": "more", "state": 0, "name": "More"}]}}}' ;;
esac
)SH";
  ::chmod(program.c_str(), 0755);
  s.use_exec(program.string(), "");
  s.start_sim();
  s.start_server();
  Process& w = s.start_worker("w1");
  s.create("s0");
  auto r = s.wait_final({"s0"}, 120s);
  INFO(w.stderr_text().substr(0, 3000));
  REQUIRE(display(r.by_slide.at("s0").back()) == "gallery");
  REQUIRE(s.wait_jobs(q::State::done, 1, 60s).size() == 1);
  auto pressed = run({bin("dpatsim"), "invoke", "modify", s.app_url, "--slide", "s0", "--sim", s.callback, "--press",
                      "more", "--quiet"},
                     60s);
  INFO(pressed.out << pressed.err);
  REQUIRE(pressed.code == 0);
  REQUIRE(s.wait_jobs(q::State::done, 2, 120s).size() == 2);
  const auto now = results(s.sim_root).by_slide.at("s0");
  CHECK(now.size() == 1);  // the gallery replaced, not a second result beside it
  CHECK(display(now.back()) == "pressed more");
  // A button the result does not have: the simulator refuses to press it.
  auto absent = run({bin("dpatsim"), "invoke", "modify", s.app_url, "--slide", "s0", "--sim", s.callback, "--press",
                     "nope", "--quiet"},
                    60s);
  CHECK(absent.code != 0);
}

// True while pid runs (not gone, not a zombie nobody reaped yet).
bool running(pid_t pid) {
  const std::string text = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close = text.rfind(')');
  return close != std::string::npos && close + 2 < text.size() && text[close + 2] != 'Z' && text[close + 2] != 'X';
}

TEST_CASE("a worker killed with SIGKILL during an exec analysis takes the program with it, and what it started",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 1024, 768);
  const fs::path pid_file = s.dir / "program.pid";
  const fs::path started_file = s.dir / "started.pid";
  const fs::path job_file = s.dir / "program.job";
  const fs::path escaped_file = s.dir / "escaped.pid";
  // The program keeps its job, starts a two-minute sleep of its own (as a
  // wrapper script starts its model) and one that leaves the process group
  // (setsid, as a daemon does), notes the pids, then becomes a two-minute
  // sleep itself (same pid).
  s.use_exec("/bin/sh", "-c 'cat > " + job_file.string() + " && { sleep 120 & echo $! > " + started_file.string() +
                            "; } && { setsid sleep 120 & echo $! > " + escaped_file.string() + "; } && echo $$ > " +
                            pid_file.string() + ".tmp && mv " + pid_file.string() + ".tmp " + pid_file.string() +
                            " && exec sleep 120'");
  s.start_sim();
  s.start_server();
  Process& w = s.start_worker("w1");
  s.create("s0");
  const auto end = std::chrono::steady_clock::now() + 60s;
  while (!fs::exists(pid_file) && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(20ms);
  INFO(w.stderr_text().substr(0, 4000));
  REQUIRE(fs::exists(pid_file));
  pid_t program = 0, started = 0, escaped = 0;
  std::ifstream(pid_file) >> program;
  std::ifstream(started_file) >> started;
  std::ifstream(escaped_file) >> escaped;
  REQUIRE(program > 0);
  REQUIRE(started > 0);
  REQUIRE(escaped > 0);
  // All three, as sleeps now, run while the worker does.
  std::this_thread::sleep_for(300ms);
  REQUIRE(running(program));
  REQUIRE(running(started));
  REQUIRE(running(escaped));
  w.kill9();
  w.wait(10s);
  const auto gone_by = std::chrono::steady_clock::now() + 10s;
  while ((running(program) || running(started) || running(escaped)) && std::chrono::steady_clock::now() < gone_by)
    std::this_thread::sleep_for(20ms);
  CHECK_FALSE(running(program));
  CHECK_FALSE(running(started));
  CHECK_FALSE(running(escaped));
  for (pid_t p : {program, started, escaped})
    if (running(p)) ::kill(p, SIGKILL);  // a failed check leaves nothing behind
  // Its scratch folder, left behind by the kill, is in the slide's folder
  // in the worker's data folder (where retention removes it), not in /tmp.
  const auto job = boost::json::parse(read_file(job_file));
  const fs::path scratch = std::string(job.at("scratch").as_string());
  CHECK(scratch.parent_path() == s.dir / "data-w1" / iaserve::iaapi::slide_key("s0"));
  CHECK(fs::is_directory(scratch));
}

TEST_CASE("status_page = false takes the page away", "[worker][integration]") {
  Stack s;
  s.start_server({"--set", "server.status_page=false"});
  const std::string base = origin(s.app_url);
  for (const char* path : {"/status", "/status.json", "/status.js"}) {
    INFO(path);
    CHECK(http_get(base + path).status == 404);
  }
  CHECK(http_get(base + "/healthz").status == 200);
}

TEST_CASE("with 10 % failing and some hanging callbacks every job still finishes", "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 8, 1024, 768);
  s.start_sim({"--fail-rate", "0.1", "--hang-rate", "0.02", "--seed", "7"});
  const std::vector<std::string> fast{"--set", "callback.total_timeout=2s", "--set", "callback.retry_max_time=20s",
                                      "--set", "callback.retries=4"};
  s.start_server(fast);
  auto extra = fast;
  extra.insert(extra.end(), {"--set", "queue.max_attempts=6", "--jobs", "2"});
  s.start_worker("w1", extra);
  s.start_worker("w2", extra);
  const auto ids = ids_of(8);
  std::map<std::string, int> creates;
  for (const auto& id : ids) creates[id] = s.create(id, 5);
  auto r = s.wait_final(ids, 400s);
  check_each_once(s, ids, r, creates);
  // The faults really were there.
  const json::value calls_doc = get_json(s.sim_root + "/_sim/calls");
  const json::array& calls = calls_doc.as_array();
  int errors = 0;
  for (const auto& c : calls)
    if (c.as_object().at("status").to_number<int>() >= 500 || c.as_object().at("status").to_number<int>() == 0)
      ++errors;
  CHECK(errors > 0);
}

TEST_CASE("DPAT throttling (429) is transient: the job is retried, not failed at once", "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 1024, 768);
  // Every download answers 429: the client's retries, then the job's, run out.
  s.start_sim({"--fail-rate", "1", "--fail-status", "429", "--fault-routes", "^GET /slides/[^/]+/files"});
  s.start_server();
  s.start_worker("w1", {"--set", "callback.retries=1", "--set", "queue.max_attempts=3"});
  s.create("s0");
  auto failed = s.wait_jobs(q::State::failed, 1, 120s);
  REQUIRE(failed.size() == 1);
  INFO(failed.front().last_error);
  CHECK_THAT(failed.front().last_error, Catch::Matchers::Contains("429 Too Many Requests"));
  CHECK(failed.front().attempts == 3);  // a client error (400, say) fails after one run
  const json::value calls_doc = get_json(s.sim_root + "/_sim/calls");
  int throttled = 0;
  for (const auto& c : calls_doc.as_array())
    if (c.as_object().at("status").to_number<int>() == 429) ++throttled;
  CHECK(throttled >= 3);
}

TEST_CASE("a token that expires mid-job ends the job in failed/ as \"token expired\", without endless retries",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 2048, 1536);
  // Every callback takes 400 ms; the token lives 2 s: the server's frame
  // (two calls) fits, the worker's dozen calls do not.
  s.start_sim({"--token-ttl", "2", "--latency-ms", "400"});
  s.start_server();
  s.start_worker("w1");
  s.create("s0");
  auto failed = s.wait_jobs(q::State::failed, 1, 120s);
  REQUIRE(failed.size() == 1);
  CHECK(failed.front().last_error.find("token expired") != std::string::npos);
  CHECK(failed.front().attempts <= 1);
  CHECK(s.jobs(q::State::pending).empty());
  CHECK(s.jobs(q::State::active).empty());
  CHECK(s.jobs(q::State::done).empty());
  // Nothing keeps calling with the dead token.
  auto count_401 = [&] {
    int n = 0;
    const json::value calls = get_json(s.sim_root + "/_sim/calls");
    for (const auto& c : calls.as_array())
      if (c.as_object().at("status").to_number<int>() == 401) ++n;
    return n;
  };
  const int before = count_401();
  CHECK(before >= 1);
  std::this_thread::sleep_for(3s);  // a retry loop would show here
  CHECK(count_401() == before);
  CHECK(s.workers["w1"]->stderr_text().find("token expired") != std::string::npos);
}

TEST_CASE("a worker killed with SIGKILL during its download: the other worker finishes the job, one result",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 6000, 4000);
  // 300 ms per callback: the job's steps take seconds, so the kill lands mid-job.
  s.start_sim({"--latency-ms", "300"});
  s.start_server();
  Process& a = s.start_worker("a");
  s.create("s0");
  // The worker writes metadata.json after the slide info, then asks for the
  // files (their answer comes 300 ms later): kill it inside that request.
  const fs::path a_data = s.dir / "data-a";
  const auto end = std::chrono::steady_clock::now() + 60s;
  bool started = false;
  while (!started && std::chrono::steady_clock::now() < end) {
    if (fs::exists(a_data))
      for (const auto& e : fs::directory_iterator(a_data))
        if (fs::exists(e.path() / "metadata.json")) started = true;
    if (!started) std::this_thread::sleep_for(10ms);
  }
  REQUIRE(started);
  std::this_thread::sleep_for(700ms);
  REQUIRE(s.jobs(q::State::active).size() == 1);
  a.kill9();
  a.wait(10s);
  s.start_worker("b");
  auto r = s.wait_final({"s0"}, 120s);
  REQUIRE(r.by_slide.at("s0").size() == 1);
  CHECK(display(r.by_slide.at("s0").front()).rfind("Tissue ", 0) == 0);
  auto done = s.wait_jobs(q::State::done, 1, 30s);
  REQUIRE(done.size() == 1);
  CHECK(done.front().attempts == 1);  // the lost run counted once
  CHECK(fs::exists(s.dir / "data-b" / iaserve::iaapi::slide_key("s0") / kOverlayFile));
  CHECK(s.workers["b"]->stderr_text().find("done in") != std::string::npos);
}

TEST_CASE("SIGTERM hands a running job back to pending, not counted, and the worker exits 0",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 2048, 1536);
  s.start_sim({"--latency-ms", "1500"});  // the job cannot end within the grace period
  s.start_server();
  Process& w = s.start_worker("w1", {"--set", "worker.grace_period=1s"});
  s.create("s0");
  auto active = s.wait_jobs(q::State::active, 1, 60s);
  REQUIRE(active.size() == 1);
  w.signal(SIGTERM);
  auto code = w.wait(60s);
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  auto pending = s.jobs(q::State::pending);
  REQUIRE(pending.size() == 1);
  CHECK(pending.front().attempts == 0);
  CHECK(s.jobs(q::State::active).empty());
  CHECK(w.stderr_text().find("released") != std::string::npos);
}

TEST_CASE("a cancel from DPAT stops the running job: cancelled/ and \"analysis cancelled\" on the slide",
          "[worker][integration]") {
  Stack s;
  make_slides(s.slides, 1, 2048, 1536);
  s.start_sim({"--latency-ms", "1000"});
  s.start_server();
  Process& w = s.start_worker("w1");
  s.create("s0");
  REQUIRE(s.wait_jobs(q::State::active, 1, 60s).size() == 1);
  auto c = run({bin("dpatsim"), "invoke", "cancel", s.app_url, "--slide", "s0", "--sim", s.callback, "--quiet"});
  INFO(c.out << c.err);
  REQUIRE(c.code == 0);
  auto cancelled = s.wait_jobs(q::State::cancelled, 1, 120s);
  INFO(w.stderr_text());
  REQUIRE(cancelled.size() == 1);
  CHECK(s.jobs(q::State::done).empty());
  CHECK(s.jobs(q::State::active).empty());
  INFO("dpatsim: " << s.sim->stderr_text());
  if (!s.sim->running()) FAIL("dpatsim exited, code " << s.sim->wait(0ms).value_or(-1));
  auto r = s.wait_final({"s0"}, 60s);
  REQUIRE(r.by_slide.at("s0").size() == 1);
  CHECK(display(r.by_slide.at("s0").front()).find("analysis cancelled") != std::string::npos);
}

// ---------------------------------------------------------------- two hosts
namespace {

int sh(const std::string& cmd) {
  auto r = run({"/bin/sh", "-c", cmd + " 2>&1"}, 60s);
  if (r.code != 0) UNSCOPED_INFO("`" << cmd << "`: " << r.out << r.err);
  return r.code;
}

// Two network namespaces, each with a veth to the root namespace, and two
// bindfs mounts of one queue folder (lock forwarding on), all removed at the end.
struct Hosts {
  std::string tag = std::to_string(getpid() % 100000);
  std::vector<std::string> ns;
  std::vector<fs::path> mounts;
  std::string reason;  // why they could not be made
  bool ok = false;

  Hosts(const fs::path& shared, const fs::path& base) {
    if (geteuid() != 0) {
      reason = "not root";
      return;
    }
    if (!fs::exists("/dev/fuse")) {
      reason = "/dev/fuse is absent";
      return;
    }
    for (int h = 1; h <= 2; ++h) {
      const std::string n = "iasw" + tag + "h" + std::to_string(h);
      const std::string veth = "iv" + tag + "h" + std::to_string(h);
      const std::string net = "10.211." + std::to_string(h) + ".";
      if (sh("ip netns add " + n) != 0) {
        reason = "ip netns add failed";
        return;
      }
      ns.push_back(n);
      if (sh("ip link add " + veth + "a type veth peer name " + veth + "b") != 0 ||
          sh("ip link set " + veth + "b netns " + n) != 0 ||
          sh("ip addr add " + net + "1/24 dev " + veth + "a") != 0 || sh("ip link set " + veth + "a up") != 0 ||
          sh("ip netns exec " + n + " ip addr add " + net + "2/24 dev " + veth + "b") != 0 ||
          sh("ip netns exec " + n + " ip link set " + veth + "b up") != 0 ||
          sh("ip netns exec " + n + " ip link set lo up") != 0 ||
          sh("ip netns exec " + n + " ip route add default via " + net + "1") != 0) {
        reason = "veth set-up failed";
        return;
      }
      const fs::path m = base / ("mnt-h" + std::to_string(h));
      fs::create_directories(m);
      if (sh("bindfs --multithreaded --enable-lock-forwarding " + shared.string() + " " + m.string()) != 0) {
        reason = "bindfs mount failed";
        return;
      }
      mounts.push_back(m);
    }
    ok = true;
  }
  ~Hosts() {
    for (const auto& m : mounts) sh("fusermount -u " + m.string() + " || umount -l " + m.string());
    for (const auto& n : ns) sh("ip netns del " + n);  // removes the veth pair with it
  }
};

}  // namespace

TEST_CASE("two hosts (network namespaces) on one queue folder through two mounts: 30 slides, each done once",
          "[worker][integration][hosts]") {
  Stack s;
  make_slides(s.slides, 30, 768, 512);
  fs::create_directories(s.queue_dir);
  Hosts hosts(s.queue_dir, s.dir.path());
  if (!hosts.ok) {
    WARN("skipped: network namespaces or FUSE mounts cannot be made here: " << hosts.reason);
    return;
  }
  // Server and simulator in the root namespace, reachable from both hosts at 10.211.1.1.
  s.start_sim({}, "0.0.0.0:0");
  const std::string port = s.callback.substr(s.callback.rfind(':') + 1);  // "PORT/base..."
  s.callback = "http://10.211.1.1:" + port;
  s.sim_root = origin(s.callback);
  s.start_server();
  for (int h = 1; h <= 2; ++h) {
    const std::string name = "h" + std::to_string(h);
    auto argv = s.worker_argv(name, {"--jobs", "2"}, hosts.mounts[static_cast<std::size_t>(h - 1)].string());
    argv.insert(argv.begin(), {"/usr/sbin/ip", "netns", "exec", hosts.ns[static_cast<std::size_t>(h - 1)]});
    s.workers[name] = std::make_unique<Process>(argv);
  }
  const auto ids = ids_of(30);
  for (const auto& id : ids) s.create(id);
  auto r = s.wait_final(ids, 400s);
  check_each_once(s, ids, r);
  // Both hosts took jobs, through their own mount and network.
  for (const char* h : {"h1", "h2"}) {
    INFO("host " << h);
    std::size_t n = 0;
    if (fs::exists(s.dir / (std::string("data-") + h)))
      for (const auto& e : fs::directory_iterator(s.dir / (std::string("data-") + h)))
        n += fs::exists(e.path() / kOverlayFile) ? 1 : 0;
    CHECK(n > 0);
  }
  // Stop the workers before the mounts go.
  s.workers.clear();
}
