#include "server/service.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include "iaapi/client.hpp"
#include "iaapi/log.hpp"
#include "iaapi/messages.hpp"
#include "iaapi/result_builder.hpp"
#include "iaapi/thread_pool.hpp"
#include "iaapi/version.hpp"
#include "iaapi/text.hpp"
#include "queue/queue.hpp"
#include "server/filter.hpp"
#include "server/job_payload.hpp"
#include "server/metrics.hpp"
#include "server/options.hpp"
#include "server/status.hpp"

namespace iaserve::server {
namespace {

namespace json = boost::json;
using Clock = std::chrono::steady_clock;

http::Response json_answer(unsigned status, const json::value& v) {
  return http::Response::json(status, json::serialize(v));
}

http::Response error_answer(unsigned status, const std::string& error, const std::string& field = {}) {
  json::object o;
  o["error"] = error;
  if (!field.empty()) o["field"] = field;
  return json_answer(status, o);
}

// At most n bytes of an outside value for an error text, cut before a
// UTF-8 sequence rather than inside it (the answer stays valid UTF-8).
std::string clip(std::string_view s, std::size_t n) { return iaapi::clip_utf8(s, n); }

// Why a callbackInfo.url cannot be called, or nullopt: http(s), then a host.
std::optional<std::string> callback_url_problem(std::string_view u) {
  std::string_view rest;
  if (u.rfind("http://", 0) == 0) rest = u.substr(7);
  else if (u.rfind("https://", 0) == 0) rest = u.substr(8);
  else return "expected an http:// or https:// URL";
  const std::string_view authority = rest.substr(0, rest.find_first_of("/?#"));
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {
    host = host.substr(0, host.find(']') == std::string_view::npos ? host.size() : host.find(']') + 1);
  } else if (auto colon = host.rfind(':'); colon != std::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (host.empty() || host == "[]") return "no host in " + clip(u, 200);
  for (unsigned char c : u)
    if (c <= 0x20 || c == 0x7f) return "space or control character in " + clip(u, 200);
  if (authority.find('@') != std::string_view::npos) return "user name or password in the URL (the token is the credential)";
  return std::nullopt;
}

// Host header values we echo into a URL: a host name or address and a port.
bool plausible_host(std::string_view h) {
  if (h.empty() || h.size() > 255) return false;
  return std::all_of(h.begin(), h.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' ||
           c == '_';
  });
}

std::string first_of_list(std::string_view v) {
  auto comma = v.find(',');
  if (comma != std::string_view::npos) v = v.substr(0, comma);
  while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
  while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
  return std::string(v);
}

// "127.0.0.1:5000" -> "127.0.0.1", "[::1]:5000" -> "::1".
std::string peer_address(std::string_view remote) {
  if (!remote.empty() && remote.front() == '[') {
    auto close = remote.find(']');
    return std::string(remote.substr(1, close == std::string_view::npos ? remote.npos : close - 1));
  }
  auto colon = remote.rfind(':');
  return std::string(colon == std::string_view::npos ? remote : remote.substr(0, colon));
}

bool is_json_content_type(std::string_view ct) {
  while (!ct.empty() && ct.front() == ' ') ct.remove_prefix(1);
  constexpr std::string_view kJson = "application/json";
  if (ct.size() < kJson.size()) return false;
  for (std::size_t i = 0; i < kJson.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(ct[i])) != kJson[i]) return false;
  return ct.size() == kJson.size() || ct[kJson.size()] == ';' || ct[kJson.size()] == ' ';
}

// A slide id becomes part of URLs we call and of names on disk elsewhere:
// refuse "." and ".." segments outright (a server or proxy on the way may
// resolve them to another resource; the decoder already refused control
// characters).
std::optional<std::string> traversal_problem(std::string_view id) {
  std::size_t start = 0;
  while (start <= id.size()) {
    std::size_t end = id.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = id.size();
    const std::string_view segment = id.substr(start, end - start);
    if (segment == ".." || segment == ".")
      return "path traversal (\"" + std::string(segment) + "\" segment) in slide id";
    start = end + 1;
  }
  return std::nullopt;
}

// A bearer token goes into a header line of every callback: printable
// ASCII without blanks (RFC 6750's token68 and more), so that no CR or LF
// can add a header of the caller's. The answer never shows the token.
std::optional<std::string> token_problem(std::string_view token) {
  if (token.empty()) return "empty (DPAT's callbacks need it)";
  for (std::size_t i = 0; i < token.size(); ++i) {
    const auto c = static_cast<unsigned char>(token[i]);
    if (c < 0x21 || c > 0x7e)
      return "byte " + std::to_string(i + 1) + " of " + std::to_string(token.size()) + " is " +
             (c == ' ' ? std::string("a space") : c < 0x20 || c == 0x7f ? "a control character" : "not ASCII") +
             " (a bearer token is printable ASCII)";
  }
  return std::nullopt;
}

std::string step_text(const char* method, const std::string& path) { return std::string(method) + " " + path; }

// Slide sizes DPAT told us, by callback URL and slide id. A slide's pixel
// size never changes, so a create on a slide seen before (a re-run, another
// app on the same slide) skips GET /slides/{id}/info. Bounded: two
// generations of at most kPerGeneration entries; the older one is dropped
// when the newer fills, so the slides in use stay.
class SlideSizes {
 public:
  struct Size {
    std::int64_t width = 0, height = 0;
  };
  std::optional<Size> find(const std::string& key) {
    std::lock_guard lock(mutex_);
    if (auto it = current_.find(key); it != current_.end()) return it->second;
    if (auto it = previous_.find(key); it != previous_.end()) {
      Size s = it->second;
      insert_locked(key, s);
      return s;
    }
    return std::nullopt;
  }
  void insert(const std::string& key, Size s) {
    std::lock_guard lock(mutex_);
    insert_locked(key, s);
  }

