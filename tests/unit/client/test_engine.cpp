// The callback engine against real servers on loopback: its four routes,
// keep-alive within the per-host limit, retries on a timer, error kinds and
// texts as the blocking client's, and stopping. Plain http:// goes through
// its Asio lane; https://, and http:// when a proxy is configured, through
// curl: both are tested here.
#include "iaapi/client.hpp"
#include "iaapi/result_builder.hpp"
#include "tests/unit/client/fixtures.hpp"
#include "tests/unit/client/test_server.hpp"
#include "tests/unit/client/tls_server.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <cstdlib>
#include <future>
#include <optional>
#include <thread>

using namespace iaserve::iaapi;
using iaserve::test::json_text;
using iaserve::test::Received;
using iaserve::test::stored;
using iaserve::test::Reply;
using iaserve::test::TestServer;
using namespace std::chrono_literals;

namespace {

const std::string kToken = "engine-token-0123456789";

ClientOptions fast() { return iaserve::test::fast_client_options(); }

CallbackInfo info_for(const TestServer& s) {
  return {s.url() + "/api/v1/", kToken};
}

// A server answering every request with this JSON after `delay`.
auto answers_after(std::chrono::milliseconds delay, int status, std::string body) {
  return [delay, status, body = std::move(body)](const Received&, std::size_t) {
    Reply r = Reply::json(status, body);
    r.delay = delay;
    return r;
  };
}

// Starts one call and waits (bounded) for its outcome.
template <class T, class Start>
CallOutcome<T> await(Start start) {
  auto promise = std::make_shared<std::promise<CallOutcome<T>>>();
  auto future = promise->get_future();
  start([promise](CallOutcome<T> o) { promise->set_value(std::move(o)); });
  REQUIRE(future.wait_for(20s) == std::future_status::ready);
  return future.get();
}

// The tissue app's results on slide s1, listed through the engine.
CallOutcome<std::vector<StoredResult>> list_s1(CallbackEngine& engine, const TestServer& server) {
  return await<std::vector<StoredResult>>(
      [&](auto done) { engine.list_results(info_for(server), "tissue", "s1", done); });
}

CallbackError error_of(const std::exception_ptr& e) {
  REQUIRE(e);
  try {
    std::rethrow_exception(e);
  } catch (const CallbackError& ce) {
    return ce;
  }
}

Result frame(const std::string& slide) {
  return progress_result(slide, 1000, 800, "analysis queued", 0, "0.1.0");
}



// A call counts until its completion has returned: wait (bounded) for n.
bool in_flight_reaches(const CallbackEngine& engine, std::size_t n) {
  for (int i = 0; i < 500 && engine.in_flight() != n; ++i) std::this_thread::sleep_for(10ms);
  return engine.in_flight() == n;
}

}  // namespace

