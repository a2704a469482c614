// The only translation unit that compiles Beast and Asio. Shaped after
// Beast's advanced server: one session per connection on a strand, a timeout
// before every read, a parser with body and header limits, one request at a
// time, write then read the next. Bodies are lists of segments (strings and
// file ranges) written by the session itself, so a file of any size streams
// through one fixed buffer.
#include <fcntl.h>
#include <signal.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <list>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <unordered_map>

#include "iaapi/log.hpp"
#include "server/http/server.hpp"
#include <spdlog/spdlog.h>

namespace iaserve::http {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kFileChunk = 512u << 10;

// "10.0.0.5:8080", "[fe80::1]:8080"; an IPv4 peer of a dual-stack socket
// ("::ffff:10.0.0.5") as the IPv4 address it is. "?" when unknown.
std::string endpoint_text(const tcp::endpoint& ep, const beast::error_code& ec) {
  if (ec) return "?";
  net::ip::address a = ep.address();
  if (a.is_v6() && a.to_v6().is_v4_mapped()) a = net::ip::make_address_v4(net::ip::v4_mapped, a.to_v6());
  const std::string text = a.to_string();
  return (a.is_v6() ? "[" + text + "]" : text) + ":" + std::to_string(ep.port());
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 8);
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
  }
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](unsigned char x, unsigned char y) {
           return std::tolower(x) == std::tolower(y);
         });
}

// Header names and values must not smuggle a line break into the answer.
std::string clean(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s)
    if (c != '\r' && c != '\n') out.push_back(c);
  return out;
}

