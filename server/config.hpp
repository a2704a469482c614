#pragma once
// The one configuration file iaserve and iaworker both read (TOML).
//
// Every key has a default; a key the file does not know, or a value of the
// wrong type or out of range, is a ConfigError naming the key path
// ("apps[0].route: must start with '/', got \"tissue\""). Array indices in
// key paths count from 0. Durations are numbers of seconds or strings with a
// unit ("250ms", "30s", "5m", "2h", "7d"); sizes are numbers of bytes or
// strings with a unit ("512KiB", "8MiB", "10MB").
//
// Overrides use the same key paths: "server.listen=127.0.0.1:0",
// "apps[0].params.min_area=2" (the value is read as a TOML value, and as a
// plain string when it is not one), so every key can be set from a command
// line.
#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace iaserve::server {

using Duration = std::chrono::milliseconds;

// A bad configuration: key() is the path of the key ("" for a syntax error).
class ConfigError : public std::runtime_error {
 public:
  ConfigError(std::string key, const std::string& message)
      : std::runtime_error(key.empty() ? message : key + ": " + message), key_(std::move(key)) {}
  const std::string& key() const { return key_; }

 private:
  std::string key_;
};

struct ServerConfig {
  std::string listen = "0.0.0.0:5006";        // HOST:PORT, port 0 picks a free one
  unsigned io_threads = 2;
  std::uint64_t body_limit = 8ull << 20;      // bytes; larger bodies get 413
  Duration read_timeout{std::chrono::seconds(15)};  // a whole request, from its first byte
  Duration idle_timeout{std::chrono::seconds(60)};  // keep-alive wait for the next request
  std::filesystem::path tls_cert, tls_key;    // both set = HTTPS
  // Peers (IP addresses, "*" = any) whose X-Forwarded-Host/-Proto are used
  // for the registration url. Empty = never.
  std::vector<std::string> trusted_proxy;
  unsigned callback_pool_threads = 16;   // threads for the durable enqueue and cancel's search
  unsigned max_pending_callbacks = 256;  // requests waiting for them or for DPAT beyond their number; past it 503
  unsigned callback_connections = 64;    // most callback transfers at once, all hosts (create, modify)
  unsigned json_max_depth = 64;               // deeper request bodies get 400
  // GET /status: a page of the queue, the processes and recent jobs with
  // their pictures (and /status.json behind it). Off = 404 there.
  bool status_page = true;
};

enum class Wakeup { auto_, inotify, poll };
enum class Commit { auto_, journal, fsync };

struct QueueConfig {
  std::filesystem::path dir = "/var/lib/iaserve/queue";
  Wakeup wakeup = Wakeup::auto_;
  Duration lease_timeout{std::chrono::seconds(60)};
  unsigned max_attempts = 3;
  bool lease_only = false;  // run without flock (a nolock share): the admin's decision
  bool sync_finish = false;  // fsync when a job leaves active/ too (queue::Options::sync_finish)
  Commit commit = Commit::auto_;  // how an enqueue becomes durable (queue::Options::commit)
};

struct DataConfig {
  std::filesystem::path dir = "/var/lib/iaserve/data";
  Duration retention{std::chrono::hours(24 * 7)};  // finished jobs and downloads older go
};

struct CallbackConfig {
  Duration connect_timeout{std::chrono::seconds(5)};
  Duration total_timeout{std::chrono::seconds(60)};  // one call, downloads excepted
  unsigned retries = 3;                               // on 5xx and transport errors
  Duration retry_max_time{std::chrono::seconds(30)};
  std::filesystem::path ca_file;                      // empty = system CAs
  bool verify_tls = true;
};

struct LogConfig {
  std::string level = "info";  // trace debug info warn error critical off
  bool json = false;
};

struct WorkerConfig {
  unsigned jobs = 1;                                  // jobs run at once per iaworker
  std::string host_id;                                // empty = the host name
  Duration grace_period{std::chrono::seconds(30)};    // SIGTERM: let running jobs finish
  Duration poll_interval{std::chrono::seconds(2)};    // queue polling when inotify is not used
  std::string metrics_listen;                         // HOST:PORT of /metrics; empty = none
  Duration analysis_time_limit{std::chrono::hours(1)};
};

enum class InputType { wholeSlide, taggedPolygon, multiArea };

// Which image notifications an app takes. Empty lists accept everything;
// names compare case-insensitively; sizes are level-0 pixels, 0 = no bound.
struct NotificationFilter {
  bool enabled = false;
  std::vector<std::string> staining;
  std::vector<std::string> block;
  std::uint64_t min_width = 0, min_height = 0, max_width = 0, max_height = 0;
};

struct AppConfig {
  std::string route;           // "/apps/tissue": no trailing '/', unique
  std::string application_id;  // unique
  std::string display_name;
  std::string manufacturer = "iaserve";
  InputType input_type = InputType::wholeSlide;
  std::vector<std::string> input_tags;  // inputTemplate.content.tags (taggedPolygon)
  boost::json::object context;          // registration context, echoed back by DPAT
  std::string analysis = "tissue";      // analysis name the worker runs
  std::string analysis_key = "analysis";  // where the file wrote it: "analysis", or "analysis.name" (a table)
  boost::json::object params;           // its parameters
  NotificationFilter notifications;
};

struct Config {
  ServerConfig server;
  QueueConfig queue;
  DataConfig data;
  CallbackConfig callback;
  LogConfig log;
  WorkerConfig worker;
  std::vector<AppConfig> apps;  // at least one

  const AppConfig* find_app_by_id(std::string_view application_id) const;
  const AppConfig* find_app_by_route(std::string_view route) const;
};

// "key=value" with value always a string, whatever it looks like (a path
// such as 2024-01-01, or one holding a quote or a backslash): for flags that
// name a path or an address.
std::string string_override(std::string_view key, std::string_view value);

// Reads and checks a file. overrides are "key.path=value" (see above), applied
// before the checks. Throws ConfigError (the file name is in the message of
// syntax and I/O errors; key errors carry the key path).
Config load_config(const std::filesystem::path& path, const std::vector<std::string>& overrides = {});
// The same from text (tests; source names it in syntax errors).
Config parse_config(std::string_view toml_text, const std::vector<std::string>& overrides = {},
                    std::string_view source = "config");

// The effective configuration as TOML that parse_config reads back to the
// same Config. Holds no secrets (the config has none but paths).
std::string describe(const Config& config);

// "30s" / 30 -> 30000 ms; throws std::invalid_argument with the reason.
Duration parse_duration(std::string_view text);
std::uint64_t parse_size(std::string_view text);
std::string format_duration(Duration d);

std::string_view to_string(InputType t);
std::string_view to_string(Wakeup w);
std::string_view to_string(Commit c);

}  // namespace iaserve::server
