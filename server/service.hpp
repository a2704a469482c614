#pragma once
// The IA-API inbound routes of every configured app, plus /, /healthz,
// /readyz and /metrics, as one http::Handler.
//
// Nothing blocking runs on the io threads: queue writes (fsync) run on a
// bounded pool (server.callback_pool_threads); the callbacks of create and
// modify run on the callback engine (one thread for http://, one for
// https://) over at most server.callback_connections connections each,
// holding no thread while DPAT answers. At most
// callback_pool_threads + max_pending_callbacks creates and modifies wait
// for either; past that 503. Every answer is JSON
// with X-Sectra-ApiVersion and X-Sectra-SoftwareVersion; errors are
// {"error": ..., "field": ...} (field only when one is to blame).
#include <memory>
#include <string>

#include "server/config.hpp"
#include "server/http/server.hpp"

namespace iaserve::server {

class Service {
 public:
  // Opens the queue folder (config.queue.dir). When that fails the service
  // still starts: /readyz and the routes that enqueue answer 503 with the
  // reason, and opening is retried (at most once a second).
  explicit Service(Config config);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // The HTTP options from the config, with this service's error bodies,
  // default headers, metrics and request log.
  http::Options http_options() const;
  // The handler to give http::Server.
  http::Handler handler();

  // Waits for the callback pool to drain (after the server stopped).
  void stop();

  const Config& config() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace iaserve::server