struct UniqueFd {
  int fd = -1;
  UniqueFd() = default;
  explicit UniqueFd(int f) : fd(f) {}
  UniqueFd(UniqueFd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd = std::exchange(o.fd, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace

struct SessionBase;

struct Core {
  Options options;
  Handler handler;
  std::shared_ptr<spdlog::logger> log = iaserve::log::get("http");

  // Declared before the io_context: sessions destroyed with its handlers
  // still reach these.
  std::mutex mutex;
  std::condition_variable idle_cv;
  std::unordered_map<SessionBase*, std::weak_ptr<SessionBase>> sessions;
  std::atomic<std::size_t> connections{0};
  std::atomic<bool> stopping{false};
  std::optional<ssl::context> tls;

  net::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::vector<std::thread> threads;
  bool started = false;
  bool stopped = false;
  std::string host;
  unsigned short bound_port = 0;

  Response error_response(unsigned status, std::string message) const {
    if (options.on_error) {
      try {
        return options.on_error(status, std::move(message));
      } catch (const std::exception& e) {
        log->error("on_error failed: {}", e.what());
      }
    }
    return Response::json(status, "{\"error\":\"" + json_escape(message) + "\"}");
  }

  void do_accept();
  void on_accept(beast::error_code ec, tcp::socket socket);
  void session_gone(SessionBase* s) {
    std::lock_guard lock(mutex);
    sessions.erase(s);
    connections.fetch_sub(1);
    idle_cv.notify_all();
  }
};

// What a Responder reaches: the session (weakly: a held Responder never keeps
// a closed connection alive) and which request it answers.
struct SessionBase : std::enable_shared_from_this<SessionBase> {
  explicit SessionBase(Core& impl) : impl_(impl) {}
  virtual ~SessionBase() { impl_.session_gone(this); }
  SessionBase(const SessionBase&) = delete;
  SessionBase& operator=(const SessionBase&) = delete;

  virtual void start() = 0;
  // Posts the answer to request `generation` onto the session's strand.
  virtual void answer(std::uint64_t generation, Response response) = 0;
  // Server stop: close at once when no request is being handled.
  virtual void close_if_idle() = 0;
  virtual void force_close() = 0;
  // After the io threads are joined: break the self-reference of a session
  // still waiting for its handler so it can be destroyed.
  void release() { self_.reset(); }

  Core& impl_;
  std::shared_ptr<SessionBase> self_;
};

struct Responder::State {
  std::weak_ptr<SessionBase> session;
  std::uint64_t generation = 0;
  std::atomic<bool> answered{false};
  std::atomic<bool> gone{false};
  State(std::weak_ptr<SessionBase> s, std::uint64_t g) : session(std::move(s)), generation(g) {}
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  ~State() {
    if (answered.exchange(true)) return;
    if (auto s = session.lock())
      s->answer(generation, s->impl_.error_response(500, "the request was not answered"));
  }
};

void Responder::operator()(Response response) const {
  if (!state_ || state_->answered.exchange(true)) return;
  if (auto s = state_->session.lock()) s->answer(state_->generation, std::move(response));
}

bool Responder::client_gone() const {
  return !state_ || state_->gone.load() || state_->session.expired();
}

namespace {

template <class Stream>
class Session final : public SessionBase {
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;
  enum class Phase { waiting, reading, handling, writing, closing, closed };

 public:
  Session(Core& impl, tcp::socket&& socket, std::string remote, std::string local)
      : SessionBase(impl),
        stream_(make_stream(impl, std::move(socket))),
        remote_(std::move(remote)),
        local_(std::move(local)) {}

  void start() override {
    net::dispatch(stream_.get_executor(), [self = shared()] { self->on_start(); });
  }

  void answer(std::uint64_t generation, Response response) override {
    net::post(stream_.get_executor(), [self = shared(), generation, r = std::move(response)]() mutable {
      self->on_answer(generation, std::move(r));
    });
  }

  void close_if_idle() override {
    net::post(stream_.get_executor(), [self = shared()] {
      if (self->phase_ == Phase::waiting || self->phase_ == Phase::reading) self->close();
    });
  }

  void force_close() override {
    net::post(stream_.get_executor(), [self = shared()] { self->close(); });
  }

 private:
  static Stream make_stream(Core& impl, tcp::socket&& socket) {
    if constexpr (kTls)
      return Stream(std::move(socket), *impl.tls);
    else
      return Stream(std::move(socket));
  }

  std::shared_ptr<Session> shared() { return std::static_pointer_cast<Session>(shared_from_this()); }
  tcp::socket& socket() { return beast::get_lowest_layer(stream_).socket(); }
  beast::tcp_stream& tcp_layer() { return beast::get_lowest_layer(stream_); }

  void on_start() {
    beast::error_code ignored;
    socket().set_option(tcp::no_delay(true), ignored);
    if constexpr (kTls) {
      phase_ = Phase::reading;
      tcp_layer().expires_after(impl_.options.read_timeout);
      stream_.async_handshake(ssl::stream_base::server,
                              [self = shared()](beast::error_code ec) {
                                if (ec) return self->close();
                                self->wait_request(true);
                              });
    } else {
      wait_request(true);
    }
  }

  // Waits for the first byte of the next request (the keep-alive wait), then
  // gives the whole request read_timeout from there.
  void wait_request(bool first) {
    if (impl_.stopping.load() && !first) return close();
    phase_ = Phase::waiting;
    parser_.emplace();
    parser_->body_limit(impl_.options.body_limit);
    parser_->header_limit(impl_.options.header_limit);
    if (buffer_.size() > 0) return read_header();
    tcp_layer().expires_never();
    timed_out_ = false;
    set_deadline(first ? impl_.options.read_timeout : impl_.options.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared()](beast::error_code ec, std::size_t n) {
                              if (ec) {
                                self->clear_deadline();
                                return self->close();
                              }
                              self->buffer_.commit(n);
                              self->read_header();
                            });
  }

  // Reads and writes are bounded by our own deadline rather than
  // tcp_stream's expiry, which closes the socket and so leaves no way to
  // answer 408. One timer per session, moved lazily: it only moves when a
  // deadline comes before its expiry, and when it fires at a deadline that
  // has moved further away it waits again. So a keep-alive request (idle
  // wait, read, write, each deadline later than the last) starts and
  // cancels no timer at all.
  void set_deadline(std::chrono::milliseconds d) {
    deadline_ = Clock::now() + d;
    if (!timer_armed_ || timer_at_ > deadline_) arm_timer(deadline_);
  }

  void clear_deadline() { deadline_ = Clock::time_point::max(); }

  void arm_timer(Clock::time_point at) {
    timer_at_ = at;
    timer_armed_ = true;
    timer_.expires_at(at);
    timer_.async_wait([self = shared(), g = ++timer_generation_](beast::error_code ec) {
      if (g != self->timer_generation_) return;  // moved meanwhile
      self->timer_armed_ = false;
      if (!ec) self->on_deadline();
    });
  }

  void on_deadline() {
    if (phase_ == Phase::closed || deadline_ == Clock::time_point::max()) return;
    if (Clock::now() < deadline_) return arm_timer(deadline_);
    clear_deadline();
    beast::error_code ignored;
    if (phase_ == Phase::waiting || phase_ == Phase::reading) {
      timed_out_ = true;
      socket().cancel(ignored);
    } else if (phase_ == Phase::writing) {
      close();
    }
  }

  void stop_timer() {
    clear_deadline();
    ++timer_generation_;
    timer_armed_ = false;
    timer_.cancel();
  }

  void read_header() {
    phase_ = Phase::reading;
    started_ = Clock::now();
    timed_out_ = false;
    set_deadline(impl_.options.read_timeout);
    bhttp::async_read_header(stream_, buffer_, *parser_,
                             [self = shared()](beast::error_code ec, std::size_t) {
                               self->on_header(ec);
                             });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    auto& req = parser_->get();
    if (iequals(req[bhttp::field::expect], "100-continue")) {
      // curl waits a second for this before sending a body; answer at once.
      continue_ = "HTTP/1.1 100 Continue\r\n\r\n";
      net::async_write(stream_, net::buffer(continue_),
                       [self = shared()](beast::error_code wec, std::size_t) {
                         if (wec) return self->close();
                         self->read_body();
                       });
      return;
    }
    read_body();
  }

  void read_body() {
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read_error(beast::error_code ec) {
    clear_deadline();
    if (timed_out_) ec = beast::error::timeout;
    if (ec == bhttp::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset)
      return close();
    if (ec == beast::error::timeout) {
      // A client that sent part of a request and stalled is told so;
      // a silent keep-alive connection is just closed.
      if (parser_ && parser_->got_some()) return fail(408, "request not received in time");
      return close();
    }
    if (ec == bhttp::error::body_limit)
      return fail(413, "request body over " + std::to_string(impl_.options.body_limit) + " bytes");
    if (ec == bhttp::error::header_limit)
      return fail(431, "request header over " + std::to_string(impl_.options.header_limit) + " bytes");
    if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() ||
        ec == bhttp::error::partial_message)
      return fail(400, "malformed HTTP request: " + ec.message());
    close();
  }

  // Answers an error the core found itself and closes the connection.
  void fail(unsigned status, std::string message) {
    keep_alive_ = false;
    head_ = false;
    method_ = parser_ && parser_->is_header_done() ? std::string(parser_->get().method_string()) : "";
    path_ = parser_ && parser_->is_header_done() ? std::string(parser_->get().target()) : "";
    write(impl_.error_response(status, std::move(message)));
  }

  void on_read(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    clear_deadline();
    auto msg = parser_->release();
    parser_.reset();

    Request req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    auto q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos) req.query = req.target.substr(q + 1);
    for (const auto& f : msg) req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    req.body = std::move(msg.body());
    req.remote = remote_;
    req.local = local_;
    req.tls = kTls;
    req.keep_alive = msg.keep_alive();

    keep_alive_ = req.keep_alive;
    head_ = req.method == "HEAD";
    method_ = req.method;
    path_ = req.path;
    phase_ = Phase::handling;
    ++generation_;
    self_ = shared_from_this();
    auto state = std::make_shared<Responder::State>(weak_from_this(), generation_);
    state_ = state;
    try {
      impl_.handler(std::move(req), Responder(std::move(state)));
      // Answered already (the answer waits for this handler on the strand):
      // no need to watch for the client going away.
      if (auto s = state_.lock(); s && !s->answered.load()) watch_peer();
    } catch (const std::exception& e) {
      impl_.log->error("handler for {} {} threw: {}", method_, path_, e.what());
      if (auto s = state_.lock(); s && !s->answered.exchange(true))
        answer(generation_, impl_.error_response(500, "internal error"));
    } catch (...) {
      impl_.log->error("handler for {} {} threw a non-exception", method_, path_);
      if (auto s = state_.lock(); s && !s->answered.exchange(true))
        answer(generation_, impl_.error_response(500, "internal error"));
    }
  }

  // While a handler runs, notice a client that hangs up (so client_gone()
  // tells the truth and a held Responder does not keep the connection).
  void watch_peer() {
    socket().async_wait(
        tcp::socket::wait_read,
        net::bind_executor(stream_.get_executor(), [self = shared(), g = generation_](beast::error_code ec) {
          if (ec || self->phase_ != Phase::handling || self->generation_ != g) return;
          char c;
          ssize_t n = ::recv(self->socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            if (auto s = self->state_.lock()) s->gone = true;
            self->close();
            return;
          }
          if (n < 0) return self->watch_peer();
          // Pipelined bytes: read after this answer; stop watching.
        }));
  }

  void on_answer(std::uint64_t generation, Response response) {
    if (phase_ != Phase::handling || generation != generation_) return;
    beast::error_code ignored;
    socket().cancel(ignored);  // the peer watch
    write(std::move(response));
  }

  void write(Response response) {
    phase_ = Phase::writing;
    self_.reset();
    if (impl_.stopping.load()) keep_alive_ = false;

    // Open the files before the header goes out, so a missing file is a
    // clean 500 rather than a truncated body.
    files_.clear();
    for (const auto& seg : response.body) {
      const auto* fr = std::get_if<FileRange>(&seg);
      if (!fr) continue;
      UniqueFd fd(::open(fr->path.c_str(), O_RDONLY | O_CLOEXEC));
      struct stat st {};
      if (fd.fd < 0 || ::fstat(fd.fd, &st) != 0 ||
          static_cast<std::uint64_t>(st.st_size) < fr->offset + fr->length) {
        impl_.log->error("cannot send {}: {}", fr->path.string(),
                         fd.fd < 0 ? std::strerror(errno) : "file shorter than the range");
        files_.clear();
        response = impl_.error_response(500, "cannot read " + fr->path.filename().string());
        break;
      }
      ::posix_fadvise(fd.fd, static_cast<off_t>(fr->offset), static_cast<off_t>(fr->length),
                      POSIX_FADV_SEQUENTIAL);
      files_.push_back(std::move(fd));
    }
    if (files_.empty()) {
      // An error response may have replaced one with files: drop any.
      std::vector<Segment> kept;
      for (auto& seg : response.body)
        if (std::holds_alternative<std::string>(seg)) kept.push_back(std::move(seg));
      response.body = std::move(kept);
    }

    status_ = response.status;
    std::uint64_t length = response.body_size();
    header_ = "HTTP/1.1 " + std::to_string(response.status) + " " +
              std::string(bhttp::obsolete_reason(static_cast<bhttp::status>(response.status))) + "\r\n";
    auto has = [&](std::string_view name) {
      for (const auto& [k, v] : response.headers)
        if (iequals(k, name)) return true;
      return false;
    };
    for (const auto& [k, v] : impl_.options.default_headers)
      if (!has(k)) header_ += clean(k) + ": " + clean(v) + "\r\n";
    for (const auto& [k, v] : response.headers) {
      if (iequals(k, "Content-Length") || iequals(k, "Connection") || iequals(k, "Transfer-Encoding"))
        continue;
      header_ += clean(k) + ": " + clean(v) + "\r\n";
    }
    // 1xx, 204 and 304 carry no body and no length.
    bool no_body_status = status_ < 200 || status_ == 204 || status_ == 304;
    if (!no_body_status) header_ += "Content-Length: " + std::to_string(length) + "\r\n";
    if (!keep_alive_) header_ += "Connection: close\r\n";
    header_ += "\r\n";

    body_ = head_ || no_body_status ? std::vector<Segment>{} : std::move(response.body);
    segment_ = 0;
    file_index_ = 0;
    bytes_out_ = 0;
    // The whole answer, sendfile included, within write_timeout: past it
    // the session closes.
    set_deadline(impl_.options.write_timeout);

    // The header and the strings that follow it go out in one write.
    std::vector<net::const_buffer> buffers{net::buffer(header_)};
    while (segment_ < body_.size() && std::holds_alternative<std::string>(body_[segment_])) {
      const auto& s = std::get<std::string>(body_[segment_]);
      if (!s.empty()) buffers.push_back(net::buffer(s));
      ++segment_;
    }
    net::async_write(stream_, buffers, [self = shared()](beast::error_code ec, std::size_t n) {
      self->on_write(ec, n);
    });
  }

  void on_write(beast::error_code ec, std::size_t n) {
    bytes_out_ += n;
    if (ec) return finish(false);
    write_next();
  }

  void write_next() {
    if (segment_ >= body_.size()) return finish(true);
    auto& seg = body_[segment_];
    if (auto* s = std::get_if<std::string>(&seg)) {
      ++segment_;
      if (s->empty()) return write_next();
      net::async_write(stream_, net::buffer(*s), [self = shared()](beast::error_code ec, std::size_t n) {
        self->on_write(ec, n);
      });
      return;
    }
    auto& fr = std::get<FileRange>(seg);
    if (fr.length == 0) {
      ++segment_;
      ++file_index_;
      return write_next();
    }
    if constexpr (!kTls) return send_file();
    if (chunk_.empty()) chunk_.resize(kFileChunk);
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(fr.length, chunk_.size()));
    ssize_t got;
    do {
      got = ::pread(files_[file_index_].fd, chunk_.data(), want, static_cast<off_t>(fr.offset));
    } while (got < 0 && errno == EINTR);
    if (got <= 0) {
      impl_.log->error("reading {} at {}: {}", fr.path.string(), fr.offset,
                       got < 0 ? std::strerror(errno) : "unexpected end of file");
      return finish(false);
    }
    fr.offset += static_cast<std::uint64_t>(got);
    fr.length -= static_cast<std::uint64_t>(got);
    if (fr.length == 0) {
      ++segment_;
      ++file_index_;
    }
    net::async_write(stream_, net::buffer(chunk_.data(), static_cast<std::size_t>(got)),
                     [self = shared()](beast::error_code ec, std::size_t n) { self->on_write(ec, n); });
  }

  // Plain TCP: the kernel copies file pages to the socket (sendfile), no
  // user-space buffer at all. The socket is non-blocking; when it is full we
  // wait for it to drain. Bounded by the write timer.
  void send_file() {
    auto& fr = std::get<FileRange>(body_[segment_]);
    beast::error_code ec;
    socket().non_blocking(true, ec);
    if (ec) return finish(false);
    std::uint64_t sent_now = 0;
    while (fr.length > 0) {
      off_t off = static_cast<off_t>(fr.offset);
      std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(fr.length, 8u << 20));
      ssize_t n = ::sendfile(socket().native_handle(), files_[file_index_].fd, &off, want);
      if (n > 0) {
        fr.offset += static_cast<std::uint64_t>(n);
        fr.length -= static_cast<std::uint64_t>(n);
        bytes_out_ += static_cast<std::uint64_t>(n);
        sent_now += static_cast<std::uint64_t>(n);
        if (sent_now >= (64u << 20) && fr.length > 0) {
          // Let other connections on this thread have a turn.
          net::post(stream_.get_executor(), [self = shared()] { self->send_file(); });
          return;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        socket().async_wait(tcp::socket::wait_write,
                            net::bind_executor(stream_.get_executor(), [self = shared()](beast::error_code wec) {
                              if (wec || self->phase_ != Phase::writing) return self->finish(false);
                              self->send_file();
                            }));
        return;
      }
      if (n == 0 || errno != EPIPE)
        impl_.log->error("sending {} at {}: {}", fr.path.string(), fr.offset,
                         n == 0 ? "unexpected end of file" : std::strerror(errno));
      return finish(false);
    }
    ++segment_;
    ++file_index_;
    write_next();
  }

  void finish(bool ok) {
    clear_deadline();
    if (phase_ == Phase::closed && ok) ok = false;
    files_.clear();
    body_.clear();
    if (impl_.options.on_complete) {
      Completed c;
      c.method = method_;
      c.path = path_;
      c.remote = remote_;
      c.status = status_;
      c.bytes_out = bytes_out_;
      c.elapsed = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started_);
      try {
        impl_.options.on_complete(c);
      } catch (const std::exception& e) {
        impl_.log->error("on_complete failed: {}", e.what());
      }
    }
    if (!ok || !keep_alive_) return shutdown();
    if (chunk_.size() > 64 * 1024) std::vector<char>().swap(chunk_);  // idle connections stay small
    wait_request(false);
  }

