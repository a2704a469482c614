#include "iaapi/client.hpp"

#include "iaapi/curl_loop.hpp"
#include "iaapi/exchange.hpp"
#include "iaapi/download.hpp"
#include "iaapi/log.hpp"
#include "iaapi/multipart.hpp"
#include "iaapi/version.hpp"
#include "iaapi/text.hpp"

#include <curl/curl.h>

#include <spdlog/spdlog.h>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <deque>
#include <ctime>
#include <exception>
#include <condition_variable>
#include <map>
#include <unordered_map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

namespace iaserve::iaapi {

const char* to_string(CallbackErrorKind kind) {
  switch (kind) {
    case CallbackErrorKind::token_expired:
      return "token_expired";
    case CallbackErrorKind::not_found:
      return "not_found";
    case CallbackErrorKind::conflict:
      return "conflict";
    case CallbackErrorKind::throttled:
      return "throttled";
    case CallbackErrorKind::client:
      return "client";
    case CallbackErrorKind::server:
      return "server";
    case CallbackErrorKind::transport:
      return "transport";
    case CallbackErrorKind::protocol:
      return "protocol";
    case CallbackErrorKind::cancelled:
      return "cancelled";
  }
  return "unknown";
}

std::string url_encode(std::string_view s) {
  static const char* hex = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;

std::shared_ptr<spdlog::logger> logger() {
  return log::get("iaapi");
}


const char* reason(long status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 406:
      return "Not Acceptable";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 412:
      return "Precondition Failed";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "";
  }
}

std::string status_text(long status) {
  std::string s = std::to_string(status);
  const char* r = reason(status);
  if (*r) s.append(" ").append(r);
  return s;
}

// What an error answer says, for the message: {"error": "..."} when DPAT
// sends JSON, else the start of the body, printable characters only.
std::string error_detail(const std::string& body) {
  if (body.empty()) return {};
  auto parsed = parse_json(body, 8);
  if (parsed && parsed.value->is_object()) {
    const auto& o = parsed.value->get_object();
    for (const char* key : {"error", "message", "title", "detail"}) {
      auto it = o.find(key);
      if (it != o.end() && it->value().is_string()) {
        return clip_utf8(it->value().get_string(), 300);
      }
    }
  }
  std::string s;
  for (char ch : utf8_prefix(body, 200)) {
    auto c = static_cast<unsigned char>(ch);
    s += (c < 0x20 || c == 0x7f) ? ' ' : ch;
  }
  while (!s.empty() && s.back() == ' ') s.pop_back();
  if (body.size() > 200) s += "...";
  return valid_utf8(s);  // an error page in Latin-1, say
}

CallbackErrorKind kind_for(long status) {
  if (status == 401) return CallbackErrorKind::token_expired;
  if (status == 404) return CallbackErrorKind::not_found;
  if (status == 409) return CallbackErrorKind::conflict;
  if (status == 429) return CallbackErrorKind::throttled;
  if (status >= 500) return CallbackErrorKind::server;
  if (status >= 400) return CallbackErrorKind::client;
  return CallbackErrorKind::protocol;  // 1xx/2xx/3xx we did not expect
}

// Seconds to wait from a Retry-After value (delta-seconds or an HTTP date).
std::optional<std::chrono::milliseconds> parse_retry_after(const std::string& v) {
  if (v.empty()) return std::nullopt;
  if (std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    if (v.size() > 9) return std::chrono::hours(24 * 365);
    return std::chrono::seconds(std::stol(v));
  }
  const time_t when = curl_getdate(v.c_str(), nullptr);
  if (when < 0) return std::nullopt;
  const time_t now = std::time(nullptr);
  return std::chrono::seconds(when > now ? when - now : 0);
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

// ---- one HTTP exchange -------------------------------------------------------

using detail::Response;

// Jitter needs spread between clients, not secrecy: a clock and counter seed
// avoids opening the kernel's random device for every client (one per create).
std::uint64_t detail::jitter_seed() {
  static std::atomic<std::uint64_t> counter{0};
  auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return now ^ (++counter * 0x9E3779B97F4A7C15ull);
}

// State of one running exchange, read by the curl callbacks.
struct Exchange {
  const ClientOptions* options = nullptr;
  CURL* handle = nullptr;  // the easy handle carrying it
  Response response;
  StreamSink* sink = nullptr;
  std::vector<long> sink_ok;  // statuses whose body goes to the sink (the call's ok)
  bool sink_started = false;
  bool too_large = false;
  std::exception_ptr error;  // thrown by the sink inside a callback
};

namespace {

// What curl's callbacks do; nothing may be thrown through curl's C frames.
size_t header_line(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  std::string_view line(data, size * n);
  if (line.starts_with("HTTP/")) {  // a new response (after 100 Continue)
    ex->response.headers.clear();
    return size * n;
  }
  const auto colon = line.find(':');
  if (colon == std::string_view::npos) return size * n;
  std::string name = lower(std::string(line.substr(0, colon)));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
    value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
    value.remove_suffix(1);
  ex->response.headers.emplace_back(std::move(name), std::string(value));
  return size * n;
}

size_t body_part(char* data, size_t size, size_t n, void* user) {
  auto* ex = static_cast<Exchange*>(user);
  const size_t len = size * n;
  if (ex->sink && !ex->sink_started) {
    curl_easy_getinfo(ex->handle, CURLINFO_RESPONSE_CODE, &ex->response.status);
    // Only an accepted answer is the file: a 206 or 203 is not (and
    // must never be recorded as a finished download).
    if (std::find(ex->sink_ok.begin(), ex->sink_ok.end(), ex->response.status) != ex->sink_ok.end()) {
      ex->sink_started = true;
      try {
        ex->sink->begin(ex->response.status, ex->response.headers);
      } catch (...) {
        ex->error = std::current_exception();
        return 0;
      }
    }
  }
  if (ex->sink_started) {
    try {
      ex->sink->data(data, len);
    } catch (...) {
      ex->error = std::current_exception();
      return 0;
    }
    return len;
  }
  // Buffered answer (JSON, image, or an error body of a streamed route).
  const std::size_t limit = ex->sink ? 64 * 1024 : ex->options->max_body_bytes;
  if (ex->response.body.size() + len > limit) {
    if (ex->sink) {  // an error body: keep its start for the message
      ex->response.body.append(data, std::min(len, limit - ex->response.body.size()));
      return len;
    }
    ex->too_large = true;
    return 0;
  }
  ex->response.body.append(data, len);
  return len;
}

// A failure (out of memory) ends the transfer with the exception kept for the caller.
template <size_t (*Fn)(char*, size_t, size_t, void*)>
size_t guarded_callback(char* data, size_t size, size_t n, void* user) {
  try {
    return Fn(data, size, n, user);
  } catch (...) {
    static_cast<Exchange*>(user)->error = std::current_exception();
    return 0;
  }
}
constexpr auto on_header = &guarded_callback<header_line>;
constexpr auto on_body = &guarded_callback<body_part>;

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* ex = static_cast<Exchange*>(user);
  return ex->options->cancelled && ex->options->cancelled() ? 1 : 0;
}

// Sets handle h up for one request (headers, timeouts, TLS, the
// callbacks filling ex); the headers list to free after the transfer.
curl_slist* setup_transfer(CURL* h, const ClientOptions& options, const std::string& url, const std::string& token,
                           const char* method, const std::string* body, bool json_answer, Exchange& ex,
                           char* errbuf) {
  curl_slist* headers = nullptr;
  const std::string auth = "Authorization: Bearer " + token;
  const std::string api = std::string("X-Sectra-ApiVersion: ") + kApiVersion;
  headers = curl_slist_append(headers, auth.c_str());
  headers = curl_slist_append(headers, api.c_str());
  headers = curl_slist_append(headers, json_answer ? "Accept: application/json" : "Accept: */*");
  headers = curl_slist_append(headers, "Expect:");
  if (body) headers = curl_slist_append(headers, "Content-Type: application/json");
  const std::string agent = std::string("iaserve/") + kSoftwareVersion;

  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_USERAGENT, agent.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
  // On a kept-alive connection that dies after the request went out, curl
  // sends it again on a new one: for a POST (a new result) DPAT may have
  // stored the first. A POST takes a fresh connection: nothing to resend.
  curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, std::string_view(method) == "POST" ? 1L : 0L);
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body->size()));
    if (std::string_view(method) != "POST") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  } else if (std::string_view(method) == "GET") {
    curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
  } else {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  }
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(options.connect_timeout.count()));
  const auto total = ex.sink ? options.download_timeout : options.total_timeout;
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(total.count()));
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, options.low_speed_bytes);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME,
                   static_cast<long>(options.low_speed_time.count()));
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, options.verify_tls ? 1L : 0L);
  curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, options.verify_tls ? 2L : 0L);
  if (!options.ca_file.empty()) curl_easy_setopt(h, CURLOPT_CAINFO, options.ca_file.c_str());
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &ex);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &ex);
  if (options.cancelled) {
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, &on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, &ex);
  }
  if (ex.sink) curl_easy_setopt(h, CURLOPT_BUFFERSIZE, 64L * 1024);

  errbuf[0] = 0;
  return headers;
}

