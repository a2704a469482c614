// dpatsim serve: the simulated DPAT for a folder of slides.
#include <iostream>

#include "tools/dpatsim/command.hpp"
#include "tools/dpatsim/sim.hpp"

namespace iaserve::dpatsim {
namespace {

struct ServeOptions {
  SimOptions sim;
  double token_ttl = 0;
  std::uint64_t seed = 0;
  std::string tls_cert, tls_key;
};

Registration serve_command{
    "serve",
    "Serve the IA-API callback API for every slide in a folder (prints 'listening on URL', URL = callbackInfo.url)",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<ServeOptions>();
      sub.add_option("--slides", o->sim.slides,
                     "Folder of slides: each slide file, or each sub-folder holding a multi-file slide, is one "
                     "slide; its id is the file name without extension (folder name), characters outside "
                     "[A-Za-z0-9._-] replaced by '_' (GET /_sim/slides lists them)")
          ->required();
      sub.add_option("--listen", o->sim.listen, "HOST:PORT to listen on; port 0 picks a free one")
          ->capture_default_str();
      sub.add_option("--base", o->sim.base, "Path of the callback API")->capture_default_str();
      sub.add_option("--token", o->sim.fixed_token, "A bearer token always accepted (besides minted ones)");
      sub.add_option("--token-ttl", o->token_ttl, "Seconds a minted token lives (default: forever)")
          ->check(CLI::PositiveNumber);
      sub.add_option("--latency-ms", o->sim.latency_ms, "Delay every answer of the callback API (a timer)");
      sub.add_option("--fail-rate", o->sim.fail_rate, "Share of calls answered with a --fail-status")
          ->check(CLI::Range(0.0, 1.0));
      sub.add_option("--fail-status", o->sim.fail_statuses, "Statuses the failing calls get, one at random (429 throttles)")
          ->check(CLI::Range(400u, 599u))
          ->capture_default_str();
      sub.add_option("--hang-rate", o->sim.hang_rate, "Share of calls never answered (until the client gives up)")
          ->check(CLI::Range(0.0, 1.0));
      sub.add_option("--fault-routes", o->sim.fault_routes,
                     "Faults and latency only for calls matching this regex, searched in 'METHOD /path' (path "
                     "under the base), e.g. 'PUT /applications/'");
      sub.add_option("--state", o->sim.state_file, "JSON file keeping the stored results across restarts");
      sub.add_option("--seed", o->seed, "Seed of the fault dice (default: random)");
      sub.add_option("--tile-size", o->sim.tile_size, "DZI tile size")->capture_default_str()->check(CLI::Range(16, 4096));
      sub.add_option("--io-threads", o->sim.io_threads, "HTTP threads")->capture_default_str()->check(CLI::Range(1, 64));
      sub.add_option("--tile-threads", o->sim.tile_threads, "Threads rendering tiles (0: one per core)");
      sub.add_option("--jpeg-quality", o->sim.jpeg_quality, "Tile JPEG quality")->capture_default_str()->check(CLI::Range(1, 100));
      sub.add_option("--tls-cert", o->tls_cert, "PEM certificate: serve HTTPS (with --tls-key)");
      sub.add_option("--tls-key", o->tls_key, "PEM private key");
      return [o, &sub]() -> int {
        if (sub.count("--token-ttl")) o->sim.token_ttl = o->token_ttl;
        if (sub.count("--seed")) o->sim.seed = o->seed;
        if (!o->tls_cert.empty()) o->sim.tls_cert = o->tls_cert;
        if (!o->tls_key.empty()) o->sim.tls_key = o->tls_key;
        Simulator sim(o->sim);
        sim.start();
        std::cout << "listening on " << sim.callback_url() << std::endl;
        sim.run_until_signal();
        return kExitOk;
      };
    }};

}  // namespace
}  // namespace iaserve::dpatsim