  void shutdown() {
    phase_ = Phase::closing;
    if constexpr (kTls) {
      tcp_layer().expires_after(std::chrono::seconds(2));
      stream_.async_shutdown([self = shared()](beast::error_code) { self->close(); });
    } else {
      beast::error_code ignored;
      socket().shutdown(tcp::socket::shutdown_send, ignored);
      close();
    }
  }

  void close() {
    if (phase_ == Phase::closed) return;
    if (auto s = state_.lock()) s->gone = true;
    phase_ = Phase::closed;
    self_.reset();
    stop_timer();
    beast::error_code ignored;
    socket().shutdown(tcp::socket::shutdown_both, ignored);
    socket().close(ignored);
  }

  Stream stream_;
  net::steady_timer timer_{stream_.get_executor()};
  Clock::time_point deadline_ = Clock::time_point::max();  // of the phase; max: none
  Clock::time_point timer_at_{};                            // when timer_ fires
  bool timer_armed_ = false;
  std::uint64_t timer_generation_ = 0;
  bool timed_out_ = false;
  std::string remote_, local_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  Phase phase_ = Phase::waiting;
  std::uint64_t generation_ = 0;
  std::weak_ptr<Responder::State> state_;
  bool keep_alive_ = true;
  bool head_ = false;
  std::string method_, path_, continue_;
  Clock::time_point started_ = Clock::now();

