// iaworker run: watches the queue and runs jobs until SIGTERM/SIGINT.
// Exit codes: 0 stopped by a signal (running jobs finished or handed back),
// 1 the queue or the metrics port could not be opened, 2 bad command line or
// configuration. With worker.metrics_listen set, the first stdout line is
// "listening on http://HOST:PORT" (port 0 picks a free one).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <iostream>
#include <optional>
#include <set>
#include <thread>

#include "iaapi/log.hpp"
#include "server/config.hpp"
#include "worker/analysis/analysis.hpp"
#include "server/http/server.hpp"
#include "tools/command.hpp"
#include "worker/worker.hpp"

namespace iaserve::tools {
namespace {

struct RunOptions {
  std::string config;
  std::string queue_dir, data_dir, host_id;
  std::optional<unsigned> jobs;
  std::vector<std::string> set;
  bool check = false;
};

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "localhost";
  return buf;
}

queue::Wakeup wakeup_of(server::Wakeup w) {
  switch (w) {
    case server::Wakeup::inotify: return queue::Wakeup::inotify;
    case server::Wakeup::poll: return queue::Wakeup::poll;
    case server::Wakeup::auto_: break;
  }
  return queue::Wakeup::automatic;
}

}  // namespace

// The worker's settings from the shared configuration (also used by `process`).
worker::WorkerOptions worker_options(const server::Config& c) {
  worker::WorkerOptions o;
  o.queue_dir = c.queue.dir;
  o.queue.lease_timeout = c.queue.lease_timeout;
  o.queue.lease_interval = std::max(std::chrono::milliseconds(500), c.queue.lease_timeout / 10);
  o.queue.max_attempts = static_cast<int>(c.queue.max_attempts);
  o.queue.wakeup = wakeup_of(c.queue.wakeup);
  o.queue.poll_interval = c.worker.poll_interval;
  o.queue.lease_only = c.queue.lease_only;
  o.queue.sync_finish = c.queue.sync_finish;
  // Orphans (a worker killed on some host) are looked for twice per lease timeout.
  o.queue.recover_interval = std::max(std::chrono::milliseconds(1000), c.queue.lease_timeout / 2);
  o.jobs = c.worker.jobs;
  o.grace_period = c.worker.grace_period;
  o.retention = std::chrono::duration_cast<std::chrono::seconds>(c.data.retention);
  auto& j = o.job;
  j.data_dir = c.data.dir;
  j.client.connect_timeout = c.callback.connect_timeout;
  j.client.total_timeout = c.callback.total_timeout;
  j.client.max_attempts = static_cast<int>(c.callback.retries) + 1;
  j.client.max_retry_time = c.callback.retry_max_time;
  j.client.ca_file = c.callback.ca_file.string();
  j.client.verify_tls = c.callback.verify_tls;
  // A download with no byte for a whole call's time is dead (a hung DPAT).
  j.client.low_speed_time =
      std::max(std::chrono::seconds(1), std::chrono::duration_cast<std::chrono::seconds>(c.callback.total_timeout));
  j.analysis_time_limit = c.worker.analysis_time_limit;
  j.host_id = c.worker.host_id.empty() ? host_name() : c.worker.host_id;
  o.queue.label = "iaworker " + j.host_id;
  for (const auto& app : c.apps) j.apps[app.application_id] = {app.analysis, app.params};
  // Jobs of apps this worker's configuration lacks wait for a worker that
  // has them (hosts mid-rollout), rather than failing here.
  std::set<std::string> known;
  for (const auto& app : c.apps) known.insert(app.application_id);
  o.queue.accept_app = [known = std::move(known)](const std::string& app_id) { return known.count(app_id) > 0; };
  return o;
}