 private:
  static constexpr std::size_t kPerGeneration = 4096;
  void insert_locked(const std::string& key, Size s) {
    if (current_.size() >= kPerGeneration) {
      previous_ = std::move(current_);
      current_ = {};
    }
    current_[key] = s;
  }
  std::mutex mutex_;
  std::unordered_map<std::string, Size> current_, previous_;
};

}  // namespace

struct Service::Impl : std::enable_shared_from_this<Service::Impl> {
  Config config;
  std::shared_ptr<spdlog::logger> log = log::get("server");
  Metrics metrics;
  iaapi::ClientOptions client_opts;
  ThreadPool pool;  // enqueue + callbacks of one request
  // /readyz, /metrics and the status page read the disk too, but must answer
  // while a hung DPAT holds every callback thread: their own small pool.
  ThreadPool monitor_pool{2, 64};
  SlideSizes slide_sizes;
  const std::chrono::system_clock::time_point started = std::chrono::system_clock::now();

  std::mutex queue_mutex;
  std::shared_ptr<queue::Queue> queue;
  std::string queue_error;
  Clock::time_point queue_retry{};

  // Creates and modifies between their dispatch and their answer; at most
  // callback_pool_threads + max_pending_callbacks (past that 503), so a
  // slow DPAT cannot grow them without bound.
  std::atomic<unsigned> invocations_open{0};
  // The callbacks of creates and modifies: on the engine's lanes, none holding
  // a pool thread while DPAT answers. Last member: stopped (its completions
  // ended) before anything they use is destroyed.
  iaapi::CallbackEngine engine{client_opts, static_cast<long>(config.server.callback_connections)};

  explicit Impl(Config c)
      : config(std::move(c)),
        client_opts(client_options(config)),
        pool(config.server.callback_pool_threads, config.server.max_pending_callbacks) {
    open_queue();
  }

  // The queue, opening it when it is not open yet (at most once a second).
  // nullptr with the reason when it cannot be opened.
  std::shared_ptr<queue::Queue> get_queue(std::string* why) {
    std::lock_guard lock(queue_mutex);
    if (!queue && Clock::now() >= queue_retry) open_queue_locked();
    if (!queue && why) *why = queue_error;
    return queue;
  }
  void open_queue() {
    std::lock_guard lock(queue_mutex);
    open_queue_locked();
  }
  void open_queue_locked() {
    try {
      queue = std::make_shared<queue::Queue>(config.queue.dir, queue_options(config));
      queue_error.clear();
      // Jobs a power cut took from an earlier server on this host come back
      // now; those of other hosts once their leases are stale (workers look).
      try {
        if (auto n = queue->replay_journals()) log->warn("{} jobs written again from journals of dead processes", n);
      } catch (const std::exception& e) {
        log->error("journal replay in {}: {}", config.queue.dir.string(), e.what());
      }
    } catch (const std::exception& e) {
      queue_error = e.what();
      queue_retry = Clock::now() + std::chrono::seconds(1);
      log->error("queue folder {} unusable: {}", config.queue.dir.string(), e.what());
    }
  }

  // ------------------------------------------------------------ requests
  // One request on its way to an answer: logs once when answered.
  struct Call {
    Call(Impl* i, http::Responder r) : impl(i), respond(std::move(r)) {}
    Impl* impl;
    http::Responder respond;
    std::string method, path, route, slide_id, action;
    Clock::time_point start = Clock::now();
    std::atomic<bool> done{false};
    // A create's or modify's place among the open ones, given back with the
    // answer (its callbacks may still run then, to no one).
    std::shared_ptr<const void> slot;

    void answer(http::Response r) {
      if (done.exchange(true)) return;
      slot.reset();
      auto ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
      unsigned status = r.status;
      respond(std::move(r));
      auto level = status >= 500 ? spdlog::level::warn : spdlog::level::info;
      impl->log->log(level, "{} {} {} {:.1f}ms{}{}", method, path, status, ms,
                     slide_id.empty() ? "" : " slide=" + slide_id, action.empty() ? "" : " action=" + action);
    }
  };
  using CallPtr = std::shared_ptr<Call>;

  // Runs fn on the pool, answering 503 when the pool is full (and returning
  // false) and 500 when fn throws: nothing escapes.
  bool on_pool(const CallPtr& call, std::function<void()> fn) {
    auto self = shared_from_this();
    bool posted = pool.post([self, call, fn = std::move(fn)] {
      self->guarded(call, fn);
    });
    if (!posted) {
      call->answer(error_answer(503, "server busy: too many requests waiting for DPAT (max_pending_callbacks " +
                                         std::to_string(config.server.max_pending_callbacks) + ")"));
    }
    return posted;
  }