  std::string header_;
  std::vector<Segment> body_;
  std::vector<UniqueFd> files_;
  std::size_t segment_ = 0, file_index_ = 0;
  std::vector<char> chunk_;
  std::uint64_t bytes_out_ = 0;
  unsigned status_ = 0;
};

std::pair<std::string, unsigned short> split_listen(const std::string& listen) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("listen address " + listen + ": expected HOST:PORT");
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string port = listen.substr(colon + 1);
  unsigned long p = 0;
  try {
    std::size_t used = 0;
    p = std::stoul(port, &used);
    if (used != port.size()) throw std::invalid_argument(port);
  } catch (const std::exception&) {
    throw std::runtime_error("listen address " + listen + ": " + port + " is not a port");
  }
  if (p > 65535) throw std::runtime_error("listen address " + listen + ": " + port + " is not a port");
  if (host.empty()) host = "0.0.0.0";
  return {host, static_cast<unsigned short>(p)};
}

}  // namespace

struct Server::Impl : Core {};

void Core::do_accept() {
  acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    on_accept(ec, std::move(socket));
  });
}

void Core::on_accept(beast::error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || stopping.load() || !acceptor.is_open()) return;
  if (ec) {
    log->warn("accept: {}", ec.message());
    // Out of descriptors: back off a little rather than spin.
    if (ec == net::error::no_descriptors) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return do_accept();
  }
  if (connections.load() >= options.max_connections) {
    beast::error_code ignored;
    socket.close(ignored);
    log->warn("connection refused: {} connections open (max_connections)", connections.load());
    return do_accept();
  }
  beast::error_code rec, lec;
  std::string remote = endpoint_text(socket.remote_endpoint(rec), rec);
  std::string local = endpoint_text(socket.local_endpoint(lec), lec);
  std::shared_ptr<SessionBase> session;
  connections.fetch_add(1);
  if (tls)
    session = std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(*this, std::move(socket), remote, local);
  else
    session = std::make_shared<Session<beast::tcp_stream>>(*this, std::move(socket), remote, local);
  {
    std::lock_guard lock(mutex);
    sessions.emplace(session.get(), session);
  }
  session->start();
  do_accept();
}