TEST_CASE("engine: its routes send the client's method, path, headers and bodies", "[engine]") {
  const Result r = frame("s 1");
  ImageInfo info;
  info.id = "s 1";
  info.image_size = {2220, 2967};
  info.tile_size = {240, 240};
  const std::map<std::string, Reply> routes = {
      {"GET /api/v1/applications/tissue/results/slide/s%201",
       Reply::json(200, json_text(to_json(std::vector<StoredResult>{stored(r, 7, "v1")})))},
      {"GET /api/v1/slides/s%201/info", Reply::json(200, json_text(to_json(info)))},
      {"POST /api/v1/applications/tissue/results",
       Reply::json(201, json_text(to_json(stored(r, 8, "v1"))))},
      {"PUT /api/v1/applications/tissue/results/7",
       Reply::json(200, json_text(to_json(stored(r, 7, "v2"))))},
  };
  TestServer server([&](const Received& q, std::size_t) {
    auto it = routes.find(q.method + " " + q.target);
    return it != routes.end() ? it->second : Reply::json(404, R"({"error":"no such route"})");
  });
  CallbackEngine engine(fast(), 4);
  const auto cb = info_for(server);

  auto list = await<std::vector<StoredResult>>(
      [&](auto done) { engine.list_results(cb, "tissue", "s 1", done); });
  REQUIRE(list.value);
  REQUIRE(list.value->size() == 1);
  CHECK(list.value->at(0).version_id == "v1");
  auto size = await<ImageInfo>([&](auto done) { engine.image_info(cb, "s 1", done); });
  REQUIRE(size.value);
  CHECK(size.value->image_size == Size{2220, 2967});
  auto created =
      await<StoredResult>([&](auto done) { engine.create_result(cb, "tissue", r, done); });
  REQUIRE(created.value);
  CHECK(created.value->id == 8);
  auto updated = await<StoredResult>(
      [&](auto done) { engine.update_result(cb, "tissue", *list.value->begin(), done); });
  REQUIRE(updated.value);
  CHECK(updated.value->version_id == "v2");

  const auto got = server.requests();
  REQUIRE(got.size() == 4);
  for (auto& q : got) {
    INFO(q.method << " " << q.target);
    CHECK(routes.count(q.method + " " + q.target) == 1);
    CHECK(q.header("authorization") == "Bearer " + kToken);
    CHECK(q.header("x-sectra-apiversion") == "1.10");
    CHECK(q.header("accept") == "application/json");
    if (q.method != "GET") CHECK(q.header("content-type") == "application/json");
  }
  CHECK(boost::json::parse(got[2].body).at("slideId") == "s 1");
  CHECK(boost::json::parse(got[3].body).at("versionId") == "v1");
  CHECK(server.connection_count() == 1);  // kept alive
  CHECK(engine.requests_sent() == 4);
  CHECK(in_flight_reaches(engine, 0));
}

TEST_CASE("engine: many calls at once share at most max_transfers connections", "[engine]") {
  TestServer server(answers_after(30ms, 200, "[]"));
  CallbackEngine engine(fast(), 3);
  const auto cb = info_for(server);
  constexpr int kCalls = 24;
  std::vector<std::future<CallOutcome<std::vector<StoredResult>>>> futures;
  for (int i = 0; i < kCalls; ++i) {
    auto p = std::make_shared<std::promise<CallOutcome<std::vector<StoredResult>>>>();
    futures.push_back(p->get_future());
    engine.list_results(cb, "tissue", "s" + std::to_string(i),
                        [p](auto o) { p->set_value(std::move(o)); });
  }
  for (auto& f : futures) {
    REQUIRE(f.wait_for(20s) == std::future_status::ready);
    auto o = f.get();
    CHECK(o.value);
    CHECK(!o.error);
  }
  CHECK(server.request_count() == kCalls);
  CHECK(server.connection_count() >= 1);
  CHECK(server.connection_count() <= 3);
}

