// The callback engine's lane for plain http:// callbacks: Beast over Asio on
// one thread, connections kept alive per host. It carries what curl would
// (same headers, timeouts, retries and error texts: detail::judge decides)
// with a few system calls per request instead of curl's polls and epoll
// updates, and no transfer setup. https://, and every call when a proxy is
// configured in the environment, stay on the curl lane.
//
// The second of the two translation units that compile Beast (the other is
// server/http/server.cpp, the inbound side).
#include "iaapi/exchange.hpp"
#include "iaapi/log.hpp"
#include "iaapi/version.hpp"

#include <boost/asio/connect.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>
#include <spdlog/spdlog.h>

#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <deque>
#include <list>
#include <optional>
#include <thread>
#include <unordered_map>

namespace iaserve::iaapi::detail {

std::optional<HttpTarget> parse_http_target(std::string_view url) {
  auto parsed = boost::urls::parse_uri(url);
  if (!parsed) return std::nullopt;
  const auto& u = *parsed;
  if (u.scheme_id() != boost::urls::scheme::http || u.has_userinfo() || !u.has_authority()) return std::nullopt;
  HttpTarget t;
  t.host = u.host_address();
  if (t.host.empty()) return std::nullopt;
  t.port = "80";
  if (u.has_port()) {
    const std::string_view p = u.port();
    if (p.empty() || p.size() > 5 || p.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoul(std::string(p)) > 65535)
      return std::nullopt;
    t.port = p;
  }
  t.authority = u.encoded_host_and_port();
  t.path = u.encoded_target();
  if (t.path.empty()) t.path = "/";
  t.key = t.host + " " + t.port;
  return t;
}

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using error_code = boost::system::error_code;

std::shared_ptr<spdlog::logger> logger() { return log::get("iaapi"); }

bool proxy_configured() {
  // curl's variables for http:// (it ignores HTTP_PROXY in capitals).
  for (const char* name : {"http_proxy", "all_proxy", "ALL_PROXY"}) {
    const char* v = std::getenv(name);
    if (v && *v) return true;
  }
  return false;
}

class HttpLane final : public EngineLane {
 public:
  HttpLane(EngineCore& core, std::size_t max_transfers)
      : core_(core), max_transfers_(max_transfers), guard_(asio::make_work_guard(ioc_)) {
    thread_ = std::thread([this] { run(); });
  }
  ~HttpLane() override { finish(); }

  bool on_thread() const override { return ioc_.get_executor().running_in_this_thread(); }

  void take(std::unique_ptr<EngineCall> call) override {
    asio::post(ioc_, [this, call = std::move(call)]() mutable {
      try {
        waiting_.push_back(std::move(call));
      } catch (...) {  // out of memory: the call ends with that
        return core_.complete(*call, nullptr, std::current_exception());
      }
      pump();
    });
  }

  void finish() override {
    if (!thread_.joinable()) return;
    asio::post(ioc_, [this] { cancel_all(); });
    guard_.reset();
    thread_.join();
  }

 private:
  struct Conn {
    explicit Conn(asio::io_context& ioc) : stream(ioc) {}
    beast::tcp_stream stream;
    beast::flat_buffer buffer;
  };

  // One attempt of one call.
  struct Transfer {
    std::unique_ptr<EngineCall> call;
    const HttpTarget* target = nullptr;  // the call's
    std::unique_ptr<Conn> conn;
    bool reused = false;  // conn was kept alive from an earlier request
    // A name lookup under way: its timer fails the transfer at the connect
    // deadline, and the lookup's late answer then finds `looking` false.
    std::shared_ptr<tcp::resolver> resolver;
    std::shared_ptr<bool> looking;
    std::optional<asio::steady_timer> lookup_timer;
    http::request<http::string_body> request;
    std::optional<http::response_parser<http::string_body>> parser;
    Clock::time_point started, deadline;
    std::list<std::unique_ptr<Transfer>>::iterator self;
  };

  struct Retry {
    explicit Retry(asio::io_context& ioc) : timer(ioc) {}
    std::unique_ptr<EngineCall> call;
    asio::steady_timer timer;
  };