// The attempt as the shared rules see it.
detail::Attempt curl_attempt(CURLcode rc, const char* errbuf, Exchange& ex) {
  using detail::Failure;
  detail::Attempt a;
  a.response = &ex.response;
  if (rc == CURLE_OK) return a;
  if (rc == CURLE_ABORTED_BY_CALLBACK) {
    a.failure = Failure::cancelled;
  } else if (ex.too_large) {
    a.failure = Failure::too_large;
  } else {
    a.what = errbuf[0] ? std::string(errbuf) : curl_easy_strerror(rc);
    if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE || rc == CURLE_UNSUPPORTED_PROTOCOL ||
        rc == CURLE_URL_MALFORMAT)
      a.failure = Failure::fatal;
    else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
      a.failure = Failure::unreached;
    else
      a.failure = Failure::other;
  }
  return a;
}

// How a call ends when ClientOptions::cancelled or the engine's stop says so.
CallbackError cancelled_by(const std::string& step) {
  return CallbackError(CallbackErrorKind::cancelled, 0, step + ": cancelled");
}

}  // namespace

std::exception_ptr detail::cancelled_error(const std::string& step) {
  return std::make_exception_ptr(cancelled_by(step));
}

detail::Verdict detail::judge(const std::string& step, bool idempotent, int attempt,
                              std::chrono::milliseconds waited, const Attempt& a, const std::vector<long>& ok,
                              const ClientOptions& options, std::mt19937_64& rng) {
  std::string what;  // failure text when retryable
  long status = 0;
  bool retryable = false;
  std::optional<std::chrono::milliseconds> retry_after;
  if (a.failure != Failure::none) {
    if (a.failure == Failure::cancelled) throw cancelled_by(step);
    if (a.failure == Failure::too_large)
      throw CallbackError(CallbackErrorKind::protocol, a.response ? a.response->status : 0,
                          step + ": answer larger than " + std::to_string(options.max_body_bytes) + " bytes");
    what = a.what;
    if (a.failure == Failure::fatal) throw CallbackError(CallbackErrorKind::transport, 0, step + ": " + what);
    retryable = idempotent || a.failure == Failure::unreached;
  } else {
    const Response& r = *a.response;
    status = r.status;
    if (std::find(ok.begin(), ok.end(), status) != ok.end()) return Verdict{true, {}};
    what = status_text(status);
    const std::string detail = error_detail(r.body);
    if (!detail.empty()) what += ": " + detail;
    if (status == 429 || status >= 500) {
      retryable = idempotent || status == 429 || status == 503;
      retry_after = parse_retry_after(r.header("retry-after"));
    } else {
      throw CallbackError(kind_for(status), status, step + ": " + what);
    }
  }
  const CallbackErrorKind kind = status ? kind_for(status) : CallbackErrorKind::transport;
  const std::string attempts = attempt > 1 ? " (after " + std::to_string(attempt) + " attempts)" : "";
  if (!retryable || attempt >= options.max_attempts) throw CallbackError(kind, status, step + ": " + what + attempts);
  // Exponential backoff with jitter; Retry-After wins when given.
  const double exp_ms =
      std::min<double>(static_cast<double>(options.backoff_max.count()),
                       static_cast<double>(options.backoff_initial.count()) * (1u << std::min(attempt - 1, 20)));
  std::uniform_real_distribution<double> jitter(0.5, 1.0);
  auto delay = std::chrono::milliseconds(static_cast<long>(exp_ms * jitter(rng)));
  if (retry_after) delay = *retry_after;
  // The budget is the waiting between attempts, not the attempts: a
  // download that breaks after ten minutes is still worth another try.
  if (waited + delay > options.max_retry_time)
    throw CallbackError(kind, status,
                        step + ": " + what + attempts + " (next retry in " + std::to_string(delay.count()) +
                            " ms would exceed the " + std::to_string(options.max_retry_time.count()) + " ms budget)");
  logger()->warn("{}: {}; retry {}/{} in {} ms", step, what, attempt, options.max_attempts - 1, delay.count());
  return Verdict{false, delay};
}

