#pragma once
// Inside the callback client and engine (not for other code): one HTTP
// exchange's answer, how an attempt ended, and the retry rules every
// transport shares, so curl and the engine's plain-HTTP lane answer with the
// same kinds and texts.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "iaapi/client.hpp"

namespace iaserve::iaapi::detail {

struct Response {
  long status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  std::string header(std::string_view name) const {
    for (auto& [n, v] : headers)
      if (n == name) return v;
    return {};
  }
};

// How an attempt ended when no usable answer came.
enum class Failure {
  none,       // an HTTP answer came: judge its status
  cancelled,  // ClientOptions::cancelled said stop
  too_large,  // the answer passed max_body_bytes
  fatal,      // retrying cannot help (TLS verification, bad URL)
  unreached,  // nothing was sent (no connection): even a POST may be retried
  other,      // sent, perhaps acted on: only idempotent requests are retried
};

struct Attempt {
  Failure failure = Failure::none;
  std::string what;              // the transport's text, when it failed
  Response* response = nullptr;  // the answer (its status also when too_large)
};

// What to do with an attempt's outcome: take the answer, or try again after
// retry_in; outcomes that end the call throw CallbackError (its message
// names the step and the status, never the token). `waited` is the time
// spent between the call's attempts so far.
struct Verdict {
  bool accept = false;
  std::chrono::milliseconds retry_in{0};
};
Verdict judge(const std::string& step, bool idempotent, int attempt, std::chrono::milliseconds waited,
              const Attempt& a, const std::vector<long>& ok, const ClientOptions& options, std::mt19937_64& rng);

// A seed for retry jitter: spread between clients, not secrecy.
std::uint64_t jitter_seed();

std::exception_ptr cancelled_error(const std::string& step);

// Where a plain-http:// URL points, for the engine's http lane.
struct HttpTarget {
  std::string host;       // for connecting: an IPv6 address without its brackets
  std::string port;
  std::string authority;  // the Host header, as the URL has it
  std::string path;       // path and query
  std::string key;        // host and port: the kept-alive connections it may use
};
// nullopt unless the http lane can carry the URL: http://, no userinfo, a
// valid port (curl takes the others and names their faults).
std::optional<HttpTarget> parse_http_target(std::string_view url);

// One engine call, through its attempts.
struct EngineCall {
  std::string url, token, step;
  std::optional<std::string> body;  // JSON, when the method sends one
  const char* method = "GET";
  std::vector<long> ok;
  std::function<void(Response*, std::exception_ptr)> done;
  std::optional<HttpTarget> http;  // set when the http lane carries it
  int attempt = 0;
  std::chrono::milliseconds waited{0};
};

// What the engine's lanes share: its options, counters and stopping state.
struct EngineCore {
  ClientOptions options;
  std::atomic<std::size_t> in_flight{0};
  std::atomic<std::uint64_t> requests{0};
  std::mutex mutex;  // guards accepting, cancel_now and the lanes' intake
  std::condition_variable drained;
  bool accepting = true;
  bool cancel_now = false;

  // Runs the call's completion (a throw is logged, not passed on); a
  // counted call leaves in_flight.
  void complete(EngineCall& call, Response* r, std::exception_ptr error, bool counted = true);
  void cancel(EngineCall& call) { complete(call, nullptr, cancelled_error(call.step)); }
};

// A thread carrying some of the engine's calls (each lane owns its thread).
class EngineLane {
 public:
  virtual ~EngineLane() = default;
  virtual bool on_thread() const = 0;
  // Called with core.mutex held, once the call counts as in flight.
  virtual void take(std::unique_ptr<EngineCall> call) = 0;
  // After core.cancel_now is set: cancels what is left and ends the thread.
  virtual void finish() = 0;
};

// Plain http:// calls (those with EngineCall::http set), on Asio, for when
// no proxy is configured in the environment (curl's http_proxy /
// all_proxy); nullptr otherwise.
std::unique_ptr<EngineLane> make_http_lane(EngineCore& core, std::size_t max_transfers);

}  // namespace iaserve::iaapi::detail
