#include "tests/integration/server/harness.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

namespace iaserve::test {

namespace json = boost::json;

namespace {


// Values of `key` anywhere in a JSON document.
void collect(const json::value& v, const std::string& key, std::vector<const json::value*>& out) {
  if (v.is_object()) {
    for (const auto& [k, e] : v.get_object()) {
      if (k == key) out.push_back(&e);
      collect(e, key, out);
    }
  } else if (v.is_array()) {
    for (const auto& e : v.get_array()) collect(e, key, out);
  }
}

void walk_results(const json::value& v, const std::string& app_id, const std::string& slide_id,
                  const std::string& current_app, std::vector<json::object>& out) {
  if (v.is_object()) {
    const auto& o = v.get_object();
    std::string app = current_app;
    if (auto a = o.if_contains("applicationId"); a && a->is_string()) app = std::string(a->get_string());
    auto s = o.if_contains("slideId");
    if (s && s->is_string() && s->get_string() == slide_id && o.contains("id") && app == app_id) {
      out.push_back(o);
      return;
    }
    for (const auto& [k, e] : o) walk_results(e, app_id, slide_id, app, out);
  } else if (v.is_array()) {
    for (const auto& e : v.get_array()) walk_results(e, app_id, slide_id, current_app, out);
  }
}

}  // namespace

Sim::Sim(int slides, int latency_ms, std::vector<std::string> extra_args) {
  fs::path folder = dir_ / "slides";
  fs::create_directories(folder);
  fs::path master = dir_ / "master.svs";
  auto made = run({bin("mkslide"), master.string(), "--width", "1024", "--height", "768", "--seed", "7"});
  REQUIRE(made.code == 0);
  for (int i = 0; i < slides; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "s%03d", i);
    fs::create_symlink(master, folder / (std::string(name) + ".svs"));
    ids_.emplace_back(name);
  }
  std::vector<std::string> argv{bin("dpatsim"), "serve", "--slides", folder.string(), "--listen", "127.0.0.1:0",
                                "--token", kToken};
  if (latency_ms > 0) {
    argv.push_back("--latency-ms");
    argv.push_back(std::to_string(latency_ms));
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  proc_ = std::make_unique<Process>(argv, std::map<std::string, std::string>{{"IASERVE_LOG", "warn"}});
  url_ = proc_->listening_url();
  auto scheme_end = url_.find("://");
  auto path_start = url_.find('/', scheme_end + 3);
  root_ = path_start == std::string::npos ? url_ : url_.substr(0, path_start);
}

std::vector<json::object> Sim::results(const std::string& app_id, const std::string& slide_id) const {
  auto a = http_get(root_ + "/_sim/results");
  REQUIRE(a.status == 200);
  std::vector<json::object> out;
  walk_results(json::parse(a.body), app_id, slide_id, "", out);
  return out;
}

Serve::Serve(const std::string& config_text, std::vector<std::string> extra_args) {
  queue_ = dir_ / "queue";
  std::string text = config_text;
  if (text.find("[queue]") == std::string::npos)
    text = "[queue]\ndir = \"" + queue_.string() + "\"\n" + text;
  if (text.find("[data]") == std::string::npos) text = "[data]\ndir = \"" + (dir_ / "data").string() + "\"\n" + text;
  fs::path cfg = dir_ / "iaserve.toml";
  std::ofstream(cfg) << text;
  std::vector<std::string> argv{bin("iaserve"), "--config", cfg.string()};
  for (auto& a : extra_args) argv.push_back(a);
  proc_ = std::make_unique<Process>(argv);
  url_ = proc_->listening_url();
}

std::string two_app_config(const std::string& server_extra) {
  return "[server]\nlisten = \"127.0.0.1:0\"\nio_threads = 2\nread_timeout = \"2s\"\n" + server_extra +
         R"(
[callback]
retries = 0
total_timeout = "10s"

[[apps]]
route = "/apps/tissue"
application_id = "tissue"
display_name = "Tissue detection"
manufacturer = "iaserve tests"
[apps.input_template]
type = "taggedPolygon"
tags = ["tumour", "stroma"]
[apps.context]
model = "v1"
[apps.notifications]
enabled = true

[[apps]]
route = "/apps/other"
application_id = "other"
[apps.notifications]
staining = ["PAS"]
)";
}

json::object invocation(const std::string& action, const std::string& app_id, const std::string& slide_id,
                        const std::string& callback_url) {
  json::object o{{"action", action},
                 {"applicationId", app_id},
                 {"slideId", slide_id},
                 {"callbackInfo", {{"url", callback_url}, {"token", kToken}}},
                 {"context", {{"useGPU", false}}}};
  if (action == "create") o["input"] = json::object{{"type", "wholeSlide"}};
  return o;
}

std::string body(const json::value& v) { return json::serialize(v); }

std::vector<json::object> jobs_in(const fs::path& queue_dir, const std::string& state) {
  std::vector<json::object> out;
  if (!fs::is_directory(queue_dir / state)) return out;
  for (const auto& e : fs::directory_iterator(queue_dir / state)) {
    if (e.path().extension() != ".json") continue;
    json::parse_options deep;
    deep.max_depth = 128;  // as deep as any job the queue takes, and then some
    json::value v = json::parse(read_file(e.path()), {}, deep);
    std::vector<const json::value*> payloads;
    collect(v, "payload", payloads);
    REQUIRE(payloads.size() == 1);
    out.push_back(payloads.front()->as_object());
  }
  return out;
}

std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (!e.is_directory()) out.push_back(e.path());
  return out;
}

}  // namespace iaserve::test