Server::Server(Options options, Handler handler) : impl_(std::make_unique<Impl>()) {
  // sendfile(2) has no MSG_NOSIGNAL: a client that hangs up during a file
  // answer would end the whole process with SIGPIPE. EPIPE is handled.
  ::signal(SIGPIPE, SIG_IGN);
  impl_->options = std::move(options);
  impl_->handler = std::move(handler);
  if (impl_->options.io_threads == 0) impl_->options.io_threads = 1;
  auto& o = impl_->options;
  if (o.tls_cert.has_value() != o.tls_key.has_value())
    throw std::runtime_error("TLS needs both a certificate and a key");
  if (o.tls_cert) {
    impl_->tls.emplace(ssl::context::tls_server);
    impl_->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                            ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    beast::error_code ec;
    impl_->tls->use_certificate_chain_file(o.tls_cert->string(), ec);
    if (ec) throw std::runtime_error("TLS certificate " + o.tls_cert->string() + ": " + ec.message());
    impl_->tls->use_private_key_file(o.tls_key->string(), ssl::context::pem, ec);
    if (ec) throw std::runtime_error("TLS key " + o.tls_key->string() + ": " + ec.message());
  }
  auto [host, port] = split_listen(o.listen);
  beast::error_code ec;
  auto address = net::ip::make_address(host, ec);
  if (ec) {
    // A name (e.g. localhost): take its first address.
    tcp::resolver resolver(impl_->ioc);
    auto results = resolver.resolve(host, std::to_string(port), ec);
    if (ec || results.empty())
      throw std::runtime_error("listen address " + o.listen + ": " + (ec ? ec.message() : "no address"));
    address = results.begin()->endpoint().address();
  }
  tcp::endpoint ep(address, port);
  auto& a = impl_->acceptor;
  a.open(ep.protocol(), ec);
  if (!ec) a.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) a.bind(ep, ec);
  if (!ec) a.listen(net::socket_base::max_listen_connections, ec);
  if (ec) throw std::runtime_error("listen address " + o.listen + ": " + ec.message());
  ::fcntl(a.native_handle(), F_SETFD, FD_CLOEXEC);  // Asio sets it too; be explicit
  impl_->bound_port = a.local_endpoint().port();
  impl_->host = address.is_v6() ? "[" + address.to_string() + "]" : address.to_string();
  if (address.is_unspecified()) impl_->host = address.is_v6() ? "[::1]" : "127.0.0.1";
}

