// The callback client against a real HTTP server on loopback: routes and
// their headers, retries, error kinds, timeouts, upsert, and slide download.
#include "iaapi/client.hpp"
#include "iaapi/download.hpp"
#include "iaapi/result_builder.hpp"
#include "tests/support/process.hpp"
#include "tests/unit/client/fixtures.hpp"
#include "tests/unit/client/test_server.hpp"
#include "tests/unit/client/tls_server.hpp"

#include <sys/stat.h>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

using namespace iaserve::iaapi;
using iaserve::test::read_file;
using iaserve::test::json_text;
using iaserve::test::Received;
using iaserve::test::stored;
using iaserve::test::Reply;
using iaserve::test::TempDir;
using iaserve::test::TestServer;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const std::string kToken = "secret-token-0123456789";

ClientOptions fast() { return iaserve::test::fast_client_options(); }

CallbackClient client_for(const TestServer& s, ClientOptions o = fast()) {
  return CallbackClient({s.url() + "/api/v1/", kToken}, std::move(o));
}

template <class F>
std::optional<CallbackError> error_from(F&& f) {
  try {
    f();
  } catch (const CallbackError& e) {
    return e;
  }
  return std::nullopt;
}


Result sample_result(const std::string& slide, const std::string& text) {
  return primitive_result(slide, {}, text, "0.1.0");
}


ImageInfo sample_info() {
  ImageInfo i;
  i.id = "1.2.3/x y";
  i.image_size = {2220, 2967};
  i.tile_size = {240, 240};
  i.microns_per_pixel = 0.499;
  return i;
}


std::vector<std::string> names_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

struct Part {
  std::string disposition;  // the whole Content-Disposition value
  std::string content;
};

std::string multipart_body(const std::vector<Part>& parts, const std::string& boundary) {
  std::string b = "preamble to be ignored\r\n";
  for (auto& p : parts) {
    b += "\r\n--" + boundary + "\r\nContent-Type: application/octet-stream\r\n";
    if (!p.disposition.empty()) b += "Content-Disposition: " + p.disposition + "\r\n";
    b += "\r\n" + p.content;
  }
  return b + "\r\n--" + boundary + "--\r\nepilogue, ignored too\r\n";
}

std::vector<std::string> pieces(const std::string& s, std::size_t size) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size(); i += size) out.push_back(s.substr(i, size));
  return out;
}

ino_t inode(const fs::path& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_ino;
}

}  // namespace