  EngineCore& core_;
  std::size_t max_transfers_;
  mutable asio::io_context ioc_{1};
  asio::executor_work_guard<asio::io_context::executor_type> guard_;
  std::thread thread_;

  // The thread's own.
  std::mt19937_64 rng_{jitter_seed()};
  bool stopped_ = false;
  std::deque<std::unique_ptr<EngineCall>> waiting_;  // for one of the max_transfers places
  std::list<std::unique_ptr<Transfer>> running_;
  std::list<Retry> retries_;
  std::unordered_map<std::string, std::vector<std::unique_ptr<Conn>>> idle_;
  std::size_t idle_count_ = 0;

  void run() {
    for (;;) {
      try {
        ioc_.run();
        return;
      } catch (const std::exception& e) {  // out of memory, most likely: go on
        logger()->error("callback engine (http): {}", e.what());
      }
    }
  }

  void pump() {
    while (!stopped_ && !waiting_.empty() && running_.size() < max_transfers_) {
      auto call = std::move(waiting_.front());
      waiting_.pop_front();
      start(std::move(call));
    }
  }

  void start(std::unique_ptr<EngineCall> call) {
    try {
      begin(call);
    } catch (...) {  // out of memory, before the transfer took the call
      if (call) core_.complete(*call, nullptr, std::current_exception());
    }
  }

  void begin(std::unique_ptr<EngineCall>& call) {
    if (core_.options.cancelled && core_.options.cancelled()) return core_.cancel(*call);
    auto t = std::make_unique<Transfer>();
    Transfer* raw = t.get();
    raw->target = &*call->http;
    build_request(*raw, *call);
    running_.push_front(std::move(t));
    raw->self = running_.begin();
    // Nothing above took the call: a throw there (out of memory) leaves it to start().
    raw->call = std::move(call);
    ++raw->call->attempt;
    ++core_.requests;
    raw->started = Clock::now();
    raw->deadline = raw->started + core_.options.total_timeout;
    if (auto it = idle_.find(raw->target->key); it != idle_.end()) {
      while (!it->second.empty()) {
        auto conn = std::move(it->second.back());
        it->second.pop_back();
        --idle_count_;
        if (!still_open(*conn)) continue;
        raw->conn = std::move(conn);
        raw->reused = true;
        return send(raw);
      }
    }
    connect(raw);
  }

  void build_request(Transfer& t, const EngineCall& call) {
    const std::string_view m = call.method;
    auto& q = t.request;
    q.method(m == "POST" ? http::verb::post : m == "PUT" ? http::verb::put : http::verb::get);
    q.target(t.target->path);
    q.version(11);
    q.set(http::field::host, t.target->authority);
    q.set(http::field::user_agent, std::string("iaserve/") + kSoftwareVersion);
    q.set(http::field::authorization, "Bearer " + call.token);
    q.set("X-Sectra-ApiVersion", kApiVersion);
    q.set(http::field::accept, "application/json");
    if (call.body) {
      q.set(http::field::content_type, "application/json");
      q.body() = *call.body;
      q.prepare_payload();
    }
  }