struct CallbackClient::Impl {
  CallbackInfo callback;
  ClientOptions options;
  std::string base;  // callback.url without trailing '/'
  CURL* curl = nullptr;  // its kept-alive connection lives in it
  std::uint64_t requests = 0;
  std::mt19937_64 rng{detail::jitter_seed()};

  Impl(CallbackInfo cb, ClientOptions opt) : options(std::move(opt)) {
    curl_global_once();
    bind(std::move(cb));
    curl = curl_easy_init();
    if (!curl) throw std::runtime_error("callback client: curl_easy_init failed");
    if (!options.verify_tls) {
      static std::once_flag warned;
      std::call_once(warned, [] {
        logger()->warn(
            "TLS certificate verification of the DPAT callback API is OFF: "
            "anyone on the path can read the slides and the bearer tokens");
      });
    }
    if (options.max_attempts < 1) options.max_attempts = 1;
  }
  ~Impl() {
    if (curl) curl_easy_cleanup(curl);
  }

  void bind(CallbackInfo cb) {
    std::string b = cb.url;
    while (!b.empty() && b.back() == '/') b.pop_back();
    if (b.empty()) throw std::invalid_argument("callback client: empty callback url");
    callback = std::move(cb);
    base = std::move(b);
  }

  bool cancelled() const { return options.cancelled && options.cancelled(); }

