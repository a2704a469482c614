// iaserve: the HTTP server DPAT calls (the IA-API routes of the configured apps).
// Exit codes: 0 stopped by SIGTERM/SIGINT (or --check-config passed),
// 1 could not start (address in use, TLS files), 2 bad command line or configuration.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "iaapi/log.hpp"
#include "iaapi/version.hpp"
#include "server/config.hpp"
#include "server/http/server.hpp"
#include "server/service.hpp"
#include "worker/analysis/spec/spec.hpp"

int main(int argc, char** argv) {
  using namespace iaserve;
  CLI::App app{"iaserve: serves image-analysis apps to Sectra DPAT over the IA-API"};
  app.set_version_flag("--version", std::string("iaserve ") + kSoftwareVersion + " (IA-API " + kApiVersion + ")");
  std::string config_path, listen, queue_dir, data_dir, log_level;
  std::vector<std::string> sets;
  bool check = false;
  app.add_option("--config,-c", config_path, "the TOML configuration file")->required();
  app.add_option("--listen", listen, "HOST:PORT to listen on (server.listen); port 0 picks a free one");
  app.add_option("--queue-dir", queue_dir, "the queue folder (queue.dir)");
  app.add_option("--data-dir", data_dir, "the data folder (data.dir)");
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error, critical, off (log.level)");
  app.add_option("--set", sets, "any key: --set server.io_threads=4 (repeatable)");
  app.add_flag("--check-config", check, "check the configuration, print the effective one, exit");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  std::vector<std::string> overrides = sets;
  if (!listen.empty()) overrides.push_back(server::string_override("server.listen", listen));
  if (!queue_dir.empty()) overrides.push_back(server::string_override("queue.dir", queue_dir));
  if (!data_dir.empty()) overrides.push_back(server::string_override("data.dir", data_dir));
  if (!log_level.empty()) overrides.push_back(server::string_override("log.level", log_level));

  server::Config config;
  try {
    config = server::load_config(config_path, overrides);
  } catch (const server::ConfigError& e) {
    std::cerr << "iaserve: configuration " << config_path << ": " << e.what() << "\n";
    return 2;
  }
  // An app whose analysis or parameters are wrong would queue jobs every
  // worker fails: refused here too, naming the key. Only what holds on any
  // host: an exec app's program need not exist where iaserve runs.
  // --check-config prints the effective configuration: each app's
  // parameters with the defaults of those it leaves out (what its workers
  // will use).
  server::Config effective = config;
  for (std::size_t i = 0; i < config.apps.size(); ++i) {
    const auto& a = config.apps[i];
    try {
      effective.apps[i].params = analysis::app_params(i, a.analysis, a.params, analysis::Checks::any_host, a.analysis_key).to_json();
    } catch (const std::invalid_argument& e) {
      std::cerr << "iaserve: configuration " << config_path << ": " << e.what() << "\n";
      return 2;
    }
  }
  if (check) {
    std::cout << server::describe(effective) << std::flush;
    return 0;
  }

  // SIGTERM/SIGINT stay pending until main() waits for them: blocked here,
  // before any thread exists, so every thread inherits the mask and a signal
  // that comes early (even before the server runs) is never lost.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  log::setup(config.log.level, config.log.json);
  auto log = log::get("server");
  try {
    server::Service service(config);
    http::Server http_server(service.http_options(), service.handler());
    std::cout << "listening on " << http_server.base_url() << std::endl;
    std::string routes;
    for (const auto& a : config.apps) routes += (routes.empty() ? "" : ", ") + a.route + " (" + a.application_id + ")";
    log->info("iaserve {} listening on {}; apps: {}; queue {}", kSoftwareVersion, http_server.base_url(), routes,
              config.queue.dir.string());
    log->debug("effective configuration:\n{}", server::describe(config));
    http_server.start();
    int sig = 0;
    while (sigwait(&stop_signals, &sig) != 0) {
    }
    log->info("signal {}: stopping (requests in flight get up to 10 s)", sig);
    http_server.stop(std::chrono::seconds(10));
    service.stop();
    log->info("stopped");
  } catch (const std::exception& e) {
    std::cerr << "iaserve: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