TEST_CASE("client: every route sends its method, path and headers", "[client]") {
  const Result r = sample_result("s1", "3 regions");
  const CaseImageInfo case_image{
      "s2", std::string("HE"), std::nullopt, std::nullopt, std::nullopt, std::nullopt, {}};
  const std::map<std::string, Reply> routes = {
      {"GET /api/v1/info", Reply::json(200, R"({"apiVersion":"1.10","softwareVersion":"4.2.1"})")},
      {"GET /api/v1/slides/1.2.3%2Fx%20y/info",
       Reply::json(200, json_text(to_json(sample_info())))},
      {"GET /api/v1/slides/1.2.3%2Fx%20y/info?scope=extended&includePHI=true",
       Reply::json(200, json_text(to_json(sample_info())))},
      {"GET /api/v1/slides/s1/label", Reply::with(200, "PNGLABEL", {}, "image/png")},
      {"GET /api/v1/slides/nolabel/label", Reply::with(204, "")},
      {"GET /api/v1/images/s1_files/12/3_4.jpg", Reply::with(200, "JPEG-A", {}, "image/jpeg")},
      {"GET /api/v1/images/s1_files/12/3_4_0.png?opticalPath=op%201",
       Reply::with(200, "PNG-B", {}, "image/png")},
      {"POST /api/v1/applications/tissue%20app/results",
       Reply::json(201, json_text(to_json(stored(r, 7, "v1"))))},
      {"GET /api/v1/applications/tissue%20app/results/slide/s1",
       Reply::json(200, json_text(to_json(std::vector<StoredResult>{stored(r, 7, "v1")})))},
      {"GET /api/v1/applications/tissue%20app/results/7",
       Reply::json(200, json_text(to_json(stored(r, 7, "v1"))))},
      {"PUT /api/v1/applications/tissue%20app/results/7",
       Reply::json(200, json_text(to_json(stored(r, 7, "v2"))))},
      {"GET /api/v1/requests/ACC%201/images/info?includePHI=true&accessionNumberIssuerId=iss",
       Reply::json(200, json_text(to_json(std::vector<CaseImageInfo>{case_image})))},
      {"GET /api/v1/slides/s1/request/images/info",
       Reply::json(200, json_text(to_json(std::vector<CaseImageInfo>{case_image, case_image})))},
      {"PUT /api/v1/slides/s1/qualityControl", Reply::with(204, "")},
  };
  TestServer server([&](const Received& q, std::size_t) {
    auto it = routes.find(q.method + " " + q.target);
    return it != routes.end() ? it->second : Reply::json(404, R"({"error":"no such route"})");
  });
  auto c = client_for(server);

  const auto info = c.get_info();
  CHECK(info.api_version == "1.10");
  CHECK(info.software_version == "4.2.1");
  CHECK(c.get_image_info("1.2.3/x y").image_size == Size{2220, 2967});
  CHECK(c.get_image_info("1.2.3/x y", true, true).id == "1.2.3/x y");
  CHECK(c.get_label("s1") == Bytes{'P', 'N', 'G', 'L', 'A', 'B', 'E', 'L'});
  CHECK(c.get_label("nolabel") == std::nullopt);
  CHECK(c.get_tile("s1", 12, 3, 4) == Bytes{'J', 'P', 'E', 'G', '-', 'A'});
  CHECK(c.get_tile("s1", 12, 3, 4, "png", 0, "op 1") == Bytes{'P', 'N', 'G', '-', 'B'});
  const auto created = c.create_result("tissue app", r);
  CHECK(created.id == 7);
  CHECK(created.version_id == "v1");
  const auto list = c.list_results("tissue app", "s1");
  REQUIRE(list.size() == 1);
  CHECK(list[0].display_result == "3 regions");
  CHECK(c.get_result("tissue app", 7).version_id == "v1");
  CHECK(c.update_result("tissue app", created).version_id == "v2");
  CHECK(c.get_case_images("ACC 1", true, "iss").size() == 1);
  CHECK(c.get_slide_case_images("s1").size() == 2);
  QualityControl qc;
  qc.application_version = "0.1.0";
  qc.quality_control = {QualityStatus::Rejected, "qv3"};
  c.put_quality_control("s1", qc);

  const auto got = server.requests();
  REQUIRE(got.size() == 14);
  for (auto& q : got) {
    INFO(q.method << " " << q.target);
    CHECK(routes.count(q.method + " " + q.target) == 1);
    CHECK(q.header("authorization") == "Bearer " + kToken);
    CHECK(q.header("x-sectra-apiversion") == "1.10");
    const bool binary = q.target.find("/label") != std::string::npos ||
                        q.target.find("/images/s1_files") != std::string::npos;
    CHECK(q.header("accept") == (binary ? "*/*" : "application/json"));
    if (q.method == "POST" || q.method == "PUT")
      CHECK(q.header("content-type") == "application/json");
  }
  // Bodies as DPAT receives them.
  const auto post = boost::json::parse(got[7].body).as_object();
  CHECK(post.at("slideId") == "s1");
  CHECK(post.at("displayResult") == "3 regions");
  CHECK(!post.contains("id"));
  const auto put = boost::json::parse(got[10].body).as_object();
  CHECK(put.at("id") == 7);
  CHECK(put.at("versionId") == "v1");
  const auto qcb = boost::json::parse(got[13].body).as_object();
  CHECK(qcb.at("applicationVersion") == "0.1.0");
  CHECK(qcb.at("qualityControl").at("status") == "Rejected");
  CHECK(qcb.at("qualityControl").at("versionId") == "qv3");
  // One connection, kept alive for every call, but the one POST: it takes
  // a fresh one (nothing to send again should it die).
  CHECK(server.connection_count() == 2);
  CHECK(c.requests_sent() == 14);
}

TEST_CASE("client: 503 is retried until it succeeds", "[client][retry]") {
  TestServer server([](const Received&, std::size_t i) {
    return i < 2 ? Reply::json(503, R"({"error":"busy"})")
                 : Reply::json(200, R"({"apiVersion":"1.10","softwareVersion":"x"})");
  });
  auto c = client_for(server);
  CHECK(c.get_info().software_version == "x");
  CHECK(server.request_count() == 3);
}

TEST_CASE("client: Retry-After is honoured, or ends the retries when over budget",
          "[client][retry]") {
  SECTION("a short Retry-After is waited for") {
    TestServer server([](const Received&, std::size_t i) {
      return i == 0 ? Reply::with(429, "", {"Retry-After: 1"})
                    : Reply::json(200, R"({"apiVersion":"1.10","softwareVersion":"x"})");
    });
    auto c = client_for(server);
    const auto start = std::chrono::steady_clock::now();
    c.get_info();
    CHECK(std::chrono::steady_clock::now() - start >= 1s);  // a lower bound: never flaky
    CHECK(server.request_count() == 2);
  }
  SECTION("one beyond the retry budget is not waited for") {
    TestServer server([](const Received&, std::size_t) {
      return Reply::with(503, R"({"error":"maintenance"})", {"Retry-After: 120"});
    });
    auto o = fast();
    o.max_retry_time = 2s;
    auto c = client_for(server, o);
    auto e = error_from([&] { c.get_info(); });
    REQUIRE(e);
    CHECK(e->kind() == CallbackErrorKind::server);
    CHECK(e->status() == 503);
    CHECK(std::string(e->what()) ==
          "GET /info: 503 Service Unavailable: maintenance (next retry in 120000 ms would exceed "
          "the 2000 ms budget)");
    CHECK(server.request_count() == 1);
  }
}