  // One attempt. Fills ex; returns curl's code.
  CURLcode perform(const char* method, const std::string& path, const std::string* body,
                   bool json_answer, Exchange& ex, char* errbuf) {
    ex.handle = curl;
    curl_easy_reset(curl);  // the connection stays in the handle's cache
    ex.options = &options;
    ++requests;
    curl_slist* headers =
        setup_transfer(curl, options, base + path, callback.token, method, body, json_answer, ex, errbuf);
    const CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &ex.response.status);
    curl_slist_free_all(headers);
    return rc;
  }

  void sleep_for(std::chrono::milliseconds d, const std::string& step) {
    const auto until = Clock::now() + d;
    while (Clock::now() < until) {
      if (cancelled()) throw cancelled_by(step);
      std::this_thread::sleep_for(
          std::min<Clock::duration>(std::chrono::milliseconds(50), until - Clock::now()));
    }
  }

  // The request with its retries; answers with a status in `ok` or throws.
  Response call(const char* method, const std::string& path, const std::string* body,
                std::initializer_list<long> ok, bool json_answer = true,
                StreamSink* sink = nullptr) {
    const std::string step = std::string(method) + " " + path;
    const bool idempotent = std::string_view(method) != "POST";
    std::chrono::milliseconds waited{0};  // in backoff so far
    const std::vector<long> ok_list(ok);
    char errbuf[CURL_ERROR_SIZE];
    for (int attempt = 1;; ++attempt) {
      if (cancelled()) throw cancelled_by(step);
      Exchange ex;
      ex.options = &options;
      ex.sink = sink;
      ex.sink_ok.assign(ok.begin(), ok.end());
      const CURLcode rc = perform(method, path, body, json_answer, ex, errbuf);
      if (rc == CURLE_OK && sink && !ex.sink_started &&
          std::find(ok.begin(), ok.end(), ex.response.status) != ok.end()) {
        // An empty 2xx body: no write callback ran.
        try {
          ex.sink_started = true;
          sink->begin(ex.response.status, ex.response.headers);
        } catch (...) {
          ex.error = std::current_exception();
        }
      }
      if (rc == CURLE_OK && ex.sink_started && !ex.error) {
        try {
          sink->end();
        } catch (...) {
          ex.error = std::current_exception();
        }
      }
      if (sink && (rc != CURLE_OK || ex.error || !ex.sink_started)) sink->abort();
      if (ex.error) rethrow_with_step(step, ex.error);

      const detail::Verdict v =
          detail::judge(step, idempotent, attempt, waited, curl_attempt(rc, errbuf, ex), ok_list, options, rng);
      if (v.accept) return std::move(ex.response);
      const auto delay = v.retry_in;
      sleep_for(delay, step);
      waited += delay;
    }
  }

  [[noreturn]] static void rethrow_with_step(const std::string& step, std::exception_ptr e) {
    try {
      std::rethrow_exception(e);
    } catch (const CallbackError&) {
      throw;
    } catch (const MultipartError& m) {
      throw CallbackError(CallbackErrorKind::protocol, 0, step + ": " + m.what());
    }
  }

  template <class T>
  T decode_answer(const std::string& step, const Response& r) {
    auto d = decode_body<T>(r.body);
    if (!d)
      throw CallbackError(CallbackErrorKind::protocol, r.status,
                          step + ": malformed answer: " + d.error.what());
    return std::move(*d.value);
  }
};

// ---- the routes --------------------------------------------------------------

CallbackClient::CallbackClient(CallbackInfo callback, ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(callback), std::move(options))) {}
CallbackClient::~CallbackClient() = default;
CallbackClient::CallbackClient(CallbackClient&&) noexcept = default;
CallbackClient& CallbackClient::operator=(CallbackClient&&) noexcept = default;

void CallbackClient::rebind(CallbackInfo callback) { impl_->bind(std::move(callback)); }
const CallbackInfo& CallbackClient::callback() const { return impl_->callback; }

std::uint64_t CallbackClient::requests_sent() const {
  return impl_->requests;
}

ApplicationInfo CallbackClient::get_info() {
  const std::string path = "/info";
  auto r = impl_->call("GET", path, nullptr, {200});
  return impl_->decode_answer<ApplicationInfo>("GET " + path, r);
}