TEST_CASE("engine: retries on a timer, errors have the blocking client's kinds and texts",
          "[engine][errors]") {
  SECTION("503 twice, then the answer") {
    TestServer server([](const Received&, std::size_t i) {
      return i < 2 ? Reply::json(503, R"({"error":"busy"})") : Reply::json(200, "[]");
    });
    CallbackEngine engine(fast());
    auto o = list_s1(engine, server);
    CHECK(o.value);
    CHECK(server.request_count() == 3);
  }
  SECTION("409 on PUT: conflict, never retried") {
    TestServer server([](const Received&, std::size_t) {
      return Reply::json(409, R"({"error":"stale versionId"})");
    });
    CallbackEngine engine(fast());
    auto o = await<StoredResult>([&](auto done) {
      engine.update_result(info_for(server), "tissue", stored(frame("s1"), 12, "v1"), done);
    });
    CHECK(!o.value);
    auto e = error_of(o.error);
    CHECK(e.kind() == CallbackErrorKind::conflict);
    CHECK(e.status() == 409);
    CHECK(std::string(e.what()) ==
          "PUT /applications/tissue/results/12: 409 Conflict: stale versionId");
    CHECK(server.request_count() == 1);
  }
  SECTION("a POST that went out whole on a kept-alive connection DPAT then closed is not sent again") {
    // DPAT reads the POST, stores it perhaps, and closes without a word.
    TestServer server([](const Received& q, std::size_t) {
      if (q.method == "GET") return Reply::json(200, "[]");
      Reply r;
      r.close = true;
      return r;
    });
    CallbackEngine engine(fast());
    const auto cb = info_for(server);
    REQUIRE(await<std::vector<StoredResult>>([&](auto done) { engine.list_results(cb, "tissue", "s1", done); }).value);
    auto o = await<StoredResult>([&](auto done) { engine.create_result(cb, "tissue", frame("s1"), done); });
    CHECK(o.error);
    std::size_t posts = 0;
    for (const auto& q : server.requests()) posts += q.method == "POST";
    CHECK(posts == 1);
  }
  SECTION("POST is not retried after a 500 (DPAT may have stored it)") {
    TestServer server(
        [](const Received&, std::size_t) { return Reply::json(500, R"({"error":"boom"})"); });
    CallbackEngine engine(fast());
    auto o = await<StoredResult>(
        [&](auto done) { engine.create_result(info_for(server), "tissue", frame("s1"), done); });
    auto e = error_of(o.error);
    CHECK(e.kind() == CallbackErrorKind::server);
    CHECK(std::string(e.what()) ==
          "POST /applications/tissue/results: 500 Internal Server Error: boom");
    CHECK(server.request_count() == 1);
  }
  SECTION("an answer that is not the promised JSON: protocol") {
    TestServer server(
        [](const Received&, std::size_t) { return Reply::json(200, R"({"not":"a list"})"); });
    CallbackEngine engine(fast());
    auto o = list_s1(engine, server);
    auto e = error_of(o.error);
    CHECK(e.kind() == CallbackErrorKind::protocol);
    CHECK_THAT(e.what(), Catch::Matchers::StartsWith(
                             "GET /applications/tissue/results/slide/s1: malformed answer: "));
  }
  SECTION("nobody listening: transport, after the retries") {
    int port = 0;
    {
      TestServer gone([](const Received&, std::size_t) { return Reply::json(200, "[]"); });
      port = gone.port();
    }
    CallbackEngine engine(fast());
    auto o = await<std::vector<StoredResult>>([&](auto done) {
      engine.list_results({"http://127.0.0.1:" + std::to_string(port), kToken}, "tissue", "s1",
                          done);
    });
    auto e = error_of(o.error);
    CHECK(e.kind() == CallbackErrorKind::transport);
    CHECK_THAT(e.what(), Catch::Matchers::EndsWith("(after 3 attempts)"));
    CHECK(engine.requests_sent() == 3);
  }
}

TEST_CASE("engine: stop lets calls finish within the grace, then cancels the rest",
          "[engine][stop]") {
  TestServer server([](const Received& q, std::size_t) {
    Reply r = Reply::json(200, "[]");
    if (q.target.find("hang") != std::string::npos) r.hang = true;
    return r;
  });
  CallbackEngine engine(fast(), 4);
  const auto cb = info_for(server);
  auto hung = std::make_shared<std::promise<CallOutcome<std::vector<StoredResult>>>>();
  auto hung_future = hung->get_future();
  engine.list_results(cb, "tissue", "hang", [hung](auto o) { hung->set_value(std::move(o)); });
  auto quick = await<std::vector<StoredResult>>(
      [&](auto done) { engine.list_results(cb, "tissue", "s1", done); });
  CHECK(quick.value);
  CHECK(in_flight_reaches(engine, 1));
  engine.stop(200ms);
  REQUIRE(hung_future.wait_for(5s) == std::future_status::ready);
  auto e = error_of(hung_future.get().error);
  CHECK(e.kind() == CallbackErrorKind::cancelled);
  CHECK(in_flight_reaches(engine, 0));
  // After stop a call completes at once, cancelled, on the caller's thread.
  auto late = await<std::vector<StoredResult>>(
      [&](auto done) { engine.list_results(cb, "tissue", "s2", done); });
  CHECK(error_of(late.error).kind() == CallbackErrorKind::cancelled);
}