  long elapsed_ms(const Transfer& t) const {
    return static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t.started).count());
  }

  void connect(Transfer* t) {
    t->conn = std::make_unique<Conn>(ioc_);
    t->reused = false;
    t->conn->stream.expires_at(std::min(t->deadline, Clock::now() + core_.options.connect_timeout));
    error_code ec;
    const auto address = asio::ip::make_address(t->target->host, ec);
    if (!ec) {
      const auto port = static_cast<unsigned short>(std::strtoul(t->target->port.c_str(), nullptr, 10));
      t->conn->stream.async_connect(tcp::endpoint(address, port), [this, t](error_code e) { connected(t, e); });
      return;
    }
    // The stream's expiry does not cover a lookup (Asio runs getaddrinfo on
    // a thread of its own): a timer of its own does.
    t->resolver = std::make_shared<tcp::resolver>(ioc_);
    t->looking = std::make_shared<bool>(true);
    t->lookup_timer.emplace(ioc_);
    t->lookup_timer->expires_at(std::min(t->deadline, Clock::now() + core_.options.connect_timeout));
    t->lookup_timer->async_wait([this, t, looking = t->looking](error_code e) {
      if (e || !*looking) return;  // the lookup ended first
      *looking = false;
      t->resolver->cancel();
      fail(t, stopped_ ? Failure::cancelled : Failure::other,
           "Resolving timed out after " + std::to_string(elapsed_ms(*t)) + " milliseconds");
    });
    t->resolver->async_resolve(
        t->target->host, t->target->port,
        [this, t, looking = t->looking, keep = t->resolver](error_code e, const tcp::resolver::results_type& found) {
          if (!*looking) return;  // timed out or stopped: t is gone
          *looking = false;
          t->lookup_timer->cancel();
          if (stopped_) return fail(t, Failure::cancelled, {});
          if (e) return fail(t, Failure::unreached, "Could not resolve host: " + t->target->host);
          t->conn->stream.async_connect(found, [this, t](error_code e2, const tcp::endpoint&) { connected(t, e2); });
        });
  }

  void connected(Transfer* t, error_code ec) {
    if (stopped_) return fail(t, Failure::cancelled, {});
    if (ec == beast::error::timeout)
      return fail(t, Failure::other, "Connection timed out after " + std::to_string(elapsed_ms(*t)) + " milliseconds");
    if (ec)
      return fail(t, Failure::unreached,
                  "Failed to connect to " + t->target->host + " port " + t->target->port + ": " + ec.message());
    error_code ignored;
    t->conn->stream.socket().set_option(tcp::no_delay(true), ignored);
    t->conn->stream.socket().set_option(asio::socket_base::keep_alive(true), ignored);
    send(t);
  }

  void send(Transfer* t) {
    t->conn->stream.expires_at(t->deadline);
    http::async_write(t->conn->stream, t->request, [this, t](error_code ec, std::size_t) {
      if (stopped_) return fail(t, Failure::cancelled, {});
      if (ec) return broken(t, ec, "Failed sending data to the peer", false);
      receive(t);
    });
  }

  void receive(Transfer* t) {
    t->parser.emplace();
    t->parser->body_limit(core_.options.max_body_bytes);
    t->parser->header_limit(100 * 1024);  // curl's limit
    http::async_read(t->conn->stream, t->conn->buffer, *t->parser, [this, t](error_code ec, std::size_t) {
      if (!ec) {
        const unsigned status = t->parser->get().result_int();
        if (status / 100 == 1 && status != 101) return receive(t);  // 100 Continue, 103: the answer follows
        return answered(t);
      }
      if (stopped_) return fail(t, Failure::cancelled, {});
      if (ec == http::error::body_limit) return fail(t, Failure::too_large, {});
      broken(t, ec, "Recv failure", true);
    });
  }

  // The connection failed under a request. One kept alive from before may
  // have been closed by DPAT meanwhile: then the request goes again, once,
  // on a new connection, as curl does; but not a POST that went out whole
  // (DPAT may have stored it before closing: a second one would be a
  // second result). Such a POST fails, as sent and perhaps acted on.
  void broken(Transfer* t, error_code ec, const std::string& what, bool sent) {
    if (ec == beast::error::timeout)
      return fail(t, Failure::other, "Operation timed out after " + std::to_string(elapsed_ms(*t)) + " milliseconds");
    const bool nothing_back = !t->parser || !t->parser->got_some();
    if (t->reused && nothing_back && !(sent && t->request.method() == http::verb::post)) return connect(t);
    if (ec == http::error::end_of_stream && nothing_back) return fail(t, Failure::other, "Empty reply from server");
    fail(t, Failure::other, what + ": " + ec.message());
  }

  void answered(Transfer* t) {
    auto& msg = t->parser->get();
    Response r;
    r.status = static_cast<long>(msg.result_int());
    // The one header an engine call reads (judge: a 429's or 503's wait).
    if (auto it = msg.find(http::field::retry_after); it != msg.end())
      r.headers.emplace_back("retry-after", std::string(it->value()));
    r.body = std::move(msg.body());
    if (msg.keep_alive() && !stopped_) keep_idle(t->target->key, std::move(t->conn));
    Attempt a;
    a.response = &r;
    end(t, a);
  }

  // A connection for the next request to its host. When the idle places
  // are full, one kept for another host makes room.
  void keep_idle(const std::string& key, std::unique_ptr<Conn> conn) {
    if (idle_count_ >= max_transfers_) {
      for (auto& [k, conns] : idle_) {
        if (k == key || conns.empty()) continue;
        conns.erase(conns.begin());  // its oldest
        --idle_count_;
        break;
      }
      if (idle_count_ >= max_transfers_) return;  // only this host's: conn closes
    }
    idle_[key].push_back(std::move(conn));
    ++idle_count_;
  }

  // Whether a kept-alive connection still looks usable: not closed by DPAT,
  // nothing unasked-for waiting on it. One that died while idle is found
  // here, before a request goes out on it.
  static bool still_open(Conn& c) {
    if (c.buffer.size() > 0) return false;
    char byte;
    const ssize_t n = ::recv(c.stream.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }

  void fail(Transfer* t, Failure failure, std::string what) {
    Response partial;
    // A Content-Length over the limit fails as soon as the header is read.
    if (t->parser && (t->parser->is_header_done() || failure == Failure::too_large))
      partial.status = static_cast<long>(t->parser->get().result_int());
    Attempt a;
    a.failure = failure;
    a.what = std::move(what);
    a.response = &partial;
    end(t, a);
  }

  // The attempt is over: the call completes, or waits for its retry.
  void end(Transfer* t, const Attempt& a) {
    std::unique_ptr<Transfer> owned = std::move(*t->self);
    running_.erase(t->self);
    std::unique_ptr<EngineCall> call = std::move(owned->call);
    owned.reset();  // its connection closes unless it went back to idle_
    try {
      const Verdict v = judge(call->step, std::string_view(call->method) != "POST", call->attempt, call->waited, a,
                              call->ok, core_.options, rng_);
      if (v.accept) {
        core_.complete(*call, a.response, nullptr);
      } else {
        call->waited += v.retry_in;
        retry_after(std::move(call), v.retry_in);
      }
    } catch (...) {
      if (call) core_.complete(*call, nullptr, std::current_exception());
    }
    pump();
  }

  void retry_after(std::unique_ptr<EngineCall> call, std::chrono::milliseconds delay) {
    if (stopped_) return core_.cancel(*call);  // an answer that came in while stopping
    auto it = retries_.emplace(retries_.end(), ioc_);
    it->call = std::move(call);
    it->timer.expires_after(delay);
    it->timer.async_wait([this, it](error_code) {
      auto due = std::move(it->call);
      retries_.erase(it);
      if (stopped_) return core_.cancel(*due);
      waiting_.push_back(std::move(due));
      pump();
    });
  }

  // Stopping: calls waiting complete at once, cancelled; the rest as their
  // operations end, aborted.
  void cancel_all() {
    stopped_ = true;
    std::vector<Transfer*> looking;
    for (auto& t : running_) {
      if (t->looking && *t->looking) {
        looking.push_back(t.get());
        continue;
      }
      if (t->conn) t->conn->stream.close();  // their handlers end them, cancelled
    }
    // A lookup's transfer ends now, cancelled. getaddrinfo itself cannot be
    // interrupted: the thread (and so finish()) still waits until it returns.
    for (Transfer* t : looking) {
      *t->looking = false;
      t->lookup_timer->cancel();
      t->resolver->cancel();
      fail(t, Failure::cancelled, {});
    }
    for (auto& r : retries_) r.timer.cancel();
    auto left = std::move(waiting_);
    waiting_.clear();
    for (auto& call : left) core_.cancel(*call);
    idle_.clear();
    idle_count_ = 0;
  }
};

}  // namespace

std::unique_ptr<EngineLane> make_http_lane(EngineCore& core, std::size_t max_transfers) {
  if (proxy_configured()) {
    logger()->info("a proxy is configured in the environment: http:// callbacks go through curl");
    return nullptr;
  }
  return std::make_unique<HttpLane>(core, max_transfers);
}

}  // namespace iaserve::iaapi::detail