namespace {

int run(const RunOptions& ro) {
  std::vector<std::string> overrides = ro.set;
  if (!ro.queue_dir.empty()) overrides.push_back(server::string_override("queue.dir", ro.queue_dir));
  if (!ro.data_dir.empty()) overrides.push_back(server::string_override("data.dir", ro.data_dir));
  if (!ro.host_id.empty()) overrides.push_back(server::string_override("worker.host_id", ro.host_id));
  if (ro.jobs) overrides.push_back("worker.jobs=" + std::to_string(*ro.jobs));
  server::Config config;
  try {
    config = server::load_config(ro.config, overrides);
  } catch (const std::exception& e) {
    std::cerr << "iaworker run: " << e.what() << "\n";
    return 2;
  }
  // An app whose analysis or parameters are wrong would fail every job it
  // gets: refuse to start instead, naming the key.
  for (std::size_t i = 0; i < config.apps.size(); ++i) {
    const auto& app = config.apps[i];
    if (auto error = analysis::app_config_error(i, app.analysis, app.params, analysis::Checks::this_host,
                                                    app.analysis_key)) {
      std::cerr << "iaworker run: " << *error << "\n";
      return 2;
    }
    // Its programs run under the guard: without it every job would fail.
    if (app.analysis == "exec" && !analysis::exec::guard_path()) {
      std::cerr << "iaworker run: apps[" << i << "]." << app.analysis_key << ": exec runs its programs under iaexec-guard, which is "
                << "not beside this program (it is installed with iaworker)\n";
      return 2;
    }
  }
  log::setup(config.log.level, config.log.json);
  auto log = log::get("worker");
  worker::WorkerOptions options = worker_options(config);

  if (ro.check) {
    auto st = queue::Queue::selftest(options.queue_dir);
    std::cout << "queue " << options.queue_dir.string() << ": " << st.message << "\n";
    return st.flock_excludes && st.writable ? 0 : 1;
  }

  // Signals are taken by one thread with sigwait; every other thread blocks them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  std::unique_ptr<worker::Worker> w;
  try {
    w = std::make_unique<worker::Worker>(options);
  } catch (const std::exception& e) {
    log->error("{}", e.what());
    std::cerr << "iaworker run: " << e.what() << "\n";
    return 1;
  }

  std::unique_ptr<http::Server> metrics;
  if (!config.worker.metrics_listen.empty()) {
    try {
      http::Options ho;
      ho.listen = config.worker.metrics_listen;
      metrics = std::make_unique<http::Server>(ho, [&w](http::Request&& req, http::Responder respond) {
        if (req.path == "/metrics")
          respond(http::Response::text(200, "text/plain; version=0.0.4", w->metrics().prometheus()));
        else if (req.path == "/healthz")
          respond(http::Response::text(200, "text/plain", "ok\n"));
        else
          respond(http::Response::json(404, "{\"error\":\"not found\"}"));
      });
      metrics->start();
      // As every server of the project: the first stdout line says where.
      std::cout << "listening on " << metrics->base_url() << std::endl;
      log->info("metrics on {}/metrics", metrics->base_url());
    } catch (const std::exception& e) {
      std::cerr << "iaworker run: metrics: " << e.what() << "\n";
      return 1;
    }
  }

  std::atomic<bool> done{false};
  std::thread signal_thread([&] {
    int count = 0;
    while (!done) {
      timespec wait{0, 200'000'000};
      int sig = sigtimedwait(&signals, nullptr, &wait);
      if (sig <= 0) continue;
      ++count;
      log->info("{}: {}", sig == SIGINT ? "SIGINT" : "SIGTERM",
                count == 1 ? "no new jobs; running ones get the grace period"
                           : "handing running jobs back now");
      w->stop();
    }
  });
  w->run();
  done = true;
  signal_thread.join();
  if (metrics) metrics->stop(std::chrono::milliseconds(500));
  return 0;
}

const Registration registration{
    "run", "Watch the queue and run analysis jobs until SIGTERM/SIGINT", [](CLI::App& sub) {
      auto o = std::make_shared<RunOptions>();
      sub.add_option("--config", o->config, "The configuration file (iaserve.toml)")->required();
      sub.add_option("--queue-dir", o->queue_dir, "Queue folder (overrides queue.dir)");
      sub.add_option("--data-dir", o->data_dir, "Slide data folder (overrides data.dir)");
      sub.add_option("--jobs", o->jobs, "Jobs run at once (overrides worker.jobs)")
          ->check(CLI::Range(1u, 256u));
      sub.add_option("--host-id", o->host_id, "Name of this worker in logs (overrides worker.host_id)");
      sub.add_option("--set", o->set, "Any configuration key: --set worker.grace_period=10s");
      sub.add_flag("--check", o->check,
                   "Run the queue folder's self-test (flock shared, writable) and exit: 0 when it passes");
      sub.footer(
          "SIGTERM/SIGINT: stop taking jobs; running jobs finish within worker.grace_period or go "
          "back to pending (not counted as an attempt); a second signal hands them back at once.\n"
          "Exit codes: 0 stopped, 1 queue or metrics port unusable, 2 bad command line or configuration.");
      return [o] { return run(*o); };
    }};

}  // namespace
}  // namespace iaserve::tools