ImageInfo CallbackClient::get_image_info(std::string_view slide_id, bool extended,
                                         bool include_phi) {
  std::string path = "/slides/" + url_encode(slide_id) + "/info";
  std::string query;
  if (extended) query += "scope=extended";
  if (include_phi) query += std::string(query.empty() ? "" : "&") + "includePHI=true";
  if (!query.empty()) path += "?" + query;
  auto r = impl_->call("GET", path, nullptr, {200});
  return impl_->decode_answer<ImageInfo>("GET " + path, r);
}

std::optional<Bytes> CallbackClient::get_label(std::string_view slide_id) {
  const std::string path = "/slides/" + url_encode(slide_id) + "/label";
  auto r = impl_->call("GET", path, nullptr, {200, 204}, false);
  if (r.status == 204) return std::nullopt;
  return Bytes(r.body.begin(), r.body.end());
}

Bytes CallbackClient::get_tile(std::string_view slide_id, int level, int col, int row,
                               std::string_view ext, std::optional<int> focal_plane,
                               std::string_view optical_path) {
  std::string path = "/images/" + url_encode(slide_id) + "_files/" + std::to_string(level) + "/" +
                     std::to_string(col) + "_" + std::to_string(row);
  if (focal_plane) path += "_" + std::to_string(*focal_plane);
  path += "." + url_encode(ext);
  if (!optical_path.empty()) path += "?opticalPath=" + url_encode(optical_path);
  auto r = impl_->call("GET", path, nullptr, {200}, false);
  return Bytes(r.body.begin(), r.body.end());
}

std::vector<StoredResult> CallbackClient::list_results(std::string_view app_id,
                                                       std::string_view slide_id) {
  const std::string path =
      "/applications/" + url_encode(app_id) + "/results/slide/" + url_encode(slide_id);
  auto r = impl_->call("GET", path, nullptr, {200});
  return impl_->decode_answer<std::vector<StoredResult>>("GET " + path, r);
}

StoredResult CallbackClient::get_result(std::string_view app_id, std::int64_t id) {
  const std::string path = "/applications/" + url_encode(app_id) + "/results/" + std::to_string(id);
  auto r = impl_->call("GET", path, nullptr, {200});
  return impl_->decode_answer<StoredResult>("GET " + path, r);
}

StoredResult CallbackClient::create_result(std::string_view app_id, const Result& result) {
  const std::string path = "/applications/" + url_encode(app_id) + "/results";
  const std::string body = boost::json::serialize(to_json(result));
  auto r = impl_->call("POST", path, &body, {201, 200});
  return impl_->decode_answer<StoredResult>("POST " + path, r);
}

StoredResult CallbackClient::update_result(std::string_view app_id, const StoredResult& result) {
  const std::string path =
      "/applications/" + url_encode(app_id) + "/results/" + std::to_string(result.id);
  const std::string body = boost::json::serialize(to_json(result));
  auto r = impl_->call("PUT", path, &body, {200, 201});
  return impl_->decode_answer<StoredResult>("PUT " + path, r);
}

StoredResult CallbackClient::upsert_result(std::string_view app_id, std::string_view slide_id,
                                           const Result& result) {
  constexpr int kConflictRetries = 2;
  for (int round = 0;; ++round) {
    const auto list = list_results(app_id, slide_id);
    if (list.empty()) {
      StoredResult created = create_result(app_id, result);
      return created;
    }
    const auto newest =
        std::max_element(list.begin(), list.end(),
                         [](const StoredResult& a, const StoredResult& b) { return a.id < b.id; });
    StoredResult s;
    static_cast<Result&>(s) = result;
    if (s.slide_id.empty()) s.slide_id = std::string(slide_id);
    s.id = newest->id;
    s.version_id = newest->version_id;
    try {
      return update_result(app_id, s);
    } catch (const CallbackError& e) {
      if (e.kind() != CallbackErrorKind::conflict || round >= kConflictRetries) throw;
      logger()->info("result {} of {} on slide {} changed meanwhile ({}); listing again", s.id,
                     app_id, slide_id, e.what());
    }
  }
}

std::vector<CaseImageInfo> CallbackClient::get_case_images(std::string_view accession_number,
                                                           bool include_phi,
                                                           std::string_view issuer_id) {
  std::string path = "/requests/" + url_encode(accession_number) + "/images/info";
  std::string query;
  if (include_phi) query += "includePHI=true";
  if (!issuer_id.empty())
    query +=
        std::string(query.empty() ? "" : "&") + "accessionNumberIssuerId=" + url_encode(issuer_id);
  if (!query.empty()) path += "?" + query;
  auto r = impl_->call("GET", path, nullptr, {200});
  return impl_->decode_answer<std::vector<CaseImageInfo>>("GET " + path, r);
}

