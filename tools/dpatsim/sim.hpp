#pragma once
// The simulated DPAT: the callback API of IA-API.md over the HTTP core, for
// the slides of one folder, with bearer tokens, a result store and fault
// injection. Routes under `base` are the callback API (bearer token
// required); routes under /_sim/ are the simulator's own (no token):
//   GET  /_sim/slides            ids, files, sizes, accession numbers
//   GET  /_sim/results[?slide=]  every stored result with its applicationId
//   GET  /_sim/calls             the call log of the callback API (no tokens)
//   DELETE /_sim/calls           clears it
//   POST /_sim/token[?ttl=S]     mints a bearer token {"token", "expiresInSeconds"}
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace iaserve::dpatsim {

struct SimOptions {
  std::filesystem::path slides;
  std::string listen = "127.0.0.1:0";
  std::string base = "/SectraPathologyServer/external/imageanalysis/v1";
  std::string fixed_token;                  // --token: always accepted
  std::optional<double> token_ttl;          // seconds; minted tokens expire
  unsigned latency_ms = 0;
  double fail_rate = 0;                     // 0..1: answer one of fail_statuses
  std::vector<unsigned> fail_statuses{500, 503};
  double hang_rate = 0;                     // 0..1: never answer
  std::string fault_routes;                 // ECMAScript regex on "METHOD /path-under-base"; empty = all
  std::filesystem::path state_file;         // results persisted here
  std::optional<std::uint64_t> seed;        // fault dice
  std::int64_t tile_size = 256;
  unsigned io_threads = 2;
  unsigned tile_threads = 0;                // 0: hardware concurrency
  std::size_t tile_cache_bytes = 64u << 20;
  int jpeg_quality = 85;
  std::optional<std::filesystem::path> tls_cert, tls_key;
};

class Simulator {
 public:
  // Scans the slides and binds; throws std::runtime_error naming the problem.
  explicit Simulator(SimOptions options);
  ~Simulator();
  Simulator(const Simulator&) = delete;
  Simulator& operator=(const Simulator&) = delete;

  // "http://127.0.0.1:PORT" + base: the callbackInfo.url DPAT would send.
  std::string callback_url() const;
  void start();
  void run_until_signal();
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace iaserve::dpatsim