  // The same for the monitoring routes, on their own pool.
  void on_monitor_pool(const CallPtr& call, std::function<void()> fn) {
    auto self = shared_from_this();
    if (!monitor_pool.post([self, call, fn = std::move(fn)] { self->guarded(call, fn); }))
      call->answer(error_answer(503, "server busy: too many monitoring requests waiting"));
  }

  void guarded(const CallPtr& call, const std::function<void()>& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      log->error("{} {}: internal error{}: {}", call->method, call->path,
                 call->slide_id.empty() ? "" : " (slide " + call->slide_id + ")", e.what());
      call->answer(error_answer(500, "internal error"));
    } catch (...) {
      log->error("{} {}: internal error: unknown exception", call->method, call->path);
      call->answer(error_answer(500, "internal error"));
    }
  }

  void handle(http::Request&& req, http::Responder respond) {
    auto call = std::make_shared<Call>(this, std::move(respond));
    call->method = req.method;
    call->path = req.path;
    guarded(call, [&] { route(call, req); });
  }

  std::string route_label(const std::string& path) const {
    std::string_view p = path;
    if (p.size() > 1 && p.back() == '/') p.remove_suffix(1);
    for (std::string_view fixed : {"/", "/healthz", "/readyz", "/metrics", "/status", "/status.json", "/status.js",
                                   "/status.css"})
      if (p == fixed) return std::string(fixed);
    if (p.rfind("/status/slides/", 0) == 0) return "/status/slides";
    for (const auto& app : config.apps) {
      if (p == app.route) return app.route;
      if (p == app.route + "/info") return app.route + "/info";
      if (p == app.route + "/imagenotification") return app.route + "/imagenotification";
    }
    return "other";
  }

  void route(const CallPtr& call, http::Request& req) {
    std::string path = req.path;
    if (path.size() > 1 && path.back() == '/') path.pop_back();
    call->route = route_label(path);
    // HEAD is GET without the body (the http layer leaves it out).
    const bool head = req.method == "HEAD";
    auto only = [&](const char* method) {
      if (req.method == method || (head && std::string_view(method) == "GET")) return true;
      const std::string allowed = std::string_view(method) == "GET" ? "GET, HEAD" : method;
      call->answer(error_answer(405, "method " + req.method + " not allowed on " + path + " (allowed: " + allowed + ")")
                       .header("Allow", allowed));
      return false;
    };
    if (path == "/") {
      if (only("GET")) call->answer(index());
      return;
    }
    if (path == "/healthz") {
      if (only("GET")) call->answer(json_answer(200, json::object{{"status", "alive"}}));
      return;
    }
    if (path == "/readyz") {
      if (only("GET")) readyz(call);
      return;
    }
    if (path == "/metrics") {
      if (only("GET")) metrics_answer(call);
      return;
    }
    if (config.server.status_page && (path == "/status" || path.rfind("/status.", 0) == 0 ||
                                      path.rfind("/status/slides/", 0) == 0)) {
      if (only("GET")) status_route(call, path);
      return;
    }
    for (const auto& app : config.apps) {
      if (path == app.route) {
        if (req.method == "GET" || head) {
          call->answer(json_answer(200, registration(app, req)));
        } else if (req.method == "POST") {
          invocation(call, app, req);
        } else {
          call->answer(
              error_answer(405, "method " + req.method + " not allowed on " + path + " (allowed: GET, HEAD, POST)")
                  .header("Allow", "GET, HEAD, POST"));
        }
        return;
      }
      if (path == app.route + "/info") {
        if (only("GET"))
          call->answer(json_answer(200, iaapi::to_json(iaapi::ApplicationInfo{kApiVersion, kSoftwareVersion})));
        return;
      }
      if (path == app.route + "/imagenotification") {
        if (only("POST")) notification(call, app, req);
        return;
      }
    }
    call->answer(error_answer(404, "no route for " + clip(req.path, 200)));
  }

  // ------------------------------------------------------------ simple routes
  http::Response index() const {
    json::array apps;
    for (const auto& a : config.apps)
      apps.push_back(json::object{{"route", a.route},
                                  {"applicationId", a.application_id},
                                  {"displayName", a.display_name},
                                  {"analysis", a.analysis},
                                  {"inputType", to_string(a.input_type)},
                                  {"notifications", a.notifications.enabled}});
    return json_answer(200, json::object{{"name", "iaserve"},
                                         {"softwareVersion", kSoftwareVersion},
                                         {"apiVersion", kApiVersion},
                                         {"minApiVersion", kMinApiVersion},
                                         {"statusPage", config.server.status_page ? json::value("/status") : nullptr},
                                         {"apps", std::move(apps)}});
  }

  void readyz(const CallPtr& call) {
    // writable() touches the disk: not on an io thread.
    on_monitor_pool(call, [this, call] {
      std::string why;
      auto q = get_queue(&why);
      if (!q) {
        call->answer(error_answer(503, "queue folder unusable: " + why));
        return;
      }
      if (!q->writable()) {
        call->answer(error_answer(503, "queue folder " + config.queue.dir.string() + " is not writable"));
        return;
      }
      call->answer(json_answer(200, json::object{{"status", "ready"}, {"queue", config.queue.dir.string()}}));
    });
  }

  void metrics_answer(const CallPtr& call) {
    on_monitor_pool(call, [this, call] {
      std::string extra =
          "# HELP iaserve_queue_jobs Jobs in the queue folder, by state.\n# TYPE iaserve_queue_jobs gauge\n";
      if (auto q = get_queue(nullptr)) {
        try {
          auto s = q->stats();
          for (auto [name, n] : {std::pair{"pending", s.pending}, {"active", s.active}, {"done", s.done},
                                 {"failed", s.failed}, {"cancelled", s.cancelled}})
            extra += "iaserve_queue_jobs{state=\"" + std::string(name) + "\"} " + std::to_string(n) + "\n";
        } catch (const std::exception& e) {
          log->warn("metrics: queue stats: {}", e.what());
        }
      }
      extra += "# HELP iaserve_queue_ready 1 when the queue folder is open.\n# TYPE iaserve_queue_ready gauge\n";
      extra += std::string("iaserve_queue_ready ") + (get_queue(nullptr) ? "1" : "0") + "\n";
      extra += "# HELP iaserve_callback_pool_queued Requests waiting for a callback thread.\n"
               "# TYPE iaserve_callback_pool_queued gauge\n";
      extra += "iaserve_callback_pool_queued " + std::to_string(pool.queued()) + "\n";
      extra += "# HELP iaserve_invocations_open Creates and modifies taken and not answered yet (waiting for the "
               "queue or DPAT).\n"
               "# TYPE iaserve_invocations_open gauge\n";
      extra += "iaserve_invocations_open " + std::to_string(invocations_open.load()) + "\n";
      call->answer(http::Response::text(200, "text/plain; version=0.0.4", metrics.render(extra)));
    });
  }

  // The status page: its three files from memory, the snapshot and the
  // pictures from disk (on the monitoring pool: the queue folder may be a share).
  void status_route(const CallPtr& call, const std::string& path) {
    auto page = [](std::string type, std::string_view body) {
      return http::Response::text(200, std::move(type), std::string(body))
          .header("Content-Security-Policy",
                  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'")
          .header("X-Content-Type-Options", "nosniff")
          .header("Cache-Control", "no-cache");
    };
    if (path == "/status" && call->path.size() > path.size()) {
      // "/status/": its relative links would miss; the page lives at "/status".
      return call->answer(http::Response::text(301, "text/plain", "moved to ../status\n").header("Location", "../status"));
    }
    if (path == "/status") return call->answer(page("text/html; charset=utf-8", status::page_html()));
    if (path == "/status.js") return call->answer(page("text/javascript; charset=utf-8", status::page_js()));
    if (path == "/status.css") return call->answer(page("text/css; charset=utf-8", status::page_css()));
    if (path == "/status.json") {
      on_monitor_pool(call, [this, call] {
        status::Snapshot snap;
        snap.config = &config;
        snap.started = started;
        auto q = get_queue(&snap.queue_error);
        snap.queue = q.get();
        try {
          call->answer(json_answer(200, status::snapshot(snap)).header("Cache-Control", "no-store"));
        } catch (const std::exception& e) {  // the folder went away meanwhile
          call->answer(error_answer(503, "queue folder " + config.queue.dir.string() + ": " + e.what()));
        }
      });
      return;
    }
    constexpr std::string_view kSlides = "/status/slides/";
    if (path.rfind(kSlides, 0) == 0) {
      std::string rest = path.substr(kSlides.size());
      on_monitor_pool(call, [this, call, rest] {
        constexpr std::uintmax_t kMaxPicture = 64u << 20;
        auto file = status::picture(config, rest);
        std::error_code ec;
        auto size = file ? std::filesystem::file_size(*file, ec) : 0;
        std::string bytes;
        if (file && !ec && size <= kMaxPicture) {
          std::ifstream in(*file, std::ios::binary);
          bytes.resize(size);
          if (!in.read(bytes.data(), static_cast<std::streamsize>(size))) file.reset();
        } else {
          file.reset();
        }
        if (!file) {
          call->answer(error_answer(404, "no picture " + clip(rest, 200) +
                                             " (expected <slide key>/thumbnail.jpg or overlay.png in the data folder)"));
          return;
        }
        call->answer(http::Response::text(200, std::string(status::picture_type(*file)), std::move(bytes))
                         .header("X-Content-Type-Options", "nosniff")
                         .header("Cache-Control", "no-cache"));
      });
      return;
    }
    call->answer(error_answer(404, "no route for " + clip(path, 200)));
  }

  json::value registration(const AppConfig& app, const http::Request& req) const {
    std::string scheme = req.tls ? "https" : "http";
    std::string host(req.header("host"));
    if (trusted(req.remote)) {
      std::string fh = first_of_list(req.header("x-forwarded-host"));
      std::string fp = first_of_list(req.header("x-forwarded-proto"));
      if (plausible_host(fh)) host = fh;
      if (fp == "http" || fp == "https") scheme = fp;
    }
    // No usable Host (an HTTP/1.0 caller): the address and port it reached.
    if (!plausible_host(host)) host = req.local;
    iaapi::Registration r;
    r.application_id = app.application_id;
    r.display_name = app.display_name;
    r.url = scheme + "://" + host + app.route;
    r.manufacturer = app.manufacturer;
    r.input_template.type = static_cast<iaapi::InputType>(static_cast<int>(app.input_type));
    if (!app.input_tags.empty()) r.input_template.tags = app.input_tags;
    r.context = app.context;
    return iaapi::to_json(r);
  }

  bool trusted(const std::string& remote) const {
    if (config.server.trusted_proxy.empty()) return false;
    std::string peer = peer_address(remote);
    for (const auto& p : config.server.trusted_proxy)
      if (p == "*" || p == peer) return true;
    return false;
  }

  // ------------------------------------------------------------ POST bodies
  // The body as JSON, or an error already answered.
  // 400 for a body that does not decode, naming the field: the body itself
  // when the fault is at its top (not JSON, not an object).
  static void bad_body(const CallPtr& call, const iaapi::FieldError& e) {
    call->answer(error_answer(400, e.what(), e.field.empty() ? "body" : e.field));
  }

  std::optional<json::value> json_body(const CallPtr& call, const http::Request& req) {
    auto ct = req.header("content-type");
    if (!is_json_content_type(ct)) {
      call->answer(error_answer(415, "expected Content-Type application/json, got \"" +
                                         clip(ct, 100) + "\"", "Content-Type"));
      return std::nullopt;
    }
    auto parsed = iaapi::parse_json(req.body, config.server.json_max_depth);
    if (!parsed) {
      bad_body(call, parsed.error);
      return std::nullopt;
    }
    return std::move(*parsed.value);
  }

  bool check_ids(const CallPtr& call, const AppConfig& app, const std::string& application_id,
                 const std::string& slide_id) {
    if (application_id != app.application_id) {
      call->answer(error_answer(400, "applicationId: \"" + clip(application_id, 100) +
                                         "\" is not this app's id \"" + app.application_id + "\"",
                                "applicationId"));
      return false;
    }
    if (auto p = traversal_problem(slide_id)) {
      call->answer(error_answer(400, "slideId: " + *p, "slideId"));
      return false;
    }
    return true;
  }

  // A job is only worth queueing with a callback a worker can call.
  bool check_callback(const CallPtr& call, const iaapi::CallbackInfo& cb) {
    if (auto problem = callback_url_problem(cb.url)) {
      call->answer(error_answer(400, "callbackInfo.url: " + *problem, "callbackInfo.url"));
      return false;
    }
    if (auto problem = token_problem(cb.token)) {
      call->answer(error_answer(400, "callbackInfo.token: " + *problem, "callbackInfo.token"));
      return false;
    }
    return true;
  }

  void invocation(const CallPtr& call, const AppConfig& app, const http::Request& req) {
    auto body = json_body(call, req);
    if (!body) return;
    auto decoded = iaapi::decode<iaapi::Invocation>(*body);
    if (!decoded) {
      bad_body(call, decoded.error);
      return;
    }
    iaapi::Invocation inv = std::move(*decoded.value);
    call->slide_id = inv.slide_id;
    call->action = std::string(iaapi::to_string(inv.action));
    if (!check_ids(call, app, inv.application_id, inv.slide_id)) return;
    if (inv.action != iaapi::Action::cancel && inv.action != iaapi::Action::delete_) {
      if (!check_callback(call, inv.callback)) return;
    }
    auto shared = std::make_shared<iaapi::Invocation>(std::move(inv));
    switch (shared->action) {
      case iaapi::Action::create: {
        if (!(call->slot = open_invocation(call))) return;  // answered 503
        create(call, app, shared);
        break;
      }
      case iaapi::Action::modify:
        if (!(call->slot = open_invocation(call))) return;  // answered 503
        modify(call, app, shared);
        break;
      case iaapi::Action::delete_:
        on_pool(call, [this, call, &app, shared] { cancel(call, app, *shared, json::object{}); });
        break;
      case iaapi::Action::cancel:
        on_pool(call, [this, call, &app, shared] { cancel(call, app, *shared, json::array{}); });
        break;
    }
  }

  // Durable enqueue; false (answered 503) when the queue cannot take it.
  bool enqueue(const CallPtr& call, const AppConfig& app, const JobPayload& payload) {
    std::string why;
    auto q = get_queue(&why);
    if (!q) {
      call->answer(error_answer(503, "queue folder unusable: " + why));
      return false;
    }
    queue::JobSpec spec;
    spec.app_id = app.application_id;
    spec.slide_key = iaapi::slide_key(payload.slide_id);
    spec.payload = to_json(payload);
    // DPAT's priority (an image's, in its notification), else one an
    // invocation's context may carry.
    std::optional<std::int64_t> priority;
    if (payload.notification) priority = payload.notification->image_info.priority;
    if (!priority && payload.invocation)
      if (auto p = payload.invocation->context.if_contains("priority"); p && p->is_int64()) priority = p->get_int64();
    if (priority) spec.priority = static_cast<int>(std::clamp<std::int64_t>(*priority, -49999, 49999));
    try {
      std::string id = q->enqueue(spec);
      log->debug("queued job {} ({}) slide={}", id, to_string(payload.kind), payload.slide_id);
      return true;
    } catch (const queue::JobTooLarge& e) {
      // Nothing written: the decoded request (defaults filled in) is more
      // than the queue holds.
      call->answer(error_answer(413, "request too large to queue: " + std::string(e.what()), "body"));
      return false;
    } catch (const std::exception& e) {
      log->error("enqueue for slide {} failed: {}", payload.slide_id, e.what());
      call->answer(error_answer(503, "queue not writable: " + std::string(e.what())));
      return false;
    }
  }

  void callback_failed(const CallPtr& call, const iaapi::CallbackError& e, const std::string& step) {
    metrics.callback_error(iaapi::to_string(e.kind()));
    log->warn("callback {} for slide {} failed ({}): {}", step, call->slide_id, iaapi::to_string(e.kind()), e.what());
    json::object o;
    o["error"] = std::string("callback to DPAT failed: ") + e.what();
    o["step"] = step;
    o["status"] = e.status();
    o["kind"] = iaapi::to_string(e.kind());
    call->answer(json_answer(502, o));
  }

  // A create's or modify's place among the open ones, given back with its
  // answer; nullptr (answered 503) when all are taken.
  using InvocationSlot = std::shared_ptr<const void>;
  InvocationSlot open_invocation(const CallPtr& call) {
    const unsigned limit =
        config.server.callback_pool_threads + config.server.max_pending_callbacks;
    if (invocations_open.fetch_add(1) >= limit) {
      --invocations_open;
      call->answer(error_answer(
          503, "server busy: too many requests waiting for DPAT (max_pending_callbacks " +
                   std::to_string(config.server.max_pending_callbacks) + ")"));
      return nullptr;
    }
    return InvocationSlot(static_cast<const void*>(this), [this](const void*) { --invocations_open; });
  }

  // One create on its way: the durable enqueue (a pool thread) and the
  // callbacks that do not wait for it (the engine's thread) meet here; the
  // one that arrives last stores the frame.
  struct CreateState {
    CallPtr call;
    const AppConfig* app = nullptr;
    std::shared_ptr<const iaapi::Invocation> inv;
    std::string size_key;
    std::optional<SlideSizes::Size> size;
    std::mutex mutex;
    int waiting = 0;
    bool enqueued = false;
    iaapi::CallOutcome<std::vector<iaapi::StoredResult>> list;
    iaapi::CallOutcome<iaapi::ImageInfo> info;
    iaapi::Result frame;  // once both have arrived
    // The create's place among the open invocations, also held until the
    // callbacks sent for it end: a create answered early (the queue refused
    // the job) still counts while its callbacks run.
    std::shared_ptr<const void> slot;
  };
  using CreatePtr = std::shared_ptr<CreateState>;

  // On the io thread: the enqueue is posted to the pool, then the callbacks
  // that do not wait for it go out on the engine, so DPAT answers while the
  // job waits for a pool thread and is written.
  void create(const CallPtr& call, const AppConfig& app,
              std::shared_ptr<const iaapi::Invocation> inv) {
    auto st = std::make_shared<CreateState>();
    st->call = call;
    st->app = &app;
    st->inv = std::move(inv);
    st->slot = call->slot;
    const iaapi::CallbackInfo& cb = st->inv->callback;
    const std::string& slide = st->inv->slide_id;
    st->size_key = cb.url + '\n' + slide;
    st->size = slide_sizes.find(st->size_key);
    // The slide size (when not known yet) and this app's results on the
    // slide depend neither on each other nor on the queue.
    st->waiting = st->size ? 2 : 3;
    if (!on_pool(call, [this, st] { enqueue_create(st); })) return;  // answered 503, nothing sent
    if (!st->size)
      engine.image_info(cb, slide, [this, st](iaapi::CallOutcome<iaapi::ImageInfo> o) {
        st->info = std::move(o);
        arrived(st);
      });
    engine.list_results(cb, app.application_id, slide,
                        [this, st](iaapi::CallOutcome<std::vector<iaapi::StoredResult>> o) {
                          st->list = std::move(o);
                          arrived(st);
                        });
  }

  void enqueue_create(const CreatePtr& st) {
    try {
      JobPayload payload;
      payload.kind = JobKind::create;
      payload.application_id = st->app->application_id;
      payload.slide_id = st->inv->slide_id;
      payload.received_at = utc_now_iso();
      payload.invocation = *st->inv;
      st->enqueued = enqueue(st->call, *st->app, payload);  // answers 503 itself when it fails
    } catch (...) {
      arrived(st);  // not enqueued: the callbacks' end stores nothing
      throw;        // answered 500
    }
    arrived(st);
  }

  void arrived(const CreatePtr& st) {
    {
      std::lock_guard lock(st->mutex);
      if (--st->waiting > 0) return;
    }
    st->slot.reset();  // the callbacks sent for it have ended; the call's own place stays till its answer
    guarded(st->call, [&] { store_frame(st); });
  }

  // Answers 502 naming the step when the call failed; false then.
  template <class T>
  bool succeeded(const CallPtr& call, const iaapi::CallOutcome<T>& o, const std::string& step) {
    if (!o.error) return true;
    try {
      std::rethrow_exception(o.error);
    } catch (const iaapi::CallbackError& e) {
      callback_failed(call, e, step);
    }
    return false;
  }

  // The "analysis queued" frame over this app's newest result on the slide
  // (PUT with its versionId), else a new one (POST); the answer is DPAT's.
  void store_frame(const CreatePtr& st) {
    if (!st->enqueued) return;  // answered 503: no frame for a job not queued
    const CallPtr& call = st->call;
    const iaapi::Invocation& inv = *st->inv;
    if (!st->size) {
      if (!succeeded(call, st->info, step_text("GET", "/slides/" + iaapi::url_encode(inv.slide_id) + "/info")))
        return;
      st->size =
          SlideSizes::Size{st->info.value->image_size.width, st->info.value->image_size.height};
      if (st->size->width > 0 && st->size->height > 0) slide_sizes.insert(st->size_key, *st->size);
    }
    if (!succeeded(call, st->list, list_step(st))) return;
    st->frame = iaapi::progress_result(inv.slide_id, st->size->width, st->size->height,
                                       "analysis queued", 0, kSoftwareVersion);
    st->frame.data.context = inv.context;
    put_frame(st, *st->list.value, 0);
  }

  std::string list_step(const CreatePtr& st) const {
    return step_text("GET", "/applications/" + iaapi::url_encode(st->app->application_id) +
                                "/results/slide/" + iaapi::url_encode(st->inv->slide_id));
  }

  // Stores st->frame over the newest of `existing`, else as a new result,
  // and answers. A PUT answered 409 (someone, a worker, updated the result
  // between the list and the PUT) lists again and retries, three times at
  // most (as many lists as the create's own and CallbackClient::
  // upsert_result's together); the steps after the first 409 are named
  // "upsert ...". All on the engine: no thread waits for DPAT.
  void put_frame(const CreatePtr& st, const std::vector<iaapi::StoredResult>& existing, int round) {
    constexpr int kRelists = 3;
    const iaapi::Invocation& inv = *st->inv;
    const std::string& app_id = st->app->application_id;
    const std::string prefix = round > 0 ? "upsert " : "";
    if (existing.empty()) {
      const std::string step =
          prefix + step_text("POST", "/applications/" + iaapi::url_encode(app_id) + "/results");
      engine.create_result(inv.callback, app_id, st->frame,
                           [this, st, step](iaapi::CallOutcome<iaapi::StoredResult> o) {
                             guarded(st->call, [&] {
                               if (succeeded(st->call, o, step))
                                 st->call->answer(json_answer(200, iaapi::to_json(*o.value)));
                             });
                           });
      return;
    }
    const auto& newest = *std::max_element(
        existing.begin(), existing.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
    iaapi::StoredResult update;
    static_cast<iaapi::Result&>(update) = st->frame;
    update.id = newest.id;
    update.version_id = newest.version_id;
    const std::string step = prefix + step_text("PUT", "/applications/" + iaapi::url_encode(app_id) +
                                                           "/results/" + std::to_string(newest.id));
    engine.update_result(inv.callback, app_id, update,
                         [this, st, step, round](iaapi::CallOutcome<iaapi::StoredResult> o) {
                           guarded(st->call, [&] {
                             if (o.value) {
                               st->call->answer(json_answer(200, iaapi::to_json(*o.value)));
                               return;
                             }
                             if (!conflict(o.error) || round >= kRelists) {
                               succeeded(st->call, o, step);  // answers the 502
                               return;
                             }
                             log->info("slide {}: {} answered 409 (changed meanwhile); listing again",
                                       st->inv->slide_id, step);
                             relist(st, round + 1);
                           });
                         });
  }

  void relist(const CreatePtr& st, int round) {
    const std::string step = "upsert " + list_step(st);
    engine.list_results(st->inv->callback, st->app->application_id, st->inv->slide_id,
                        [this, st, step, round](iaapi::CallOutcome<std::vector<iaapi::StoredResult>> o) {
                          guarded(st->call, [&] {
                            if (succeeded(st->call, o, step)) put_frame(st, *o.value, round);
                          });
                        });
  }

  static bool conflict(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const iaapi::CallbackError& e) {
      return e.kind() == iaapi::CallbackErrorKind::conflict;
    } catch (...) {
      return false;
    }
  }

  // On the io thread: a pressed patchCollection button first queues a job
  // for the app's hook (on the pool); then the changed result is stored by
  // PUT on the engine and DPAT's answer returned.
  void modify(const CallPtr& call, const AppConfig& app, std::shared_ptr<const iaapi::Invocation> inv) {
    if (!inv->input || !inv->input->result) {
      call->answer(error_answer(400, "input: expected the stored result for modify", "input"));
      return;
    }
    const iaapi::StoredResult& changed = *inv->input->result;
    std::optional<std::string> pressed;
    if (changed.data.result && changed.data.result->type == iaapi::ResultType::patchCollection) {
      for (const auto& a : changed.data.result->patches.actions)
        if (a.state == 1) {
          pressed = a.id;
          break;
        }
    }
    if (!pressed) {
      store_modified(call, app, inv);
      return;
    }
    call->action = "modify:" + *pressed;
    on_pool(call, [this, call, &app, inv, pressed] {
      JobPayload payload;
      payload.kind = JobKind::modify;
      payload.application_id = app.application_id;
      payload.slide_id = inv->slide_id;
      payload.received_at = utc_now_iso();
      payload.invocation = *inv;
      payload.action_id = pressed;
      if (enqueue(call, app, payload)) store_modified(call, app, inv);
    });
  }

  void store_modified(const CallPtr& call, const AppConfig& app, const std::shared_ptr<const iaapi::Invocation>& inv) {
    const iaapi::StoredResult& changed = *inv->input->result;
    std::string step = step_text("PUT", "/applications/" + iaapi::url_encode(app.application_id) + "/results/" +
                                            std::to_string(changed.id));
    engine.update_result(inv->callback, app.application_id, changed,
                         [this, call, step](iaapi::CallOutcome<iaapi::StoredResult> o) {
                           guarded(call, [&] {
                             if (succeeded(call, o, step)) call->answer(json_answer(200, iaapi::to_json(*o.value)));
                           });
                         });
  }

  void cancel(const CallPtr& call, const AppConfig& app, const iaapi::Invocation& inv, json::value answer) {
    std::string why;
    auto q = get_queue(&why);
    if (!q) {
      call->answer(error_answer(503, "queue folder unusable: " + why));
      return;
    }
    // A cancel with a cancellationToken: the jobs that carry it; none
    // carrying it, those of the slide that carry none (they could have been
    // its run). A job with another token is another run (a newer one, when
    // this cancel comes late) and stays. Without one, and for a delete (the
    // result is gone, whatever run made it): all of the slide's.
    std::size_t n = 0;
    if (inv.action == iaapi::Action::cancel && inv.cancellation_token && !inv.cancellation_token->empty()) {
      const std::string slide = iaapi::slide_key(inv.slide_id);
      std::vector<std::string> untokened;
      bool matched = false;  // a job carried the token (even one that ended before its cancel)
      for (auto state : {queue::State::pending, queue::State::active}) {
        for (const auto& job : q->list(state)) {
          if (job.app_id != app.application_id) continue;
          const json::string* tok = nullptr;
          for (const char* kind : {"invocation", "notification"}) {
            auto it = job.payload.find(kind);
            if (it == job.payload.end() || !it->value().is_object()) continue;
            if (auto t = it->value().get_object().if_contains("cancellationToken"); t && t->is_string())
              tok = &t->get_string();
          }
          if (tok && !tok->empty()) {
            if (*tok != *inv.cancellation_token) continue;
            matched = true;
            if (q->cancel(job.id)) ++n;
          } else if (job.slide_key == slide) {
            untokened.push_back(job.id);
          }
        }
      }
      if (!matched)
        for (const auto& id : untokened)
          if (q->cancel(id)) ++n;
    } else {
      n = q->cancel_slide(app.application_id, iaapi::slide_key(inv.slide_id));
    }
    log->debug("{} slide={}: {} job(s) cancelled", iaapi::to_string(inv.action), inv.slide_id, n);
    call->answer(json_answer(200, answer));
  }

  void notification(const CallPtr& call, const AppConfig& app, const http::Request& req) {
    auto body = json_body(call, req);
    if (!body) return;
    auto decoded = iaapi::decode<iaapi::ImageNotification>(*body);
    if (!decoded) {
      bad_body(call, decoded.error);
      return;
    }
    auto n = std::make_shared<iaapi::ImageNotification>(std::move(*decoded.value));
    call->slide_id = n->slide_id;
    call->action = "notification";
    if (!check_ids(call, app, n->application_id, n->slide_id)) return;
    if (!check_callback(call, n->callback)) return;
    if (auto why = notification_rejection(app.notifications, n->image_info)) {
      log->debug("notification for slide {} filtered out: {}", n->slide_id, *why);
      call->action = "notification:filtered";
      call->answer(json_answer(200, json::object{}));
      return;
    }
    on_pool(call, [this, call, &app, n] {
      JobPayload payload;
      payload.kind = JobKind::notification;
      payload.application_id = app.application_id;
      payload.slide_id = n->slide_id;
      payload.received_at = utc_now_iso();
      payload.notification = *n;
      if (!enqueue(call, app, payload)) return;
      call->answer(json_answer(200, json::object{}));
    });
  }
};