std::vector<CaseImageInfo> CallbackClient::get_slide_case_images(std::string_view slide_id) {
  const std::string path = "/slides/" + url_encode(slide_id) + "/request/images/info";
  auto r = impl_->call("GET", path, nullptr, {200});
  return impl_->decode_answer<std::vector<CaseImageInfo>>("GET " + path, r);
}

void CallbackClient::put_quality_control(std::string_view slide_id, const QualityControl& qc) {
  const std::string path = "/slides/" + url_encode(slide_id) + "/qualityControl";
  const std::string body = boost::json::serialize(to_json(qc));
  impl_->call("PUT", path, &body, {200, 201, 204});
}

std::vector<std::filesystem::path> CallbackClient::download_files(
    std::string_view slide_id, const std::filesystem::path& folder, const ProgressFn& progress) {
  const std::string path = "/slides/" + url_encode(slide_id) + "/files";
  FileDownload dl(folder, slide_id, progress);
  if (auto done = dl.already_complete()) {
    logger()->debug("slide {}: {} file(s) already in {}", slide_id, done->size(), folder.string());
    return *done;
  }
  impl_->call("GET", path, nullptr, {200}, false, &dl);
  return dl.files();
}

}  // namespace iaserve::iaapi


// ---- the engine: many calls, each lane on one thread ---------------------------

namespace iaserve::iaapi {

void detail::EngineCore::complete(EngineCall& call, Response* r, std::exception_ptr error, bool counted) {
  try {
    call.done(r, std::move(error));
  } catch (const std::exception& e) {
    logger()->error("{}: completion threw: {}", call.step, e.what());
  } catch (...) {
    logger()->error("{}: completion threw", call.step);
  }
  if (!counted) return;
  std::lock_guard lock(mutex);
  if (--in_flight == 0) drained.notify_all();
}

namespace {

using detail::EngineCall;
using detail::EngineCore;

// Every call curl carries (https, or any call when a proxy is configured):
// one curl multi handle driven by epoll.
class CurlLane final : public detail::EngineLane {
 public:
  CurlLane(EngineCore& core, std::size_t max_transfers) : core_(core), max_transfers_(max_transfers) {
    curl_multi_setopt(loop_.multi(), CURLMOPT_MAXCONNECTS, static_cast<long>(max_transfers_));
    thread_ = std::thread([this] { run(); });
    thread_id_ = thread_.get_id();
  }
  ~CurlLane() override {
    finish();
    for (CURL* h : spare_) curl_easy_cleanup(h);
  }

  // Its own copy of the id: thread_.join() in finish() writes thread_'s. Set
  // before the lane is handed out, so before any call reaches either thread.
  bool on_thread() const override { return std::this_thread::get_id() == thread_id_; }

  void take(std::unique_ptr<EngineCall> call) override {
    incoming_.push_back(std::move(call));
    // The loop takes new calls before it waits (see step): wake it only
    // when it waits, or is about to, and only from another thread.
    if (!on_thread() && sleeping_.exchange(false)) loop_.wake();
  }

  void finish() override {
    loop_.wake();
    if (thread_.joinable()) thread_.join();
  }

 private:
  struct Transfer {
    std::unique_ptr<EngineCall> call;
    curl_slist* headers = nullptr;
    Exchange ex;
    char errbuf[CURL_ERROR_SIZE] = {};
  };

  EngineCore& core_;
  CurlLoop loop_;  // the transfers' sockets and wake-ups; loop_.multi() drives them
  std::atomic<bool> sleeping_{false};  // in the loop's wait, or about to be
  std::thread thread_;
  std::thread::id thread_id_;
  std::mt19937_64 rng_{detail::jitter_seed()};
  std::vector<std::unique_ptr<EngineCall>> incoming_;  // guarded by core_.mutex

  // The thread's own.
  std::unordered_map<CURL*, std::unique_ptr<Transfer>> running_;
  std::multimap<Clock::time_point, std::unique_ptr<EngineCall>> retries_;
  // Calls waiting for one of the max_transfers places: they wait here, not
  // inside curl, so their timeouts start when their requests do.
  std::deque<std::unique_ptr<EngineCall>> waiting_;
  std::size_t max_transfers_ = 16;
  std::vector<CURL*> spare_;