TEST_CASE("client: 4xx are never retried and map to their kinds", "[client][errors]") {
  struct Case {
    int status;
    CallbackErrorKind kind;
    std::string message;
  };
  for (const Case& k :
       {Case{400, CallbackErrorKind::client, "GET /slides/s1/info: 400 Bad Request: bad thing"},
        Case{401, CallbackErrorKind::token_expired,
             "GET /slides/s1/info: 401 Unauthorized: bad thing"},
        Case{404, CallbackErrorKind::not_found, "GET /slides/s1/info: 404 Not Found: bad thing"},
        Case{409, CallbackErrorKind::conflict, "GET /slides/s1/info: 409 Conflict: bad thing"}}) {
    TestServer server([&](const Received&, std::size_t) {
      return Reply::json(k.status, R"({"error":"bad thing"})");
    });
    auto c = client_for(server);
    auto e = error_from([&] { c.get_image_info("s1"); });
    REQUIRE(e);
    CHECK(e->kind() == k.kind);
    CHECK(e->status() == k.status);
    CHECK(std::string(e->what()) == k.message);
    CHECK(std::string(e->what()).find(kToken) == std::string::npos);
    CHECK(server.request_count() == 1);
  }
}

TEST_CASE("client: 5xx after the retries is a server error, POST retried only on 503/429",
          "[client][errors]") {
  TestServer server(
      [](const Received&, std::size_t) { return Reply::with(500, "boom\n", {}, "text/plain"); });
  auto c = client_for(server);
  auto e = error_from([&] { c.get_info(); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::server);
  CHECK(std::string(e->what()) == "GET /info: 500 Internal Server Error: boom (after 3 attempts)");
  CHECK(server.request_count() == 3);

  e = error_from([&] { c.create_result("tissue", sample_result("s1", "x")); });
  REQUIRE(e);
  CHECK(std::string(e->what()) ==
        "POST /applications/tissue/results: 500 Internal Server Error: boom");
  CHECK(server.request_count() == 4);  // not retried: DPAT may have stored it

  TestServer busy([](const Received&, std::size_t i) {
    return i == 0 ? Reply::json(503, "{}")
                  : Reply::json(201, json_text(to_json(stored(sample_result("s1", "x"), 1, "v1"))));
  });
  auto c2 = client_for(busy);
  CHECK(c2.create_result("tissue", sample_result("s1", "x")).id == 1);
  CHECK(busy.request_count() == 2);
}

TEST_CASE("client: a POST is never sent again after DPAT took it whole and closed without an answer",
          "[client][retry]") {
  TestServer server([](const Received& q, std::size_t) {
    if (q.method == "GET") return Reply::json(200, "[]");
    Reply r;
    r.close = true;  // read it, perhaps stored it, closed
    return r;
  });
  auto c = client_for(server);
  CHECK(c.list_results("tissue", "s1").empty());  // the connection is kept alive
  auto e = error_from([&] { c.create_result("tissue", sample_result("s1", "x")); });
  CHECK(e);
  std::size_t posts = 0;
  for (const auto& q : server.requests()) posts += q.method == "POST";
  CHECK(posts == 1);
}

TEST_CASE("client: the retry budget counts the waits, not the attempts", "[client][timeout]") {
  TestServer server([](const Received&, std::size_t) {
    Reply r;
    r.hang = true;
    return r;
  });
  auto o = fast();
  o.total_timeout = 300ms;  // each attempt takes longer than the whole budget
  o.max_retry_time = 100ms;
  o.max_attempts = 3;
  auto c = client_for(server, o);
  auto e = error_from([&] { c.get_info(); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::transport);
  CHECK_THAT(e->what(), Catch::Matchers::EndsWith("(after 3 attempts)"));
  CHECK(server.request_count() == 3);
}

TEST_CASE("client: 429 after the retries is its own kind, throttled, with its status", "[client][errors]") {
  TestServer server([](const Received&, std::size_t) { return Reply::json(429, R"({"error":"slow down"})"); });
  auto c = client_for(server);
  auto e = error_from([&] { c.list_results("tissue", "s1"); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::throttled);
  CHECK(std::string(to_string(e->kind())) == "throttled");
  CHECK(e->status() == 429);
  CHECK(std::string(e->what()) ==
        "GET /applications/tissue/results/slide/s1: 429 Too Many Requests: slow down (after 3 attempts)");
  CHECK(server.request_count() == 3);
}

TEST_CASE("client: a server that never answers ends in a transport error", "[client][timeout]") {
  TestServer server([](const Received&, std::size_t) {
    Reply r;
    r.hang = true;
    return r;
  });
  auto o = fast();
  o.total_timeout = 300ms;
  o.max_attempts = 2;
  auto c = client_for(server, o);
  auto e = error_from([&] { c.get_info(); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::transport);
  CHECK(e->status() == 0);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith("GET /info: Operation timed out") &&
                            Catch::Matchers::EndsWith("(after 2 attempts)"));
  CHECK(server.request_count() == 2);
}

TEST_CASE("client: connection refused is retried, then a transport error", "[client][timeout]") {
  std::string url;
  {
    TestServer gone([](const Received&, std::size_t) { return Reply::json(200, "{}"); });
    url = gone.url();
  }
  CallbackClient c({url, kToken}, fast());
  auto e = error_from([&] { c.get_info(); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::transport);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith("GET /info: ") &&
                            Catch::Matchers::EndsWith("(after 3 attempts)"));
  CHECK(c.requests_sent() == 3);
}

TEST_CASE("client: an answer it cannot use is a protocol error", "[client][errors]") {
  TestServer server([](const Received& q, std::size_t) {
    if (q.target == "/api/v1/info") return Reply::json(200, "{not json");
    return Reply::json(200, R"({"id":"s1","imageSize":{"width":"wide","height":3}})");
  });
  auto c = client_for(server);
  auto e = error_from([&] { c.get_info(); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::protocol);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith("GET /info: malformed answer: body: "));
  e = error_from([&] { c.get_image_info("s1"); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::protocol);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith(
                            "GET /slides/s1/info: malformed answer: imageSize.width: "));
  CHECK(server.request_count() == 2);
}

namespace {

// DPAT's result store for one slide, enough for upsert.
struct FakeResults {
  std::mutex mutex;
  std::vector<StoredResult> store;
  int conflicts_to_give = 0;
  int puts = 0, posts = 0;
  std::int64_t next_id = 1;

  Reply handle(const Received& q) {
    std::lock_guard lock(mutex);
    const std::string base = "/api/v1/applications/tissue/results";
    if (q.method == "GET" && q.target == base + "/slide/s1")
      return Reply::json(200, json_text(to_json(store)));
    if (q.method == "POST" && q.target == base) {
      ++posts;
      auto r = decode_body<Result>(q.body);
      if (!r) return Reply::json(400, R"({"error":"bad result"})");
      store.push_back(stored(*r, next_id++, "v1"));
      return Reply::json(201, json_text(to_json(store.back())));
    }
    if (q.method == "PUT" && q.target.starts_with(base + "/")) {
      ++puts;
      const auto id = std::stoll(q.target.substr(base.size() + 1));
      auto s = decode_body<StoredResult>(q.body);
      if (!s) return Reply::json(400, R"({"error":"bad stored result"})");
      for (auto& x : store) {
        if (x.id != id) continue;
        if (conflicts_to_give > 0 || s->version_id != x.version_id) {
          if (conflicts_to_give > 0) {
            --conflicts_to_give;
            x.version_id += "'";  // someone else updated it meanwhile
          }
          return Reply::json(409, R"({"error":"stale versionId"})");
        }
        x = stored(*s, id, x.version_id + "+");
        return Reply::json(200, json_text(to_json(x)));
      }
      return Reply::json(404, R"({"error":"no such result"})");
    }
    return Reply::json(404, R"({"error":"no such route"})");
  }
};

}  // namespace

TEST_CASE("client: upsert posts once, then puts over the newest with its versionId",
          "[client][upsert]") {
  FakeResults dpat;
  TestServer server([&](const Received& q, std::size_t) { return dpat.handle(q); });
  auto c = client_for(server);

  const auto first = c.upsert_result("tissue", "s1", sample_result("s1", "queued"));
  CHECK(first.id == 1);
  const auto second = c.upsert_result("tissue", "s1", sample_result("s1", "running (40 %)"));
  CHECK(second.id == 1);
  CHECK(second.version_id == "v1+");
  CHECK(second.display_result == "running (40 %)");
  CHECK(dpat.posts == 1);
  CHECK(dpat.puts == 1);
  CHECK(dpat.store.size() == 1);

  SECTION("the newest of several is updated") {
    dpat.store.push_back(stored(sample_result("s1", "older"), 5, "w5"));
    dpat.store.push_back(stored(sample_result("s1", "newest"), 9, "w9"));
    const auto r = c.upsert_result("tissue", "s1", sample_result("s1", "done"));
    CHECK(r.id == 9);
    CHECK(r.version_id == "w9+");
  }
  SECTION("a 409 re-lists and retries") {
    dpat.conflicts_to_give = 1;
    const auto r = c.upsert_result("tissue", "s1", sample_result("s1", "done"));
    CHECK(r.version_id == "v1+'+");
    CHECK(dpat.puts == 3);
  }
  SECTION("a 409 that persists ends as a conflict") {
    dpat.conflicts_to_give = 100;
    auto e = error_from([&] { c.upsert_result("tissue", "s1", sample_result("s1", "done")); });
    REQUIRE(e);
    CHECK(e->kind() == CallbackErrorKind::conflict);
    CHECK(std::string(e->what()) ==
          "PUT /applications/tissue/results/1: 409 Conflict: stale versionId");
    CHECK(dpat.puts == 1 + 3);
  }
}

TEST_CASE("download: a 2xx other than 200 (a 206 from a proxy) is an error and never a finished file",
          "[download]") {
  const std::string content = random_bytes(100'000, 3);
  TempDir tmp;
  TestServer server([&](const Received&, std::size_t i) {
    if (i == 0)
      return Reply::with(206, content.substr(0, 1000), {"Content-Disposition: attachment; filename=\"a.svs\""},
                         "application/octet-stream");
    return Reply::with(200, content, {"Content-Disposition: attachment; filename=\"a.svs\""},
                       "application/octet-stream");
  });
  auto c = client_for(server);
  auto e = error_from([&] { c.download_files("s1", tmp / "slide"); });
  REQUIRE(e);
  CHECK(e->status() == 206);
  // Asked again: requested again (nothing was recorded as complete), and whole.
  const auto files = c.download_files("s1", tmp / "slide");
  CHECK(server.request_count() == 2);
  REQUIRE(files.size() == 1);
  CHECK(read_file(files[0]) == content);
}

TEST_CASE("download: one file, named by Content-Disposition", "[download]") {
  const std::string content = random_bytes(200'000, 7);
  for (const std::string disposition :
       {"attachment; filename=\"CMU-1.svs\"",
        "attachment; filename=\"x.svs\"; filename*=UTF-8''CMU-1.svs"}) {
    INFO(disposition);
    TempDir tmp;
    TestServer server([&](const Received& q, std::size_t) {
      REQUIRE(q.target == "/api/v1/slides/s1/files");
      return Reply::with(200, content, {"Content-Disposition: " + disposition},
                         "application/octet-stream")
          .split(7000);
    });
    auto c = client_for(server);
    std::uint64_t last_done = 0, last_total = 0, calls = 0;
    const auto files = c.download_files("s1", tmp / "slide", [&](std::uint64_t d, std::uint64_t t) {
      CHECK(d >= last_done);
      last_done = d;
      last_total = t;
      ++calls;
    });
    REQUIRE(files == std::vector<fs::path>{tmp / "slide" / "CMU-1.svs"});
    CHECK(read_file(files[0]) == content);
    CHECK(last_done == content.size());
    CHECK(last_total == content.size());
    CHECK(calls > 1);
    CHECK(names_in(tmp / "slide") == std::vector<std::string>{".iaserve-download", "CMU-1.svs"});

    // Complete: asked again, nothing is requested.
    CHECK(c.download_files("s1", tmp / "slide") == files);
    CHECK(server.request_count() == 1);
    // A file changed on disk is fetched again.
    fs::resize_file(files[0], 10);
    CHECK(c.download_files("s1", tmp / "slide") == files);
    CHECK(read_file(files[0]) == content);
    CHECK(server.request_count() == 2);
  }
}

TEST_CASE("download: the real slide, streamed", "[download]") {
  SKIP_WITHOUT_SHARED_DATA();
  const auto slide = *iaserve::test::shared_data() / "CMU-1-Small-Region.svs";
  const std::string content = read_file(slide);
  REQUIRE(content.size() > 1'000'000);
  TestServer server([&](const Received&, std::size_t) {
    return Reply::chunked(200, pieces(content, 65'000),
                          {"Content-Disposition: attachment; filename=\"CMU-1-Small-Region.svs\""},
                          "application/octet-stream");
  });
  TempDir tmp;
  auto c = client_for(server);
  const auto files = c.download_files("s1", tmp.path());
  REQUIRE(files.size() == 1);
  CHECK(fs::file_size(files[0]) == content.size());
  CHECK(read_file(files[0]) == content);
}

TEST_CASE("download: several files as multipart/related", "[download]") {
  const std::vector<Part> parts = {
      {"attachment; filename=\"CMU-1.mrxs\"", "[mrxs]\r\n"},
      {"attachment; filename=\"Slidedat.ini\"", "--not a boundary\r\n"},
      {"attachment; filename=\"Data0000.dat\"", random_bytes(150'000, 1)},
      {"attachment; filename*=UTF-8''Data%200001.dat", random_bytes(90'001, 2)}};
  for (const std::string type :
       {"multipart/related; type=\"application/octet-stream\"; boundary=\"=_b 42\"",
        "multipart/related; boundary==_b"}) {
    const std::string boundary = type.find("42") != std::string::npos ? "=_b 42" : "=_b";
    const std::string body = multipart_body(parts, boundary);
    for (std::size_t piece : {std::size_t{1} << 20, std::size_t{4093}, std::size_t{3}}) {
      if (piece == 3 && boundary != "=_b") continue;  // keep it quick
      INFO(type << " in pieces of " << piece);
      TestServer server([&](const Received&, std::size_t) {
        return Reply::chunked(200, pieces(body, piece), {}, type);
      });
      TempDir tmp;
      auto c = client_for(server);
      const auto files = c.download_files("s1", tmp.path());
      REQUIRE(files == std::vector<fs::path>{tmp / "CMU-1.mrxs", tmp / "Slidedat.ini",
                                             tmp / "Data0000.dat", tmp / "Data 0001.dat"});
      for (std::size_t i = 0; i < parts.size(); ++i) CHECK(read_file(files[i]) == parts[i].content);
      CHECK(names_in(tmp.path()).size() == 5);  // the four and the manifest, no .part
    }
  }
}

TEST_CASE("download: file names keep only their last component", "[download][names]") {
  auto fetch = [](const std::string& disposition, const fs::path& folder) {
    TestServer server([&](const Received&, std::size_t) {
      return Reply::with(200, "DATA", {"Content-Disposition: " + disposition},
                         "application/octet-stream");
    });
    auto c = client_for(server);
    return c.download_files("s1", folder);
  };
  TempDir tmp;
  const fs::path folder = tmp / "a" / "b";
  CHECK(fetch("attachment; filename=\"../../etc/passwd\"", folder / "1") ==
        std::vector<fs::path>{folder / "1" / "passwd"});
  CHECK(fetch("attachment; filename=\"a/b/c.svs\"", folder / "2") ==
        std::vector<fs::path>{folder / "2" / "c.svs"});
  CHECK(fetch("attachment; filename*=UTF-8''..%2F..%2Fx.svs", folder / "3") ==
        std::vector<fs::path>{folder / "3" / "x.svs"});
  CHECK(!fs::exists(tmp / "a" / "etc"));
  CHECK(!fs::exists(tmp / "etc"));

  struct Bad {
    std::string disposition, message;
  };
  for (const Bad& b :
       {Bad{"attachment; filename=\"..\"",
            "GET /slides/s1/files: unsafe file name \"..\": not a file name"},
        Bad{"attachment; filename=\"\"", "GET /slides/s1/files: unsafe file name \"\": empty"},
        Bad{"attachment; filename=\"x/.\"",
            "GET /slides/s1/files: unsafe file name \"x/.\": not a file name"},
        Bad{"attachment; filename*=UTF-8''a%0Ab",
            "GET /slides/s1/files: unsafe file name \"a\\x0ab\": contains a control character"},
        Bad{"attachment",
            "GET /slides/s1/files: answer (Content-Type \"application/octet-stream\") has no "
            "Content-Disposition filename"}}) {
    TempDir t2;
    auto e = error_from([&] { fetch(b.disposition, t2.path()); });
    REQUIRE(e);
    CHECK(e->kind() == CallbackErrorKind::protocol);
    CHECK(std::string(e->what()) == b.message);
    CHECK(names_in(t2.path()).empty());
  }
}

TEST_CASE("download: an interrupted download keeps finished files and fetches the rest",
          "[download][resume]") {
  const std::vector<Part> parts = {{"attachment; filename=\"A.dat\"", random_bytes(100'000, 3)},
                                   {"attachment; filename=\"B.dat\"", random_bytes(100'000, 4)}};
  const std::string body = multipart_body(parts, "bnd");
  const std::string type = "multipart/related; boundary=bnd";
  TestServer server([&](const Received&, std::size_t i) {
    if (i == 0)
      return Reply::cut(200, body.substr(0, 150'000), body.size(), {}, type).split(20'000);
    return Reply::with(200, body, {}, type).split(30'000);
  });
  TempDir tmp;
  auto o = fast();
  o.max_attempts = 1;
  auto c = client_for(server, o);
  auto e = error_from([&] { c.download_files("s1", tmp.path()); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::transport);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith("GET /slides/s1/files: transfer closed with"));
  CHECK(names_in(tmp.path()) == std::vector<std::string>{".iaserve-download", "A.dat"});
  CHECK(read_file(tmp / "A.dat") == parts[0].content);
  const auto a_inode = inode(tmp / "A.dat");

  const auto files = c.download_files("s1", tmp.path());
  REQUIRE(files.size() == 2);
  CHECK(read_file(files[0]) == parts[0].content);
  CHECK(read_file(files[1]) == parts[1].content);
  CHECK(inode(tmp / "A.dat") == a_inode);  // not written again
  CHECK(server.request_count() == 2);
  c.download_files("s1", tmp.path());
  CHECK(server.request_count() == 2);  // complete: no request

  SECTION("with retries the same happens within one call") {
    TempDir t2;
    TestServer again([&](const Received&, std::size_t i) {
      if (i == 0) return Reply::cut(200, body.substr(0, 150'000), body.size(), {}, type);
      return Reply::with(200, body, {}, type);
    });
    auto c2 = client_for(again);
    const auto f2 = c2.download_files("s1", t2.path());
    CHECK(read_file(f2[1]) == parts[1].content);
    CHECK(again.request_count() == 2);
  }
}

TEST_CASE("download: a kept file whose new copy has another length is fetched again, not taken as done",
          "[download][resume]") {
  // The first attempt brings A whole and breaks inside B; by the retry A
  // has changed (other length, no Content-Length in its part to tell).
  const std::vector<Part> first = {{"attachment; filename=\"A.dat\"", std::string(100, 'A')},
                                   {"attachment; filename=\"B.dat\"", random_bytes(100'000, 4)}};
  const std::vector<Part> now = {{"attachment; filename=\"A.dat\"", std::string(200, 'B')}, first[1]};
  const std::string type = "multipart/related; boundary=bnd";
  const std::string body1 = multipart_body(first, "bnd"), body2 = multipart_body(now, "bnd");
  TestServer server([&](const Received&, std::size_t i) {
    if (i == 0) return Reply::cut(200, body1.substr(0, 50'000), body1.size(), {}, type);
    return Reply::with(200, body2, {}, type);
  });
  TempDir tmp;
  auto o = fast();
  o.max_attempts = 1;
  auto c = client_for(server, o);
  CHECK(error_from([&] { c.download_files("s1", tmp.path()); }));
  REQUIRE(read_file(tmp / "A.dat") == first[0].content);
  auto e = error_from([&] { c.download_files("s1", tmp.path()); });  // sees A changed
  REQUIRE(e);
  CHECK_THAT(e->what(), Catch::Matchers::Contains("file \"A.dat\": 200 bytes now, 100 kept from an earlier attempt"));
  const auto files = c.download_files("s1", tmp.path());  // fetches it whole
  REQUIRE(files.size() == 2);
  CHECK(read_file(files[0]) == now[0].content);
  CHECK(read_file(files[1]) == now[1].content);
}

TEST_CASE("download: malformed multipart ends in an error naming it, no partial file",
          "[download][errors]") {
  const std::string good = random_bytes(50'000, 5);
  struct Bad {
    std::string type, body, message;
  };
  const std::string two = multipart_body(
      {{"attachment; filename=\"one.dat\"", good}, {"attachment; filename=\"two.dat\"", good}},
      "b");
  const std::vector<Bad> cases = {
      {"multipart/related", two,
       "GET /slides/s1/files: Content-Type \"multipart/related\" has no boundary parameter"},
      {"multipart/related; boundary=b", two.substr(0, two.size() - 40'000),
       "GET /slides/s1/files: multipart: stream ended inside the body of part 2 (no closing "
       "delimiter)"},
      {"multipart/related; boundary=b", multipart_body({{"attachment", good}}, "b"),
       "GET /slides/s1/files: part 1 has no filename in its Content-Disposition"},
      {"multipart/related; boundary=b", multipart_body({{"", good}}, "b"),
       "GET /slides/s1/files: part 1 has no Content-Disposition (no file name)"},
      {"multipart/related; boundary=b", "this is not multipart at all",
       "GET /slides/s1/files: multipart: stream ended before the first delimiter \"--b\" (28 "
       "bytes)"},
      {"multipart/related; boundary=b", "--b\r\n" + std::string(20'000, 'h'),
       "GET /slides/s1/files: multipart: headers of part 1 exceed 16384 bytes"},
      {"multipart/related; boundary=b",
       multipart_body(
           {{"attachment; filename=\"one.dat\"", "x"}, {"attachment; filename=\"one.dat\"", "y"}},
           "b"),
       "GET /slides/s1/files: file name \"one.dat\" appears twice in the answer"},
      {"multipart/related; boundary=b", "--b--",
       "GET /slides/s1/files: multipart answer without any part"},
  };
  for (const Bad& b : cases) {
    INFO(b.message);
    TestServer server([&](const Received&, std::size_t) {
      return Reply::chunked(200, pieces(b.body, 9'999), {}, b.type);
    });
    TempDir tmp;
    auto c = client_for(server);
    auto e = error_from([&] { c.download_files("s1", tmp.path()); });
    REQUIRE(e);
    CHECK(e->kind() == CallbackErrorKind::protocol);
    CHECK(std::string(e->what()) == b.message);
    CHECK(server.request_count() == 1);  // never retried
    for (const auto& name : names_in(tmp.path())) {
      INFO(name);
      CHECK(name.find(".part") == std::string::npos);
      if (name == "one.dat")  // finished before the error
        CHECK((read_file(tmp / name) == good || read_file(tmp / name) == "x"));
      CHECK(name != "two.dat");
    }
  }
  // An answer that is an error status is not a file.
  TestServer missing([](const Received&, std::size_t) {
    return Reply::json(404, R"({"error":"no such slide"})");
  });
  TempDir tmp;
  auto c = client_for(missing);
  auto e = error_from([&] { c.download_files("s9", tmp.path()); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::not_found);
  CHECK(std::string(e->what()) == "GET /slides/s9/files: 404 Not Found: no such slide");
  CHECK(names_in(tmp.path()).empty());
}

TEST_CASE("download: a stalled answer ends at the low-speed limit, .part removed",
          "[download][timeout]") {
  const std::string content = random_bytes(100'000, 9);
  TestServer server([&](const Received&, std::size_t) {
    Reply r = Reply::with(200, content, {"Content-Disposition: attachment; filename=\"s.svs\""},
                          "application/octet-stream");
    Reply out;
    out.pieces = {
        r.pieces[0].substr(0, 2'000),
        r.pieces[0].substr(2'000)};  // curl averages speed over seconds: keep the burst small
    out.gap = 20s;                   // the test server gives up waiting when the test ends
    return out;
  });
  auto o = fast();
  o.low_speed_bytes = 1000;
  o.low_speed_time = 1s;
  o.max_attempts = 1;
  TempDir tmp;
  auto c = client_for(server, o);
  auto e = error_from([&] { c.download_files("s1", tmp.path()); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::transport);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith("GET /slides/s1/files: Operation too slow"));
  CHECK(names_in(tmp.path()).empty());
}

TEST_CASE("download: an answer trickling a few bytes a second ends at the default low-speed limit",
          "[download][timeout]") {
  const std::string content = random_bytes(100'000, 11);
  TestServer server([&](const Received&, std::size_t) {
    Reply r = Reply::with(200, content, {"Content-Disposition: attachment; filename=\"s.svs\""},
                          "application/octet-stream");
    Reply out;
    const std::string& all = r.pieces[0];
    for (std::size_t i = 0; i < all.size(); i += 2) out.pieces.push_back(all.substr(i, 2));
    out.gap = 250ms;  // 8 bytes a second
    return out;
  });
  auto o = fast();
  o.low_speed_bytes = iaserve::iaapi::ClientOptions{}.low_speed_bytes;  // the default
  o.low_speed_time = 2s;
  o.max_attempts = 1;
  TempDir tmp;
  auto c = client_for(server, o);
  auto e = error_from([&] { c.download_files("s1", tmp.path()); });
  REQUIRE(e);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith("GET /slides/s1/files: Operation too slow"));
  CHECK(names_in(tmp.path()).empty());
}

TEST_CASE("download: cancelled from outside, no file left", "[download][cancel]") {
  const std::string content = random_bytes(300'000, 10);
  TestServer server([&](const Received&, std::size_t) {
    Reply r = Reply::with(200, content, {"Content-Disposition: attachment; filename=\"s.svs\""},
                          "application/octet-stream")
                  .split(10'000);
    r.gap = 20ms;
    return r;
  });
  std::atomic<bool> stop{false};
  auto o = fast();
  o.cancelled = [&] { return stop.load(); };
  TempDir tmp;
  auto c = client_for(server, o);
  auto e = error_from([&] {
    c.download_files("s1", tmp.path(), [&](std::uint64_t done, std::uint64_t) {
      if (done >= 50'000) stop = true;
    });
  });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::cancelled);
  CHECK(std::string(e->what()) == "GET /slides/s1/files: cancelled");
  CHECK(names_in(tmp.path()).empty());
  CHECK(server.request_count() == 1);
}

TEST_CASE("client: TLS is verified by default, a CA file trusts a private CA", "[client][tls]") {
  iaserve::test::TlsTestServer server;
  const std::string url = server.url();

  CallbackClient strict({url, kToken}, fast());
  auto e = error_from([&] { strict.get_label("s1"); });
  REQUIRE(e);
  CHECK(e->kind() == CallbackErrorKind::transport);
  CHECK_THAT(e->what(), Catch::Matchers::StartsWith("GET /slides/s1/label: ") &&
                            Catch::Matchers::Contains("certificate"));
  CHECK(strict.requests_sent() == 1);  // a certificate problem is not retried

  auto o = fast();
  o.ca_file = server.cert();
  CallbackClient trusted({url, kToken}, o);
  const auto page = trusted.get_label("s1");  // s_server -www answers any GET with a page
  REQUIRE(page);
  CHECK(!page->empty());

  o = fast();
  o.verify_tls = false;
  CallbackClient loose({url, kToken}, o);
  CHECK(loose.get_label("s1"));
}

TEST_CASE("download: two downloads into one folder run one after the other", "[download][lock]") {
  const std::string content = random_bytes(60'000, 11);
  TestServer server([&](const Received&, std::size_t) {
    Reply r = Reply::with(200, content, {"Content-Disposition: attachment; filename=\"s.svs\""},
                          "application/octet-stream")
                  .split(10'000);
    r.gap = 20ms;
    return r;
  });
  TempDir tmp;
  std::vector<fs::path> a, b;
  std::thread other([&] { b = client_for(server).download_files("s1", tmp.path()); });
  a = client_for(server).download_files("s1", tmp.path());
  other.join();
  CHECK(a == std::vector<fs::path>{tmp / "s.svs"});
  CHECK(b == a);
  CHECK(read_file(tmp / "s.svs") == content);
  CHECK(server.request_count() == 1);  // the second found it complete
}