TEST_CASE("engine: stop gives calls in flight their grace, and the next call of a sequence too",
          "[engine][stop]") {
  TestServer server(answers_after(150ms, 200, "[]"));
  CallbackEngine engine(fast(), 4);
  const auto cb = info_for(server);
  auto second = std::make_shared<std::promise<CallOutcome<std::vector<StoredResult>>>>();
  auto second_future = second->get_future();
  // The first call's completion starts a second one, as a create does.
  engine.list_results(cb, "tissue", "s1", [&engine, cb, second](auto first) {
    if (!first.value) {
      second->set_value(std::move(first));
      return;
    }
    engine.list_results(cb, "tissue", "s2", [second](auto o) { second->set_value(std::move(o)); });
  });
  engine.stop(5s);
  REQUIRE(second_future.wait_for(1s) == std::future_status::ready);
  auto o = second_future.get();
  CHECK(o.value);
  CHECK(!o.error);
  CHECK(server.request_count() == 2);
}

TEST_CASE("engine: a call waiting to retry holds up no other call", "[engine][retry]") {
  std::atomic<int> slow_attempts{0};
  TestServer server([&slow_attempts](const Received& q, std::size_t) {
    if (q.target.find("slow") != std::string::npos && slow_attempts++ == 0)
      return Reply::json(503, R"({"error":"busy"})");
    return Reply::json(200, "[]");
  });
  auto o = fast();
  o.backoff_initial = 1500ms;  // the retry comes 0.75 to 1.5 s later
  o.backoff_max = 1500ms;
  CallbackEngine engine(o, 4);
  const auto cb = info_for(server);
  std::atomic<bool> slow_done{false};
  auto slow = std::make_shared<std::promise<CallOutcome<std::vector<StoredResult>>>>();
  auto slow_future = slow->get_future();
  engine.list_results(cb, "tissue", "slow", [&slow_done, slow](auto r) {
    slow_done = true;
    slow->set_value(std::move(r));
  });
  // Once the first attempt failed, the slow call waits; a second call goes by.
  for (int i = 0; i < 500 && slow_attempts < 1; ++i) std::this_thread::sleep_for(10ms);
  auto quick = await<std::vector<StoredResult>>(
      [&](auto done) { engine.list_results(cb, "tissue", "s1", done); });
  CHECK(quick.value);
  CHECK(!slow_done);  // an ordering, not a time: it still waits for its retry
  REQUIRE(slow_future.wait_for(20s) == std::future_status::ready);
  CHECK(slow_future.get().value);
  CHECK(server.request_count() == 3);
}

TEST_CASE("engine: calls waiting for a place do not spend their timeout waiting",
          "[engine][timeout]") {
  TestServer server(answers_after(300ms, 201, json_text(to_json(stored(frame("s1"), 1, "v1")))));
  auto o = fast();
  o.total_timeout = 700ms;  // each request takes 300 ms; four in a row 1.2 s
  CallbackEngine engine(o, 1);
  const auto cb = info_for(server);
  std::vector<std::future<CallOutcome<StoredResult>>> futures;
  for (int i = 0; i < 4; ++i) {
    auto p = std::make_shared<std::promise<CallOutcome<StoredResult>>>();
    futures.push_back(p->get_future());
    engine.create_result(cb, "tissue", frame("s1"), [p](auto r) { p->set_value(std::move(r)); });
  }
  for (auto& f : futures) {
    REQUIRE(f.wait_for(20s) == std::future_status::ready);
    auto r = f.get();
    CHECK(r.value);
    if (r.error) FAIL(error_of(r.error).what());
  }
  CHECK(server.request_count() == 4);
  CHECK(server.connection_count() == 1);
}