  void launch(std::unique_ptr<EngineCall> call) {
    CURL* h = nullptr;
    if (!spare_.empty()) {
      h = spare_.back();
      spare_.pop_back();
      curl_easy_reset(h);
    } else if (!(h = curl_easy_init())) {
      core_.complete(*call, nullptr,
                     std::make_exception_ptr(CallbackError(CallbackErrorKind::transport, 0,
                                                           call->step + ": curl_easy_init failed")));
      return;
    }
    ++call->attempt;
    auto t = std::make_unique<Transfer>();
    t->call = std::move(call);
    t->ex.options = &core_.options;
    t->ex.handle = h;
    Transfer* raw = t.get();
    try {
      EngineCall& c = *raw->call;
      raw->headers = setup_transfer(h, core_.options, c.url, c.token, c.method, c.body ? &*c.body : nullptr,
                                    true, raw->ex, raw->errbuf);
      running_.emplace(h, std::move(t));  // owned there before curl writes into its exchange
      ++core_.requests;
      if (const CURLMcode mc = curl_multi_add_handle(loop_.multi(), h); mc != CURLM_OK) {
        t = std::move(running_.extract(h).mapped());
        throw CallbackError(CallbackErrorKind::transport, 0, c.step + ": " + curl_multi_strerror(mc));
      }
    } catch (...) {
      if (!t) {
        auto node = running_.extract(h);
        if (node.empty()) throw;  // lost in a failed emplace (out of memory): the loop logs it
        t = std::move(node.mapped());
      }
      curl_slist_free_all(t->headers);
      spare_.push_back(h);
      core_.complete(*t->call, nullptr, std::current_exception());
    }
  }

  void land(CURL* h, CURLcode rc) {
    auto node = running_.extract(h);
    curl_multi_remove_handle(loop_.multi(), h);
    spare_.push_back(h);
    if (node.empty()) return;
    std::unique_ptr<Transfer> t = std::move(node.mapped());
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &t->ex.response.status);
    curl_slist_free_all(t->headers);
    EngineCall& call = *t->call;
    try {
      if (t->ex.error) std::rethrow_exception(t->ex.error);  // from a curl callback
      const detail::Verdict v =
          detail::judge(call.step, std::string_view(call.method) != "POST", call.attempt, call.waited,
                        curl_attempt(rc, t->errbuf, t->ex), call.ok, core_.options, rng_);
      if (v.accept) {
        core_.complete(call, &t->ex.response, nullptr);
        return;
      }
      call.waited += v.retry_in;
      retries_.emplace(Clock::now() + v.retry_in, std::move(t->call));
    } catch (...) {
      if (t->call) core_.complete(*t->call, nullptr, std::current_exception());
    }
  }

  void cancel_all() {
    for (auto& [h, t] : running_) {
      curl_multi_remove_handle(loop_.multi(), h);
      curl_slist_free_all(t->headers);
      spare_.push_back(h);
      core_.cancel(*t->call);
    }
    running_.clear();
    for (auto& [due, call] : retries_) core_.cancel(*call);
    retries_.clear();
    for (auto& call : waiting_) core_.cancel(*call);
    waiting_.clear();
    // Completions run above start no more calls (cancel_now is set).
    std::vector<std::unique_ptr<EngineCall>> left;
    {
      std::lock_guard lock(core_.mutex);
      left.swap(incoming_);
    }
    for (auto& call : left) core_.cancel(*call);
  }

  void run() {
    for (;;) {
      {
        std::lock_guard lock(core_.mutex);
        if (core_.cancel_now) break;
        for (auto& call : incoming_) waiting_.push_back(std::move(call));
        incoming_.clear();
      }
      try {
        step();
      } catch (const std::exception& e) {  // out of memory, most likely: go on
        logger()->error("callback engine: {}", e.what());
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    cancel_all();
  }

  // One turn: start what may start, wait for sockets, timers or new calls,
  // move the transfers that are ready.
  void step() {
    const auto now = Clock::now();
    while (!retries_.empty() && retries_.begin()->first <= now) {
      waiting_.push_back(std::move(retries_.begin()->second));
      retries_.erase(retries_.begin());
    }
    while (!waiting_.empty() && running_.size() < max_transfers_) {
      auto call = std::move(waiting_.front());
      waiting_.pop_front();
      launch(std::move(call));  // curl asks for its timer at once
    }
    auto wait = std::chrono::milliseconds(1000);
    if (!retries_.empty())
      wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(
                                std::max(retries_.begin()->first - Clock::now(), Clock::duration::zero())));
    sleeping_.store(true);
    {
      std::lock_guard lock(core_.mutex);  // a call taken before this is seen; one after wakes us
      if (!incoming_.empty() || core_.cancel_now) wait = std::chrono::milliseconds(0);
    }
    loop_.turn(wait);
    sleeping_.store(false);
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(loop_.multi(), &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      CURL* h = m->easy_handle;
      const CURLcode rc = m->data.result;
      land(h, rc);  // m is invalid from here on
    }
  }
};

}  // namespace

struct CallbackEngine::Impl {
  EngineCore core;
  std::unique_ptr<CurlLane> curl;
  std::unique_ptr<detail::EngineLane> http;  // plain http://, when no proxy is configured

