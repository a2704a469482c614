// iaworker process PATH: one job in the foreground, for app authors debugging
// an analysis against dpatsim (or a real DPAT test system).
// PATH is a job file (a queue entry with its "payload", or a payload, or an
// invocation as DPAT posts it), or a slide folder holding such a file as
// request.json: the WSI then lands in that folder.
// Exit codes: 0 done, 1 failed, 2 bad command line or job file, 3 cancelled
// or interrupted, 4 transient failure (worth another try).
#include <signal.h>
#include <unistd.h>

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>

#include "iaapi/decode.hpp"
#include "iaapi/log.hpp"
#include "iaapi/messages.hpp"
#include "server/config.hpp"
#include "server/job_payload.hpp"
#include "tools/command.hpp"
#include "worker/job.hpp"
#include "worker/worker.hpp"

namespace iaserve::tools {

worker::WorkerOptions worker_options(const server::Config& c);  // run.cpp

namespace {
namespace fs = std::filesystem;
namespace json = boost::json;

struct ProcessOptions {
  std::string path, config, data_dir, analysis = "tissue";
  std::vector<std::string> params;
};

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) { g_interrupted.store(true); }

json::object read_json_object(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::invalid_argument(p.string() + ": cannot be read");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (16u << 20)) throw std::invalid_argument(p.string() + ": larger than 16 MiB");
  json::error_code ec;
  json::value v = json::parse(ss.str(), ec);
  if (ec) throw std::invalid_argument(p.string() + ": not JSON: " + ec.message());
  if (!v.is_object()) throw std::invalid_argument(p.string() + ": not a JSON object");
  return v.as_object();
}

// Any of the three accepted forms to a queue payload.
json::object payload_of(const json::object& doc, const fs::path& source) {
  if (auto* p = doc.if_contains("payload"); p && p->is_object()) return p->as_object();
  if (doc.contains("invocation") || doc.contains("notification")) return doc;
  if (doc.contains("action") || doc.contains("callbackInfo")) {
    auto inv = iaapi::decode<iaapi::Invocation>(json::value(doc));
    if (!inv) throw std::invalid_argument(source.string() + ": " + inv.error.what());
    server::JobPayload p;
    p.kind = server::JobKind::create;
    p.application_id = inv->application_id;
    p.slide_id = inv->slide_id;
    p.received_at = server::utc_now_iso();
    p.invocation = std::move(*inv.value);
    return server::to_json(p);
  }
  throw std::invalid_argument(source.string() +
                              ": neither a queue job, a job payload nor an invocation");
}

class ProgressBar {
 public:
  explicit ProgressBar(bool tty) : tty_(tty) {}
  void update(std::string_view step, double fraction, std::string_view text) {
    if (!tty_) {
      if (step != last_step_) std::fprintf(stderr, "%.*s\n", static_cast<int>(text.size()), text.data());
      last_step_ = std::string(step);
      return;
    }
    constexpr int width = 30;
    const int filled = fraction < 0 ? 0 : static_cast<int>(std::lround(fraction * width));
    std::string bar(static_cast<std::size_t>(filled), '#');
    bar.resize(width, fraction < 0 ? '?' : '.');
    std::fprintf(stderr, "\r\033[K[%s] %-10.*s %.*s", bar.c_str(), static_cast<int>(step.size()), step.data(),
                 static_cast<int>(text.size()), text.data());
    std::fflush(stderr);
    last_step_ = std::string(step);
  }
  void end() {
    if (tty_) std::fprintf(stderr, "\n");
  }

 private:
  bool tty_;
  std::string last_step_;
};