TEST_CASE("engine: a kept-alive connection DPAT closed meanwhile is replaced, the POST sent once",
          "[engine][keepalive]") {
  // Each answer keeps the connection alive by its headers, then the server
  // closes it: the next request finds it dead before anything came back.
  TestServer server([](const Received&, std::size_t i) {
    Reply r = Reply::json(201, json_text(to_json(stored(frame("s1"), static_cast<std::int64_t>(i + 1), "v1"))));
    r.close = true;
    return r;
  });
  CallbackEngine engine(fast(), 4);
  const auto cb = info_for(server);
  for (int i = 0; i < 3; ++i) {
    auto o = await<StoredResult>([&](auto done) { engine.create_result(cb, "tissue", frame("s1"), done); });
    if (o.error) FAIL(error_of(o.error).what());
    REQUIRE(o.value);
    CHECK(o.value->id == i + 1);
    std::this_thread::sleep_for(20ms);  // the close reaches the engine's side first
  }
  CHECK(server.request_count() == 3);  // a POST is never sent twice
  CHECK(server.connection_count() == 3);
  CHECK(engine.requests_sent() == 3);
}

TEST_CASE("engine: timeouts and oversized answers end calls with the client's kinds and texts",
          "[engine][errors]") {
  SECTION("no answer within total_timeout: transport, after the retries") {
    TestServer server([](const Received&, std::size_t) {
      Reply r = Reply::json(200, "[]");
      r.hang = true;
      return r;
    });
    auto o = fast();
    o.total_timeout = 200ms;
    o.max_attempts = 2;
    CallbackEngine engine(o);
    auto r = list_s1(engine, server);
    auto e = error_of(r.error);
    CHECK(e.kind() == CallbackErrorKind::transport);
    CHECK_THAT(e.what(), Catch::Matchers::StartsWith("GET /applications/tissue/results/slide/s1: Operation timed out") &&
                             Catch::Matchers::EndsWith("(after 2 attempts)"));
    CHECK(server.request_count() == 2);
  }
  SECTION("an answer over max_body_bytes: protocol, not retried") {
    TestServer server([](const Received&, std::size_t) { return Reply::json(200, "[" + std::string(5000, ' ') + "]"); });
    auto o = fast();
    o.max_body_bytes = 4096;
    CallbackEngine engine(o);
    auto r = list_s1(engine, server);
    auto e = error_of(r.error);
    CHECK(e.kind() == CallbackErrorKind::protocol);
    CHECK(std::string(e.what()) == "GET /applications/tissue/results/slide/s1: answer larger than 4096 bytes");
    CHECK(server.request_count() == 1);
  }
}

namespace {

// Sets (or unsets, given nullptr) an environment variable for one scope.
class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value)
      ::setenv(name, value, 1);
    else
      ::unsetenv(name);
  }
  ~EnvVar() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  EnvVar(const EnvVar&) = delete;
  EnvVar& operator=(const EnvVar&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

}  // namespace

TEST_CASE("engine: with http_proxy set, http:// calls go through curl and the proxy", "[engine][proxy]") {
  TestServer proxy(answers_after(0ms, 200, "[]"));
  EnvVar http_proxy("http_proxy", proxy.url().c_str());
  EnvVar no_proxy("no_proxy", nullptr);
  EnvVar no_proxy_caps("NO_PROXY", nullptr);
  CallbackEngine engine(fast());
  auto o = await<std::vector<StoredResult>>([&](auto done) {
    engine.list_results({"http://dpat.invalid:8080/api/v1", kToken}, "tissue", "s1", done);
  });
  if (o.error) FAIL(error_of(o.error).what());
  REQUIRE(proxy.request_count() == 1);
  // A proxy is sent the whole URL.
  CHECK(proxy.requests()[0].target == "http://dpat.invalid:8080/api/v1/applications/tissue/results/slide/s1");
}

