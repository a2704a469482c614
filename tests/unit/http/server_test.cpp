// The HTTP core on loopback: real sockets, libcurl and raw clients.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <catch2/catch.hpp>
#include <fstream>
#include <future>
#include <mutex>
#include <random>
#include <thread>

#include "server/http/server.hpp"
#include "tests/support/http.hpp"
#include "tests/support/process.hpp"

using namespace iaserve;
using namespace std::chrono_literals;
namespace ht = iaserve::test;

namespace {

// A raw TCP client: sends bytes exactly as given, reads what comes back.
class Raw {
 public:
  explicit Raw(unsigned short port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    timeval tv{30, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Raw() { ::close(fd_); }
  Raw(const Raw&) = delete;
  Raw& operator=(const Raw&) = delete;

  bool send(std::string_view s) {
    return ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size());
  }
  // Everything until the peer closes.
  std::string read_all() {
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }
  // One response: the header, then Content-Length bytes.
  std::string read_response() {
    std::string out;
    char buf[65536];
    std::size_t need = std::string::npos;
    for (;;) {
      auto end = out.find("\r\n\r\n");
      if (end != std::string::npos && need == std::string::npos) {
        auto cl = out.find("Content-Length: ");
        std::size_t len = 0;
        if (cl != std::string::npos && cl < end) len = std::stoul(out.substr(cl + 16));
        need = end + 4 + len;
      }
      if (need != std::string::npos && out.size() >= need) return out;
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) return out;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
};

http::Handler echo_handler() {
  return [](http::Request&& req, http::Responder respond) {
    std::string body = req.method + " " + req.path + " q=" + req.query + " n=" + std::to_string(req.body.size());
    if (auto v = req.query_param("name")) body += " name=" + *v;
    respond(http::Response::text(200, "text/plain", body).header("X-Remote", req.remote));
  };
}

std::string url(const http::Server& s, const std::string& path) { return s.base_url() + path; }

}  // namespace

TEST_CASE("percent decoding and query parameters", "[http]") {
  CHECK(http::percent_decode("a%20b%2Fc") == "a b/c");
  CHECK(http::percent_decode("%4a%4A") == "JJ");
  CHECK_FALSE(http::percent_decode("bad%2"));
  CHECK_FALSE(http::percent_decode("bad%zz"));
  http::Request r;
  r.query = "scope=extended&includePHI=true&x=a%26b&y=1+2&empty";
  CHECK(r.query_param("scope") == "extended");
  CHECK(r.query_param("includePHI") == "true");
  CHECK(r.query_param("x") == "a&b");
  CHECK(r.query_param("y") == "1 2");
  CHECK(r.query_param("empty") == "");
  CHECK_FALSE(r.query_param("missing"));
  r.headers = {{"Content-Type", "text/plain"}};
  CHECK(r.header("content-type") == "text/plain");
  CHECK(r.header("accept").empty());
}

TEST_CASE("answers, keep-alive, HEAD and default headers", "[http]") {
  http::Options o;
  o.default_headers = {{"X-Sectra-ApiVersion", "1.10"}};
  std::mutex m;
  std::vector<http::Completed> done;
  o.on_complete = [&](const http::Completed& c) {
    std::lock_guard lock(m);
    done.push_back(c);
  };
  http::Server s(o, echo_handler());
  s.start();
  REQUIRE(s.port() != 0);
  CHECK(s.base_url() == "http://127.0.0.1:" + std::to_string(s.port()));

  auto a = ht::http("GET", url(s, "/a/b%20c?name=x%2By&z=1"));
  REQUIRE(a.status == 200);
  CHECK(a.body == "GET /a/b%20c q=name=x%2By&z=1 n=0 name=x+y");
  CHECK(a.header("x-sectra-apiversion") == "1.10");
  CHECK(a.header("content-length") == std::to_string(a.body.size()));

  auto h = ht::http("HEAD", url(s, "/head"));
  CHECK(h.status == 200);
  CHECK(h.body.empty());
  CHECK(h.header("content-length") == std::to_string(std::string("HEAD /head q= n=0").size()));

  // Two requests on one connection, both answered, the connection kept.
  Raw raw(s.port());
  REQUIRE(raw.send("GET /one HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r1 = raw.read_response();
  CHECK(r1.find("HTTP/1.1 200") == 0);
  CHECK(r1.find("GET /one") != std::string::npos);
  REQUIRE(raw.send("POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"));
  auto r2 = raw.read_response();
  CHECK(r2.find("POST /two q= n=3") != std::string::npos);
  CHECK(s.open_connections() >= 1);
  // Connection: close ends it after the answer.
  REQUIRE(raw.send("GET /three HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  auto r3 = raw.read_all();
  CHECK(r3.find("Connection: close") != std::string::npos);
  CHECK(r3.find("GET /three") != std::string::npos);

  s.stop(1s);
  std::lock_guard lock(m);
  REQUIRE(done.size() >= 5);
  CHECK(done[0].status == 200);
  CHECK(done[0].path == "/a/b%20c");
  CHECK(done[0].bytes_out > a.body.size());
}

TEST_CASE("body over the limit is 413, a huge header 431, garbage 400", "[http]") {
  http::Options o;
  o.body_limit = 1000;
  o.header_limit = 2000;
  o.default_headers = {{"X-Test", "yes"}};
  o.on_error = [](unsigned status, std::string message) {
    return http::Response::json(status, "{\"error\":\"" + message + "\",\"core\":true}");
  };
  std::atomic<int> handled{0};
  http::Server s(o, [&](http::Request&&, http::Responder r) {
    ++handled;
    r(http::Response::text(200, "text/plain", "ok"));
  });
  s.start();
  auto big = ht::http("POST", url(s, "/x"), std::string(5000, 'a'));
  CHECK(big.status == 413);
  CHECK(big.body.find("\"core\":true") != std::string::npos);
  CHECK(big.header("x-test") == "yes");
  auto ok = ht::http("POST", url(s, "/x"), std::string(1000, 'a'));
  CHECK(ok.status == 200);

  auto huge = ht::http("GET", url(s, "/x"), {}, {"X-Big: " + std::string(4000, 'b')});
  CHECK(huge.status == 431);

  Raw raw(s.port());
  REQUIRE(raw.send("NOT HTTP AT ALL\r\n\r\n"));
  auto r = raw.read_all();
  CHECK(r.find("HTTP/1.1 400") == 0);
  CHECK(handled == 1);
}

TEST_CASE("a client sending one byte at a time is cut off at read_timeout", "[http]") {
  http::Options o;
  o.read_timeout = 400ms;
  http::Server s(o, echo_handler());
  s.start();
  Raw raw(s.port());
  const std::string request = "GET /slow HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(200, 'p') + "\r\n\r\n";
  // At 50 ms a byte the whole request would take over 12 s; the server must
  // give up long before, answering 408 and closing.
  std::size_t sent = 0;
  for (; sent < request.size(); ++sent) {
    if (!raw.send(request.substr(sent, 1))) break;
    pollfd p{raw.fd(), POLLIN, 0};
    if (::poll(&p, 1, 50) > 0) break;
  }
  CHECK(sent < request.size());
  auto answer = raw.read_all();
  CHECK(answer.find("HTTP/1.1 408") == 0);
  CHECK(answer.find("Connection: close") != std::string::npos);
}

TEST_CASE("a kept-alive connection: a stalled second request gets 408, an idle one is closed", "[http]") {
  http::Options o;
  o.read_timeout = 300ms;
  o.idle_timeout = 600ms;
  http::Server s(o, echo_handler());
  s.start();
  const std::string request = "GET /one HTTP/1.1\r\nHost: x\r\n\r\n";

  // The second request on the connection starts, then stalls: the read
  // deadline of that request (not the first one's) cuts it off.
  {
    Raw raw(s.port());
    REQUIRE(raw.send(request));
    CHECK(raw.read_response().find("HTTP/1.1 200") == 0);
    REQUIRE(raw.send(request));
    CHECK(raw.read_response().find("HTTP/1.1 200") == 0);
    REQUIRE(raw.send("GET /two HTTP/1.1\r\nHo"));
    auto answer = raw.read_all();
    CHECK(answer.find("HTTP/1.1 408") == 0);
    CHECK(answer.find("Connection: close") != std::string::npos);
  }
  // A connection that stays silent after its answer is closed without one.
  {
    Raw raw(s.port());
    REQUIRE(raw.send(request));
    CHECK(raw.read_response().find("HTTP/1.1 200") == 0);
    CHECK(raw.read_all().empty());
  }
  // Both connections are gone on the server's side too.
  for (int i = 0; i < 100 && s.open_connections() > 0; ++i) std::this_thread::sleep_for(20ms);
  CHECK(s.open_connections() == 0);
}

TEST_CASE("a client that stops reading its answer is cut off at write_timeout", "[http]") {
  http::Options o;
  o.write_timeout = 500ms;
  const std::string big(64u << 20, 'b');  // far more than the socket buffers hold
  http::Server s(o, [&big](http::Request&&, http::Responder respond) {
    respond(http::Response::text(200, "application/octet-stream", big));
  });
  s.start();
  // 64 MiB is more than both sides' socket buffers hold (Linux allows 32 MiB
  // to receive, 4 MiB to send): the write stalls while nothing is read.
  Raw raw(s.port());
  REQUIRE(raw.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));
  // The server has the connection (it may not have accepted it yet) ...
  for (int i = 0; i < 500 && s.open_connections() == 0; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(s.open_connections() == 1);
  // ... and, reading nothing, gives up on it.
  for (int i = 0; i < 500 && s.open_connections() > 0; ++i) std::this_thread::sleep_for(20ms);
  CHECK(s.open_connections() == 0);
  auto got = raw.read_all();
  CHECK(got.find("HTTP/1.1 200") == 0);
  CHECK(got.size() < big.size());
}

TEST_CASE("a responder answers from another thread, a dropped one answers 500", "[http]") {
  std::vector<std::thread> threads;
  std::mutex m;
  http::Server s({}, [&](http::Request&& req, http::Responder r) {
    std::lock_guard lock(m);
    if (req.path == "/later") {
      threads.emplace_back([r, id = std::this_thread::get_id()] {
        std::this_thread::sleep_for(50ms);
        r(http::Response::text(200, "text/plain", id != std::this_thread::get_id() ? "other thread" : "same"));
        r(http::Response::text(201, "text/plain", "ignored second answer"));
      });
    } else if (req.path == "/drop") {
      threads.emplace_back([r = std::move(r)]() mutable { auto gone = std::move(r); });
    } else if (req.path == "/throw") {
      throw std::runtime_error("boom");
    }
  });
  s.start();
  auto later = ht::http("GET", url(s, "/later"));
  CHECK(later.status == 200);
  CHECK(later.body == "other thread");
  auto drop = ht::http("GET", url(s, "/drop"));
  CHECK(drop.status == 500);
  CHECK(drop.body.find("not answered") != std::string::npos);
  auto thrown = ht::http("GET", url(s, "/throw"));
  CHECK(thrown.status == 500);
  s.stop(1s);
  for (auto& t : threads) t.join();
}

TEST_CASE("client_gone tells a handler that the client hung up", "[http]") {
  std::promise<http::Responder> held;
  auto got = held.get_future();
  http::Server s({}, [&](http::Request&&, http::Responder r) { held.set_value(r); });
  s.start();
  http::Responder r = [&] {
    Raw raw(s.port());
    REQUIRE(raw.send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n"));
    auto responder = got.get();
    CHECK_FALSE(responder.client_gone());
    return responder;
  }();  // the raw client closes here
  for (int i = 0; i < 200 && !r.client_gone(); ++i) std::this_thread::sleep_for(10ms);
  CHECK(r.client_gone());
  r(http::Response::text(200, "text/plain", "too late"));  // ignored, no crash
  for (int i = 0; i < 200 && s.open_connections() > 0; ++i) std::this_thread::sleep_for(10ms);
  CHECK(s.open_connections() == 0);
}

TEST_CASE("file ranges and strings stream byte-exact", "[http]") {
  test::TempDir dir("http-file");
  auto path = dir / "data.bin";
  std::string content(3 * 1024 * 1024 + 17, '\0');
  std::mt19937 rng(42);
  for (auto& c : content) c = static_cast<char>(rng());
  std::ofstream(path, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));

  http::Server s({}, [&](http::Request&& req, http::Responder r) {
    http::Response res;
    res.headers = {{"Content-Type", "application/octet-stream"}};
    if (req.path == "/whole") {
      res.body.emplace_back(http::FileRange{path, 0, content.size()});
    } else if (req.path == "/mixed") {
      res.body.emplace_back(std::string("--head--"));
      res.body.emplace_back(http::FileRange{path, 1000, 700000});
      res.body.emplace_back(std::string("--mid--"));
      res.body.emplace_back(http::FileRange{path, 5, 10});
      res.body.emplace_back(std::string("--tail--"));
    } else {
      res.body.emplace_back(http::FileRange{dir / "missing.bin", 0, 10});
    }
    r(std::move(res));
  });
  s.start();
  auto whole = ht::http("GET", url(s, "/whole"));
  REQUIRE(whole.status == 200);
  CHECK(whole.body.size() == content.size());
  CHECK(whole.body == content);
  auto mixed = ht::http("GET", url(s, "/mixed"));
  CHECK(mixed.body == "--head--" + content.substr(1000, 700000) + "--mid--" + content.substr(5, 10) + "--tail--");
  auto head = ht::http("HEAD", url(s, "/whole"));
  CHECK(head.header("content-length") == std::to_string(content.size()));
  auto missing = ht::http("GET", url(s, "/missing"));
  CHECK(missing.status == 500);
  CHECK(missing.body.find("missing.bin") != std::string::npos);
}

TEST_CASE("a client hanging up during a file answer (sendfile) does not end the process", "[http]") {
  // sendfile(2) raises SIGPIPE on a closed connection: the server must not
  // die of it (this process is the server; the default action is restored
  // so that an inherited "ignore" cannot hide the fault).
  ::signal(SIGPIPE, SIG_DFL);
  test::TempDir dir("http-pipe");
  auto path = dir / "big.bin";
  { std::ofstream(path, std::ios::binary).put('x'); }
  std::filesystem::resize_file(path, 64u << 20);  // sparse: more than the socket buffers hold
  http::Server s({}, [&](http::Request&&, http::Responder r) {
    http::Response res;
    res.headers = {{"Content-Type", "application/octet-stream"}};
    res.body.emplace_back(http::FileRange{path, 0, 64u << 20});
    r(std::move(res));
  });
  s.start();
  for (int round = 0; round < 3; ++round) {
    Raw raw(s.port());
    REQUIRE(raw.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));
    char buf[4096];
    REQUIRE(::recv(raw.fd(), buf, sizeof buf, 0) > 0);  // the answer has started
    linger l{1, 0};  // close with a reset: the next sendfile fails at once
    ::setsockopt(raw.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  for (int i = 0; i < 500 && s.open_connections() > 0; ++i) std::this_thread::sleep_for(10ms);
  CHECK(s.open_connections() == 0);
  auto after = ht::http("GET", url(s, "/again"));  // still serving
  CHECK(after.status == 200);
}

TEST_CASE("stop lets a request in flight finish, then refuses new ones", "[http]") {
  std::promise<http::Responder> held;
  auto got = held.get_future();
  http::Server s({}, [&](http::Request&&, http::Responder r) { held.set_value(r); });
  s.start();
  auto base = s.base_url();
  auto client = std::async(std::launch::async, [&] { return ht::http("GET", base + "/slow"); });
  auto r = got.get();
  std::thread answer([r] {
    std::this_thread::sleep_for(200ms);
    r(http::Response::text(200, "text/plain", "finished"));
  });
  s.stop(10s);  // returns once the in-flight answer went out
  auto a = client.get();
  answer.join();
  CHECK(a.status == 200);
  CHECK(a.body == "finished");
  CHECK(a.header("connection") == "close");
  auto after = ht::http("GET", base + "/again", {}, {}, 2s);
  CHECK(after.status == 0);
}

TEST_CASE("stop closes a request held past the grace period", "[http]") {
  std::promise<http::Responder> held;
  auto got = held.get_future();
  auto s = std::make_unique<http::Server>(http::Options{}, [&](http::Request&&, http::Responder r) { held.set_value(r); });
  s->start();
  auto base = s->base_url();
  auto client = std::async(std::launch::async, [&] { return ht::http("GET", base + "/hang", {}, {}, 20s); });
  auto r = got.get();
  s->stop(100ms);
  auto a = client.get();
  CHECK(a.status == 0);  // cut off, not answered
  s.reset();
  r(http::Response::text(200, "text/plain", "after the server is gone"));  // ignored
}

TEST_CASE("max_connections closes connections past the limit", "[http]") {
  http::Options o;
  o.max_connections = 1;
  http::Server s(o, echo_handler());
  s.start();
  Raw first(s.port());
  REQUIRE(first.send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(first.read_response().find("HTTP/1.1 200") == 0);
  Raw second(s.port());
  second.send("GET /2 HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(second.read_all().empty());
}

TEST_CASE("TLS with a self-signed certificate", "[http][tls]") {
  test::TempDir dir("http-tls");
  auto cert = dir / "cert.pem", key = dir / "key.pem";
  auto gen = test::run({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key.string(), "-out",
                        cert.string(), "-days", "2", "-subj", "/CN=127.0.0.1"});
  REQUIRE(gen.code == 0);
  http::Options o;
  o.tls_cert = cert;
  o.tls_key = key;
  auto path = dir / "f.bin";
  std::string content(200000, 'z');
  std::ofstream(path, std::ios::binary) << content;
  http::Server s(o, [&](http::Request&& req, http::Responder r) {
    http::Response res;
    res.body.emplace_back(std::string(req.tls ? "tls:" : "plain:"));
    res.body.emplace_back(http::FileRange{path, 0, content.size()});
    r(std::move(res));
  });
  s.start();
  CHECK(s.base_url().rfind("https://", 0) == 0);
  auto a = ht::http("GET", s.base_url() + "/x");
  REQUIRE(a.status == 200);
  CHECK(a.body == "tls:" + content);
  // Plain HTTP to a TLS port gets no HTTP answer.
  auto plain = ht::http("GET", "http://127.0.0.1:" + std::to_string(s.port()) + "/x", {}, {}, 3s);
  CHECK(plain.status != 200);
}

TEST_CASE("bad listen addresses name the address", "[http]") {
  http::Options o;
  o.listen = "127.0.0.1:70000";
  CHECK_THROWS_WITH(http::Server(o, echo_handler()), Catch::Contains("70000 is not a port"));
  o.listen = "nothing";
  CHECK_THROWS_WITH(http::Server(o, echo_handler()), Catch::Contains("nothing"));
}

TEST_CASE("schedule answers later without holding an io thread", "[http]") {
  http::Server* self = nullptr;
  http::Server s({}, [&](http::Request&& req, http::Responder r) {
    if (req.path == "/late")
      self->schedule(300ms, [r] { r(http::Response::text(200, "text/plain", "late")); });
    else
      r(http::Response::text(200, "text/plain", "now"));
  });
  self = &s;
  s.start();  // one io thread: a blocked thread would hold up /now behind /late
  auto base = s.base_url();
  auto late = std::async(std::launch::async, [&] { return ht::http("GET", base + "/late"); });
  std::this_thread::sleep_for(50ms);
  auto now = ht::http("GET", base + "/now");
  CHECK(now.body == "now");
  CHECK(late.get().body == "late");
}