Service::Service(Config config) : impl_(std::make_shared<Impl>(std::move(config))) {}

Service::~Service() { stop(); }

void Service::stop() {
  // Creates and modifies taken get their answers first (bounded): their
  // next callback or enqueue still finds the engine and the pool running.
  for (int i = 0; i < 500 && impl_->invocations_open > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  impl_->pool.stop();
  // Creates still waiting for DPAT get their answers (or a 502, cancelled).
  impl_->engine.stop(std::chrono::seconds(5));
  impl_->monitor_pool.stop();
}

const Config& Service::config() const { return impl_->config; }

http::Handler Service::handler() {
  auto impl = impl_;
  return [impl](http::Request&& req, http::Responder respond) { impl->handle(std::move(req), std::move(respond)); };
}

http::Options Service::http_options() const {
  const auto& s = impl_->config.server;
  http::Options o;
  o.listen = s.listen;
  o.io_threads = s.io_threads;
  o.body_limit = s.body_limit;
  o.read_timeout = s.read_timeout;
  o.idle_timeout = s.idle_timeout;
  if (!s.tls_cert.empty()) {
    o.tls_cert = s.tls_cert;
    o.tls_key = s.tls_key;
  }
  o.default_headers = {{"X-Sectra-ApiVersion", kApiVersion}, {"X-Sectra-SoftwareVersion", kSoftwareVersion}};
  std::weak_ptr<Impl> weak = impl_;
  o.on_error = [weak](unsigned status, std::string message) {
    if (auto impl = weak.lock()) impl->log->info("request refused by the HTTP layer: {} {}", status, message);
    return error_answer(status, message);
  };
  o.on_complete = [weak](const http::Completed& c) {
    if (auto impl = weak.lock()) impl->metrics.request(impl->route_label(c.path), c.status, c.elapsed);
  };
  return o;
}

}  // namespace iaserve::server
