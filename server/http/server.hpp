#pragma once
// The HTTP core shared by iaserve and dpatsim: the only place that compiles
// Beast and Asio (server.cpp). Callers see plain structs and callbacks.
//
// One session per connection, reads bounded by a timeout and a body limit,
// one request at a time per connection (no pipelined backlog), keep-alive.
// A handler answers through a Responder, now or later and from any thread
// (e.g. after callbacks on a worker pool); a Responder dropped without an
// answer answers 500. Errors the core detects itself (malformed HTTP, body
// over the limit, header timeout) are answered through Options::on_error so
// the caller decides their body and headers.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace iaserve::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent: path and query, e.g. "/apps/tissue?x=1"
  std::string path;    // target before '?', percent-decoding NOT applied
  std::string query;   // after '?', without it; empty when none
  Headers headers;     // as received
  std::string body;
  std::string remote;  // "127.0.0.1:53412", "[::1]:53412"
  std::string local;   // the address and port it reached: "10.0.0.5:8080", "[::1]:8080"
  bool tls = false;
  bool keep_alive = true;

  // First header of that name (case-insensitive), empty when absent.
  std::string_view header(std::string_view name) const;
  // Value of one query parameter (percent-decoded), nullopt when absent.
  std::optional<std::string> query_param(std::string_view name) const;
};

// A slice of a file sent as part of a body without reading it into memory.
struct FileRange {
  std::filesystem::path path;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};
using Segment = std::variant<std::string, FileRange>;

struct Response {
  unsigned status = 200;
  Headers headers;                // Content-Length is set by the core
  std::vector<Segment> body;      // sent in order; empty = no body

  static Response text(unsigned status, std::string content_type, std::string body);
  static Response json(unsigned status, std::string body) {
    return text(status, "application/json", std::move(body));
  }
  Response& header(std::string name, std::string value) {
    headers.emplace_back(std::move(name), std::move(value));
    return *this;
  }
  std::uint64_t body_size() const;
};

// Answers one request, exactly once (later calls are ignored). Copyable,
// callable from any thread.
class Responder {
 public:
  struct State;
  explicit Responder(std::shared_ptr<State> state) : state_(std::move(state)) {}
  void operator()(Response response) const;
  // True once the client has gone (a long handler may stop early).
  bool client_gone() const;

 private:
  std::shared_ptr<State> state_;
};

using Handler = std::function<void(Request&& request, Responder respond)>;

// What the core tells its owner after each answered request (for logs and metrics).
struct Completed {
  std::string method, path, remote;
  unsigned status = 0;
  std::uint64_t bytes_out = 0;
  std::chrono::microseconds elapsed{0};
};

struct Options {
  std::string listen = "127.0.0.1:0";        // HOST:PORT; port 0 picks a free one
  unsigned io_threads = 1;
  std::uint64_t body_limit = 8ull << 20;     // 413 past this
  std::uint32_t header_limit = 16u << 10;    // 431 past this
  std::chrono::milliseconds read_timeout{15'000};   // whole request, from its first byte
  std::chrono::milliseconds idle_timeout{60'000};   // keep-alive wait for the next request
  std::chrono::milliseconds write_timeout{300'000}; // whole response (large files)
  std::size_t max_connections = 1024;        // past it new connections are closed at once
  // TLS: both set = HTTPS only on this listener.
  std::optional<std::filesystem::path> tls_cert, tls_key;
  // Builds the answer to an error the core found itself (status 400, 408,
  // 413, 431, 500). Default: {"error": message} as JSON.
  std::function<Response(unsigned status, std::string message)> on_error;
  // Called after each answer is written (or failed to be written).
  std::function<void(const Completed&)> on_complete;
  // Headers added to every answer, the core's own errors included.
  Headers default_headers;
};

class Server {
 public:
  Server(Options options, Handler handler);  // binds; throws std::runtime_error naming the address
  ~Server();                                 // stop() + join
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // "http://127.0.0.1:40123" (https when TLS), with the port actually bound.
  std::string base_url() const;
  unsigned short port() const;

  // Starts the io threads and returns at once.
  void start();
  // Stops accepting, lets requests in flight finish for up to grace, closes
  // the rest, joins the io threads. Safe from any thread but the io threads.
  void stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // Blocks until SIGINT or SIGTERM, then stop(grace). For the programs' main().
  void run_until_signal(std::chrono::milliseconds grace = std::chrono::seconds(10));

  std::size_t open_connections() const;

  // Runs fn on an io thread after delay (a timer, never a sleeping thread):
  // for delayed answers such as injected latency. fn must be quick and must
  // not throw. Timers run during stop()'s grace; those still pending
  // when the io threads end are dropped without running.
  void schedule(std::chrono::milliseconds delay, std::function<void()> fn);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Percent-decodes a path or query component; nullopt on a bad escape.
std::optional<std::string> percent_decode(std::string_view s);

}  // namespace iaserve::http