Server::~Server() {
  try {
    stop(std::chrono::milliseconds(0));
  } catch (...) {
  }
}

std::string Server::base_url() const {
  return std::string(impl_->tls ? "https://" : "http://") + impl_->host + ":" + std::to_string(impl_->bound_port);
}

unsigned short Server::port() const { return impl_->bound_port; }

std::size_t Server::open_connections() const { return impl_->connections.load(); }

void Server::start() {
  auto& i = *impl_;
  if (i.started) return;
  i.started = true;
  i.do_accept();
  for (unsigned t = 0; t < i.options.io_threads; ++t)
    i.threads.emplace_back([&i] {
      for (;;) {
        try {
          i.ioc.run();
          return;
        } catch (const std::exception& e) {
          // Handlers catch their own errors; this is a last line of defence.
          i.log->error("io thread: {}", e.what());
        }
      }
    });
}

void Server::stop(std::chrono::milliseconds grace) {
  auto& i = *impl_;
  if (i.stopped) return;
  i.stopped = true;
  i.stopping = true;
  net::post(i.acceptor.get_executor(), [&i] {
    beast::error_code ignored;
    i.acceptor.close(ignored);
  });
  auto each_session = [&i](auto fn) {
    std::vector<std::shared_ptr<SessionBase>> live;
    {
      std::lock_guard lock(i.mutex);
      for (auto& [p, w] : i.sessions)
        if (auto s = w.lock()) live.push_back(std::move(s));
    }
    for (auto& s : live) fn(*s);
  };
  if (i.started) {
    each_session([](SessionBase& s) { s.close_if_idle(); });
    {
      std::unique_lock lock(i.mutex);
      i.idle_cv.wait_for(lock, grace, [&i] { return i.sessions.empty(); });
    }
    each_session([](SessionBase& s) { s.force_close(); });
    {
      // Closed sockets finish their pending operations quickly.
      std::unique_lock lock(i.mutex);
      i.idle_cv.wait_for(lock, std::chrono::milliseconds(500), [&i] { return i.sessions.empty(); });
    }
  }
  i.ioc.stop();
  for (auto& t : i.threads)
    if (t.joinable()) t.join();
  i.threads.clear();
  each_session([](SessionBase& s) { s.release(); });
  {
    beast::error_code ignored;
    i.acceptor.close(ignored);
  }
}

void Server::schedule(std::chrono::milliseconds delay, std::function<void()> fn) {
  auto timer = std::make_shared<net::steady_timer>(impl_->ioc, delay);
  timer->async_wait([timer, fn = std::move(fn), &i = *impl_](beast::error_code ec) {
    if (ec) return;
    try {
      fn();
    } catch (const std::exception& e) {
      i.log->error("scheduled task threw: {}", e.what());
    }
  });
}

void Server::run_until_signal(std::chrono::milliseconds grace) {
  start();
  net::io_context signals_ioc;
  net::signal_set signals(signals_ioc, SIGINT, SIGTERM);
  int caught = 0;
  signals.async_wait([&caught](beast::error_code ec, int sig) {
    if (!ec) caught = sig;
  });
  signals_ioc.run();
  impl_->log->info("signal {}: stopping", caught);
  stop(grace);
}

}  // namespace iaserve::http