TEST_CASE("engine: https:// goes through curl: verified by default, a CA file trusts a private CA",
          "[engine][tls]") {
  iaserve::test::TlsTestServer server;
  const CallbackInfo cb{server.url(), kToken};

  CallbackEngine strict(fast());
  auto refused = await<ImageInfo>([&](auto done) { strict.image_info(cb, "s1", done); });
  auto e = error_of(refused.error);
  CHECK(e.kind() == CallbackErrorKind::transport);
  CHECK_THAT(e.what(), Catch::Matchers::StartsWith("GET /slides/s1/info: ") &&
                           Catch::Matchers::Contains("certificate"));
  CHECK(strict.requests_sent() == 1);  // a certificate problem is not retried

  auto o = fast();
  o.ca_file = server.cert();
  CallbackEngine trusted(o);
  // s_server -www answers any GET with an HTML page: TLS worked, the answer is not ImageInfo.
  auto page = await<ImageInfo>([&](auto done) { trusted.image_info(cb, "s1", done); });
  auto p = error_of(page.error);
  CHECK(p.kind() == CallbackErrorKind::protocol);
  CHECK_THAT(p.what(), Catch::Matchers::StartsWith("GET /slides/s1/info: malformed answer: "));
}

TEST_CASE("engine: an interim 1xx answer is skipped, the connection then serves the next call",
          "[engine][keepalive]") {
  TestServer server([](const Received&, std::size_t i) {
    Reply r = Reply::json(200, json_text(to_json(std::vector<StoredResult>{
                                   stored(frame("s1"), static_cast<std::int64_t>(i + 1), "v1")})));
    r.pieces.insert(r.pieces.begin(), "HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n");
    return r;
  });
  CallbackEngine engine(fast(), 4);
  const auto cb = info_for(server);
  for (std::int64_t i = 1; i <= 2; ++i) {
    auto o = await<std::vector<StoredResult>>([&](auto done) { engine.list_results(cb, "tissue", "s1", done); });
    if (o.error) FAIL(error_of(o.error).what());
    REQUIRE(o.value);
    REQUIRE(o.value->size() == 1);
    CHECK(o.value->at(0).id == i);  // its own answer, not the one before
  }
  CHECK(server.connection_count() == 1);
}

TEST_CASE("engine: a host that cannot be resolved is a transport error, a POST is retried (nothing was sent)",
          "[engine][errors]") {
  CallbackEngine engine(fast());
  auto o = await<StoredResult>([&](auto done) {
    engine.create_result({"http://dpat.invalid:8080/api/v1", kToken}, "tissue", frame("s1"), done);
  });
  auto e = error_of(o.error);
  CHECK(e.kind() == CallbackErrorKind::transport);
  CHECK_THAT(e.what(), Catch::Matchers::StartsWith("POST /applications/tissue/results: ") &&
                           Catch::Matchers::EndsWith("(after 3 attempts)"));
  CHECK(engine.requests_sent() == 3);
}

TEST_CASE("engine: stop cancels a call waiting for its retry at once", "[engine][stop]") {
  TestServer server([](const Received&, std::size_t) {
    return Reply::with(503, R"({"error":"busy"})", {"Retry-After: 30"});
  });
  auto o = fast();
  o.max_retry_time = 120s;
  CallbackEngine engine(o, 4);
  auto p = std::make_shared<std::promise<CallOutcome<std::vector<StoredResult>>>>();
  auto f = p->get_future();
  engine.list_results(info_for(server), "tissue", "s1", [p](auto r) { p->set_value(std::move(r)); });
  for (int i = 0; i < 500 && server.request_count() < 1; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(server.request_count() == 1);
  engine.stop(0ms);
  REQUIRE(f.wait_for(5s) == std::future_status::ready);  // not the 30 s Retry-After
  CHECK(error_of(f.get().error).kind() == CallbackErrorKind::cancelled);
  CHECK(in_flight_reaches(engine, 0));
}