int process(const ProcessOptions& po) {
  worker::JobSettings settings;
  worker::WorkerOptions wo;
  if (!po.config.empty()) {
    try {
      wo = worker_options(server::load_config(po.config));
    } catch (const std::exception& e) {
      std::cerr << "iaworker process: " << e.what() << "\n";
      return 2;
    }
  }
  log::setup();
  settings = wo.job;
  settings.unknown_app_uses_default = true;
  settings.default_app.analysis = po.analysis;
  for (const auto& kv : po.params) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "iaworker process: --param " << kv << ": expected NAME=VALUE\n";
      return 2;
    }
    json::error_code ec;
    json::value v = json::parse(kv.substr(eq + 1), ec);
    settings.default_app.params[kv.substr(0, eq)] = ec ? json::value(kv.substr(eq + 1)) : v;
  }
  if (po.config.empty() || !po.params.empty()) settings.apps.clear();  // --analysis/--param win

  worker::JobRequest request;
  try {
    fs::path path = po.path;
    fs::path file = path;
    std::string key;
    if (fs::is_directory(path)) {
      file = path / "request.json";
      path = fs::absolute(path).lexically_normal();
      if (path.filename().empty()) path = path.parent_path();
      settings.data_dir = path.parent_path();
      key = path.filename().string();
    }
    json::object doc = read_json_object(file);
    request = worker::request_from_payload(payload_of(doc, file));
    if (auto* id = doc.if_contains("id"); id && id->is_string()) request.job_id = std::string(id->as_string());
    if (request.job_id.empty()) request.job_id = "local";
    request.expect_frame = false;  // no server put a frame there
    if (!key.empty()) request.slide_key = key;
    if (!po.data_dir.empty()) settings.data_dir = po.data_dir;
    if (settings.data_dir.empty()) settings.data_dir = fs::current_path();
  } catch (const std::exception& e) {
    std::cerr << "iaworker process: " << e.what() << "\n";
    return 2;
  }

  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  ProgressBar bar(isatty(STDERR_FILENO) == 1);
  worker::JobControl control;
  control.cancel_requested = [] { return g_interrupted.load(); };
  control.stop_requested = [] { return false; };
  control.on_progress = [&bar](std::string_view step, double f, std::string_view text) { bar.update(step, f, text); };
  settings.cancel_poll = std::chrono::milliseconds(200);
  worker::JobReport report = worker::run_job(settings, request, control);
  bar.end();
  const fs::path folder = worker::slide_folder(settings.data_dir, request.slide_key);
  switch (report.status) {
    case worker::JobStatus::done:
      std::cout << "done in " << report.seconds << " s: "
                << report.summary.at("displayResult").as_string().c_str() << "\n"
                << "result:  " << (folder / iaapi::result_file_name(request.app_id)).string() << "\n"
                << "overlay: " << (folder / iaapi::overlay_file_name(request.app_id)).string() << "\n";
      return 0;
    case worker::JobStatus::failed:
      std::cout << "failed: " << report.reason << "\n";
      return 1;
    case worker::JobStatus::retry:
      std::cout << "failed (transient): " << report.reason << "\n";
      return 4;
    case worker::JobStatus::cancelled:
    case worker::JobStatus::released:
      std::cout << "cancelled\n";
      return 3;
  }
  return 1;
}

const Registration registration{
    "process", "Run one job in the foreground (a job file, or a slide folder with request.json)",
    [](CLI::App& sub) {
      auto o = std::make_shared<ProcessOptions>();
      sub.add_option("path", o->path, "Job file or slide folder")->required();
      sub.add_option("--config", o->config, "The configuration file (apps, callback timeouts)");
      sub.add_option("--data-dir", o->data_dir, "Where the slide folder goes (default: data.dir, else .)");
      sub.add_option("--analysis", o->analysis, "Analysis to run when no configured app matches")
          ->capture_default_str();
      sub.add_option("--param", o->params, "Analysis parameter NAME=VALUE (repeatable)");
      sub.footer("Exit codes: 0 done, 1 failed, 2 bad command line or job file, 3 cancelled, "
                 "4 transient failure.");
      return [o] { return process(*o); };
    }};

}  // namespace
}  // namespace iaserve::tools