  Impl(ClientOptions opt, long max_transfers_wanted) {
    curl_global_once();
    core.options = std::move(opt);
    if (core.options.max_attempts < 1) core.options.max_attempts = 1;
    const auto max_transfers = static_cast<std::size_t>(std::max(max_transfers_wanted, 1L));
    if (!core.options.verify_tls)
      logger()->warn("TLS certificate verification of the DPAT callback API is OFF");
    curl = std::make_unique<CurlLane>(core, max_transfers);
    http = detail::make_http_lane(core, max_transfers);
  }

  ~Impl() { stop(std::chrono::milliseconds(0)); }

  void stop(std::chrono::milliseconds grace) {
    {
      std::unique_lock lock(core.mutex);
      core.accepting = false;
      core.drained.wait_for(lock, grace, [this] { return core.in_flight == 0; });
      core.cancel_now = true;
    }
    curl->finish();
    if (http) http->finish();
  }

  // A call started from a completion (the next step of a sequence) is still
  // taken while stop() gives the calls in flight their grace; others not.
  void submit(std::unique_ptr<EngineCall> call) {
    const bool on_engine = curl->on_thread() || (http && http->on_thread());
    if (http) call->http = detail::parse_http_target(call->url);
    detail::EngineLane& lane = call->http ? *http : static_cast<detail::EngineLane&>(*curl);
    {
      std::lock_guard lock(core.mutex);
      const bool continuation = on_engine && !core.cancel_now;
      if (core.accepting || continuation) {
        ++core.in_flight;
        lane.take(std::move(call));
        return;
      }
    }
    core.complete(*call, nullptr, detail::cancelled_error(call->step), false);  // the engine is stopping
  }

  template <class T>
  void send(const CallbackInfo& cb, const char* method, std::string path, std::optional<std::string> body,
            std::vector<long> ok, Done<T> done) {
    auto call = std::make_unique<EngineCall>();
    std::string base = cb.url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    if (base.empty()) throw std::invalid_argument("callback engine: empty callback url");
    call->url = base + path;
    call->token = cb.token;
    call->method = method;
    call->step = std::string(method) + " " + path;
    call->body = std::move(body);
    call->ok = std::move(ok);
    call->done = [done = std::move(done), step = call->step](Response* r,
                                                             std::exception_ptr error) {
      CallOutcome<T> o;
      if (error) {
        o.error = std::move(error);
      } else {
        auto d = decode_body<T>(r->body);
        if (d)
          o.value = std::move(*d.value);
        else
          o.error = std::make_exception_ptr(
              CallbackError(CallbackErrorKind::protocol, r->status,
                            step + ": malformed answer: " + d.error.what()));
      }
      done(std::move(o));
    };
    submit(std::move(call));
  }
};

CallbackEngine::CallbackEngine(ClientOptions options, long max_transfers_wanted)
    : impl_(std::make_unique<Impl>(std::move(options), max_transfers_wanted)) {}
CallbackEngine::~CallbackEngine() = default;

void CallbackEngine::stop(std::chrono::milliseconds grace) {
  impl_->stop(grace);
}
std::size_t CallbackEngine::in_flight() const {
  return impl_->core.in_flight;
}
std::uint64_t CallbackEngine::requests_sent() const {
  return impl_->core.requests;
}

void CallbackEngine::list_results(const CallbackInfo& cb, std::string_view app_id,
                                  std::string_view slide_id, Done<std::vector<StoredResult>> done) {
  impl_->send(cb, "GET",
              "/applications/" + url_encode(app_id) + "/results/slide/" + url_encode(slide_id),
              std::nullopt, {200}, std::move(done));
}

void CallbackEngine::image_info(const CallbackInfo& cb, std::string_view slide_id,
                                Done<ImageInfo> done) {
  impl_->send(cb, "GET", "/slides/" + url_encode(slide_id) + "/info", std::nullopt, {200},
              std::move(done));
}

void CallbackEngine::create_result(const CallbackInfo& cb, std::string_view app_id,
                                   const Result& result, Done<StoredResult> done) {
  impl_->send(cb, "POST", "/applications/" + url_encode(app_id) + "/results",
              boost::json::serialize(to_json(result)), {201, 200},
              std::move(done));
}

void CallbackEngine::update_result(const CallbackInfo& cb, std::string_view app_id,
                                   const StoredResult& result, Done<StoredResult> done) {
  impl_->send(cb, "PUT",
              "/applications/" + url_encode(app_id) + "/results/" + std::to_string(result.id),
              boost::json::serialize(to_json(result)), {200, 201}, std::move(done));
}

}  // namespace iaserve::iaapi
