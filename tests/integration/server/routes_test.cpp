// iaserve against dpatsim, both as real processes: the IA-API routes.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "tests/integration/server/harness.hpp"
#include "worker/analysis/spec/spec.hpp"

using namespace iaserve::test;
namespace json = boost::json;

namespace {

json::value parse(const HttpAnswer& a) {
  INFO("body: " << a.body);
  return json::parse(a.body);
}

void check_versions(const HttpAnswer& a) {
  CHECK(a.header("x-sectra-apiversion") == "1.10");
  CHECK_FALSE(a.header("x-sectra-softwareversion").empty());
}

json::object image_info(const std::string& id, const std::string& staining, std::int64_t w = 1024,
                        std::int64_t h = 768) {
  return json::object{{"id", id},
                      {"imageSize", {{"width", w}, {"height", h}}},
                      {"tileSize", {{"width", 256}, {"height", 256}}},
                      {"micronsPerPixel", 0.5},
                      {"staining", {{"displayName", staining}}},
                      {"block", {{"displayName", "A1"}}}};
}

json::object notification(const std::string& app, const std::string& slide, const std::string& cb,
                          const std::string& staining) {
  return json::object{{"applicationId", app},
                      {"slideId", slide},
                      {"callbackInfo", {{"url", cb}, {"token", kToken}}},
                      {"imageInfo", image_info(slide, staining)}};
}

// The programs' runner takes a path, not a name to look up: found as the
// exec analysis finds its program.
std::string on_path(const std::string& name) {
  if (auto found = iaserve::analysis::exec::resolve(name)) return *found;
  FAIL(name << " not found on PATH (the TLS test needs the openssl command)");
  return name;
}

std::size_t count_slide(const std::vector<json::object>& jobs, const std::string& slide,
                        const std::string& kind = {}) {
  std::size_t n = 0;
  for (const auto& p : jobs)
    if (p.at("slideId") == slide.c_str() && (kind.empty() || p.at("kind") == kind.c_str())) ++n;
  return n;
}

}  // namespace

TEST_CASE("registration and info", "[server][integration]") {
  Sim sim;
  Serve serve(two_app_config());
  auto a = http_get(serve.url() + "/apps/tissue", {"Host: dpat-config.example:5006"});
  REQUIRE(a.status == 200);
  check_versions(a);
  auto r = parse(a).as_object();
  CHECK(r.at("applicationId") == "tissue");
  CHECK(r.at("displayName") == "Tissue detection");
  CHECK(r.at("manufacturer") == "iaserve tests");
  CHECK(r.at("url") == "http://dpat-config.example:5006/apps/tissue");
  CHECK(r.at("inputTemplate").at("type") == "taggedPolygon");
  CHECK(r.at("inputTemplate").at("content").at("tags").as_array().size() == 2);
  CHECK(r.at("context").at("model") == "v1");

  // Forwarded headers are ignored unless the peer is a trusted proxy.
  a = http_get(serve.url() + "/apps/tissue",
               {"Host: internal:1", "X-Forwarded-Host: proxy.example", "X-Forwarded-Proto: https"});
  CHECK(parse(a).at("url") == "http://internal:1/apps/tissue");

  // No Host header (an HTTP/1.0 caller): the address and port it reached.
  a = http_get(serve.url() + "/apps/tissue", {"Host:"});
  REQUIRE(a.status == 200);
  CHECK(parse(a).at("url") == (serve.url() + "/apps/tissue").c_str());

  // HEAD wherever GET goes: the headers without the body.
  for (const std::string path : {"/healthz", "/readyz", "/", "/apps/tissue", "/apps/tissue/info", "/metrics"}) {
    INFO(path);
    a = http("HEAD", serve.url() + path, "", {});
    CHECK(a.status == 200);
    CHECK(a.body.empty());
    check_versions(a);
  }
  a = http("HEAD", serve.url() + "/apps/tissue/imagenotification", "", {});
  CHECK(a.status == 405);
  CHECK(a.header("allow") == "POST");
  a = http("DELETE", serve.url() + "/healthz", "", {});
  CHECK(a.status == 405);
  CHECK(a.header("allow") == "GET, HEAD");

  a = http_get(serve.url() + "/apps/other/info");
  REQUIRE(a.status == 200);
  check_versions(a);
  CHECK(parse(a).at("apiVersion") == "1.10");

  a = http_get(serve.url() + "/");
  REQUIRE(a.status == 200);
  CHECK(parse(a).at("apps").as_array().size() == 2);
  CHECK(http_get(serve.url() + "/healthz").status == 200);
  a = http_get(serve.url() + "/readyz");
  CHECK(a.status == 200);
  check_versions(a);
}

TEST_CASE("registration behind a trusted proxy", "[server][integration]") {
  Serve serve(two_app_config("trusted_proxy = [\"127.0.0.1\"]\n"));
  auto a = http_get(serve.url() + "/apps/tissue",
                    {"Host: internal:1", "X-Forwarded-Host: proxy.example", "X-Forwarded-Proto: https"});
  REQUIRE(a.status == 200);
  CHECK(parse(a).at("url") == "https://proxy.example/apps/tissue");
}

TEST_CASE("create stores the queued frame, writes the job and answers the stored result",
          "[server][integration]") {
  Sim sim;
  Serve serve(two_app_config());
  const std::string slide = sim.slide_ids().at(0);
  auto inv = invocation("create", "tissue", slide, sim.url());
  auto a = http_post_json(serve.url() + "/apps/tissue", body(inv));
  REQUIRE(a.status == 200);
  check_versions(a);
  auto stored = parse(a).as_object();
  REQUIRE(stored.at("id").is_int64());
  CHECK(stored.at("slideId") == slide.c_str());
  CHECK_THAT(std::string(stored.at("displayResult").as_string()), Catch::Matchers::Contains("analysis queued"));
  CHECK(stored.at("data").at("result").at("type") == "primitive");

  auto at_sim = sim.results("tissue", slide);
  REQUIRE(at_sim.size() == 1);
  CHECK(at_sim[0].at("id") == stored.at("id"));

  auto pending = jobs_in(serve.queue_dir(), "pending");
  REQUIRE(count_slide(pending, slide, "create") == 1);
  const auto& payload = pending[0];
  CHECK(payload.at("applicationId") == "tissue");
  CHECK(payload.at("invocation").at("callbackInfo").at("token") == kToken);

  // A second create on the slide replaces the frame (one result) and the job.
  a = http_post_json(serve.url() + "/apps/tissue", body(inv));
  REQUIRE(a.status == 200);
  CHECK(parse(a).at("id") == stored.at("id"));
  CHECK(sim.results("tissue", slide).size() == 1);
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), slide) == 1);

  auto m = http_get(serve.url() + "/metrics");
  REQUIRE(m.status == 200);
  CHECK_THAT(m.body, Catch::Matchers::Contains("iaserve_requests_total{route=\"/apps/tissue\",status=\"200\"} 2"));
  CHECK_THAT(m.body, Catch::Matchers::Contains("iaserve_queue_jobs{state=\"pending\"} 1"));
  CHECK_THAT(m.body, Catch::Matchers::Contains("iaserve_request_duration_seconds_count{route=\"/apps/tissue\"} 2"));
  // Both creates gave their places back with their answers.
  CHECK_THAT(m.body, Catch::Matchers::Contains("iaserve_invocations_open 0\n"));

  // The token never reaches the log.
  CHECK(serve.process().stderr_text().find(kToken) == std::string::npos);
  CHECK_THAT(serve.process().stderr_text(), Catch::Matchers::Contains("slide=" + slide));
}

TEST_CASE("a create on a slide seen before asks DPAT for its size no more, and draws the same frame",
          "[server][integration]") {
  Sim sim(2);
  Serve serve(two_app_config());
  const std::string s0 = sim.slide_ids().at(0), s1 = sim.slide_ids().at(1);
  auto first = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", s0, sim.url())));
  REQUIRE(first.status == 200);
  auto again = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", s0, sim.url())));
  REQUIRE(again.status == 200);
  // Another app on the same slide of the same DPAT: its size is known too.
  auto other = http_post_json(serve.url() + "/apps/other", body(invocation("create", "other", s0, sim.url())));
  REQUIRE(other.status == 200);
  auto fresh = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", s1, sim.url())));
  REQUIRE(fresh.status == 200);

  CHECK(parse(again).at("data").at("result") == parse(first).at("data").at("result"));
  CHECK(parse(other).at("data").at("result") == parse(first).at("data").at("result"));

  // The simulator logs a call once its answer is written: the last one
  // (the fresh slide's POST) may land a moment after iaserve answered.
  json::value log;
  auto count = [&](const std::string& method, const std::string& suffix) {
    int n = 0;
    for (const auto& c : log.as_array()) {
      std::string path(c.at("path").as_string());
      if (c.at("method") == method.c_str() && path.size() >= suffix.size() &&
          path.compare(path.size() - suffix.size(), suffix.size(), suffix) == 0)
        ++n;
    }
    return n;
  };
  for (int i = 0; i < 250; ++i) {
    auto calls = http_get(sim.root() + "/_sim/calls");
    REQUIRE(calls.status == 200);
    log = parse(calls);
    if (count("POST", "/applications/tissue/results") >= 2) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(count("GET", "/slides/" + s0 + "/info") == 1);
  CHECK(count("GET", "/slides/" + s1 + "/info") == 1);
  CHECK(count("GET", "/applications/tissue/results/slide/" + s0) == 2);
  CHECK(count("GET", "/applications/other/results/slide/" + s0) == 1);
  CHECK(count("POST", "/applications/tissue/results") == 2);
  CHECK(count("PUT", "/applications/tissue/results/" + std::to_string(parse(first).at("id").as_int64())) == 1);
}

TEST_CASE("create against a failing callback answers 502 and keeps the job", "[server][integration]") {
  Sim sim;
  Serve serve(two_app_config());
  auto inv = invocation("create", "tissue", "no-such-slide", sim.url());
  auto a = http_post_json(serve.url() + "/apps/tissue", body(inv));
  REQUIRE(a.status == 502);
  auto e = parse(a).as_object();
  CHECK(e.at("status") == 404);
  CHECK(e.at("step") == "GET /slides/no-such-slide/info");
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), "no-such-slide") == 1);
  CHECK_THAT(http_get(serve.url() + "/metrics").body,
             Catch::Matchers::Contains("iaserve_callback_errors_total{kind=\"not_found\"} 1"));

  inv = invocation("create", "tissue", sim.slide_ids().at(0), sim.url());
  inv["callbackInfo"].as_object()["token"] = "wrong-token";
  a = http_post_json(serve.url() + "/apps/tissue", body(inv));
  REQUIRE(a.status == 502);
  CHECK(parse(a).at("status") == 401);
  CHECK(serve.process().stderr_text().find("wrong-token") == std::string::npos);
}

TEST_CASE("create over a result that keeps changing: the PUT's 409 lists again, then 502 naming the upsert",
          "[server][integration]") {
  // Every PUT answers 409 (as when a worker updates the result between the
  // list and the PUT): the create lists again and retries, then gives up.
  Sim sim(1, 0, {"--fail-rate", "1", "--fail-status", "409", "--fault-routes", "^PUT "});
  Serve serve(two_app_config());
  const std::string slide = sim.slide_ids().at(0);
  auto first = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", slide, sim.url())));
  REQUIRE(first.status == 200);  // a POST: no fault
  const auto id = parse(first).at("id").as_int64();
  auto again = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", slide, sim.url())));
  REQUIRE(again.status == 502);
  auto e = parse(again).as_object();
  CHECK(e.at("status") == 409);
  CHECK(e.at("kind") == "conflict");
  CHECK(std::string(e.at("step").as_string()) == "upsert PUT /applications/tissue/results/" + std::to_string(id));
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), slide) == 1);  // the second joined the first
  // The create's own PUT, then the upsert's three rounds of list and PUT.
  auto calls = parse(http_get(sim.root() + "/_sim/calls"));
  int puts = 0, lists = 0;
  for (const auto& c : calls.as_array()) {
    if (c.at("method") == "PUT") ++puts;
    if (c.at("method") == "GET" && std::string(c.at("path").as_string()).find("/results/slide/") != std::string::npos)
      ++lists;
  }
  CHECK(puts == 4);
  CHECK(lists == 5);
}

TEST_CASE("image notifications: accepted ones are queued, filtered ones are not", "[server][integration]") {
  Sim sim;
  Serve serve(two_app_config(), {"--log-level", "debug"});
  const std::string slide = sim.slide_ids().at(0);
  auto a = http_post_json(serve.url() + "/apps/tissue/imagenotification",
                          body(notification("tissue", slide, sim.url(), "H&E")));
  REQUIRE(a.status == 200);
  check_versions(a);
  CHECK(a.body == "{}");
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), slide, "notification") == 1);

  a = http_post_json(serve.url() + "/apps/other/imagenotification",
                     body(notification("other", "filtered-slide", sim.url(), "H&E")));
  REQUIRE(a.status == 200);
  CHECK(a.body == "{}");
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), "filtered-slide") == 0);
  CHECK_THAT(serve.process().stderr_text(), Catch::Matchers::Contains("staining \"H&E\" not in [PAS]"));

  a = http_post_json(serve.url() + "/apps/other/imagenotification",
                     body(notification("other", "pas-slide", sim.url(), "pas")));
  REQUIRE(a.status == 200);
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), "pas-slide", "notification") == 1);
}

TEST_CASE("an image's priority orders its job, and a request whose job would be too large is refused whole",
          "[server][integration]") {
  Sim sim;
  Serve serve(two_app_config());
  const std::string slide = sim.slide_ids().at(0);
  auto n = notification("tissue", slide, sim.url(), "H&E");
  n["imageInfo"].as_object()["priority"] = 9;
  auto a = http_post_json(serve.url() + "/apps/tissue/imagenotification", body(n));
  REQUIRE(a.status == 200);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(serve.queue_dir() / "pending")) names.push_back(e.path().filename());
  REQUIRE(names.size() == 1);
  CHECK(names[0].substr(0, 6) == "49991-");  // priority 9 (ids sort by 50000 - priority)

  // Every {} becomes {"mimeType":"","extension":""} in the job: a 3 MB body
  // (under the body limit) would make a 30 MB job, more than the queue
  // reads back. Refused before anything is written, not acknowledged and lost.
  auto big = notification("tissue", "big-slide", sim.url(), "H&E");
  json::array formats;
  formats.resize(1'000'000, json::object{});
  big["imageInfo"].as_object()["availableTileFormats"] = std::move(formats);
  a = http_post_json(serve.url() + "/apps/tissue/imagenotification", body(big));
  INFO(a.body.substr(0, 300));
  CHECK(a.status == 413);
  CHECK_THAT(a.body, Catch::Matchers::Contains("request too large to queue: job of "));
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), "big-slide") == 0);
  for (const auto& f : files_under(serve.queue_dir())) CHECK(f.string().find("big-slide") == std::string::npos);

  // A body nested as deep as json_max_depth allows (64) makes a job the
  // queue reads back.
  auto deep = notification("tissue", "deep-slide", sim.url(), "H&E");
  json::value nest = json::object{};
  for (int i = 0; i < 62; ++i) nest = json::object{{"d", std::move(nest)}};  // body: 1 + 62 + 1 levels
  deep["context"] = std::move(nest);
  a = http_post_json(serve.url() + "/apps/tissue/imagenotification", body(deep));
  REQUIRE(a.status == 200);
  auto r = run({bin("iaqueue"), "--dir", serve.queue_dir().string(), "ls", "--state", "pending", "--json"});
  INFO(r.out << r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Matchers::Contains("deep-slide"));
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), "deep-slide", "notification") == 1);
  deep["context"] = json::object{{"d", deep["context"]}};  // one more: refused at the door
  a = http_post_json(serve.url() + "/apps/tissue/imagenotification", body(deep));
  CHECK(a.status == 400);
}

TEST_CASE("a cancel with a cancellationToken cancels that run, not another one of the slide",
          "[server][integration]") {
  Sim sim(2);
  Serve serve(two_app_config());
  const std::vector<std::string> slides{sim.slide_ids().at(0), sim.slide_ids().at(1)};
  auto create = [&](const std::string& slide, const char* token) {
    auto inv = invocation("create", "tissue", slide, sim.url());
    if (token) inv["cancellationToken"] = token;
    REQUIRE(http_post_json(serve.url() + "/apps/tissue", body(inv)).status == 200);
  };
  auto cancel = [&](const std::string& slide, const char* token) {
    auto inv = invocation("cancel", "tissue", slide, sim.url());
    inv.erase("input");
    inv["cancellationToken"] = token;
    auto a = http_post_json(serve.url() + "/apps/tissue", body(inv));
    REQUIRE(a.status == 200);
    CHECK(a.body == "[]");
  };
  auto pending = [&](const std::string& slide) { return count_slide(jobs_in(serve.queue_dir(), "pending"), slide); };
  create(slides[0], "run-2");
  create(slides[1], nullptr);
  // A late cancel of an older run: the newer run stays.
  cancel(slides[0], "run-1");
  CHECK(pending(slides[0]) == 1);
  cancel(slides[0], "run-2");
  CHECK(pending(slides[0]) == 0);
  // A run queued without a token is the slide's: a cancel naming one takes it.
  cancel(slides[1], "run-9");
  CHECK(pending(slides[1]) == 0);
}

TEST_CASE("modify stores the changed result, a pressed button queues a job", "[server][integration]") {
  Sim sim;
  Serve serve(two_app_config());
  const std::string slide = sim.slide_ids().at(0);
  auto a = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", slide, sim.url())));
  REQUIRE(a.status == 200);
  auto stored = parse(a).as_object();
  // The pending create would coalesce with the modify job: take it out first.
  for (const auto& e : fs::directory_iterator(serve.queue_dir() / "pending")) fs::remove(e.path());

  auto changed = stored;
  changed["displayResult"] = "edited by the pathologist";
  changed["customField"] = "kept";
  auto inv = invocation("modify", "tissue", slide, sim.url());
  inv["input"] = changed;
  a = http_post_json(serve.url() + "/apps/tissue", body(inv));
  REQUIRE(a.status == 200);
  auto updated = parse(a).as_object();
  CHECK(updated.at("id") == stored.at("id"));
  CHECK(updated.at("displayResult") == "edited by the pathologist");
  CHECK(updated.at("versionId") != stored.at("versionId"));
  auto at_sim = sim.results("tissue", slide);
  REQUIRE(at_sim.size() == 1);
  CHECK(at_sim[0].at("displayResult") == "edited by the pathologist");
  CHECK(at_sim[0].at("customField") == "kept");
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), slide) == 0);  // no button pressed

  // A patchCollection with its "rerun" button pressed.
  auto pressed = updated;
  pressed["data"] = json::object{
      {"context", json::object{}},
      {"result",
       {{"type", "patchCollection"},
        {"content",
         {{"description", "patches"},
          {"polygons", json::array{}},
          {"patches", json::array{}},
          {"tags", json::array{"tumour"}},
          {"patchSize", 64},
          {"magnification", 20.0},
          {"statuses", {{"allowVerify", {{"value", true}}}}},
          {"actions", json::array{json::object{{"id", "rerun"}, {"state", 1}, {"name", "Run again"}}}}}}}}};
  inv["input"] = pressed;
  a = http_post_json(serve.url() + "/apps/tissue", body(inv));
  REQUIRE(a.status == 200);
  auto jobs = jobs_in(serve.queue_dir(), "pending");
  REQUIRE(count_slide(jobs, slide, "modify") == 1);
  CHECK(jobs[0].at("actionId") == "rerun");

  // The first change again: its versionId is stale now, DPAT answers 409.
  inv["input"] = changed;
  a = http_post_json(serve.url() + "/apps/tissue", body(inv));
  REQUIRE(a.status == 502);
  auto e = parse(a).as_object();
  CHECK(e.at("kind") == "conflict");
  CHECK(e.at("status") == 409);
  CHECK(std::string(e.at("step").as_string()) ==
        "PUT /applications/tissue/results/" + std::to_string(stored.at("id").as_int64()));
  CHECK_THAT(http_get(serve.url() + "/metrics").body, Catch::Matchers::Contains("iaserve_invocations_open 0\n"));
}

TEST_CASE("delete and cancel take the slide's job out of the queue", "[server][integration]") {
  Sim sim(2);
  Serve serve(two_app_config());
  const std::string s0 = sim.slide_ids().at(0), s1 = sim.slide_ids().at(1);
  auto inv0 = invocation("create", "tissue", s0, sim.url());
  inv0["cancellationToken"] = "run-a";
  auto inv1 = invocation("create", "tissue", s1, sim.url());
  inv1["cancellationToken"] = "cancel-me";
  REQUIRE(http_post_json(serve.url() + "/apps/tissue", body(inv0)).status == 200);
  auto created = http_post_json(serve.url() + "/apps/tissue", body(inv1));
  REQUIRE(created.status == 200);
  REQUIRE(jobs_in(serve.queue_dir(), "pending").size() == 2);

  auto del = invocation("delete", "tissue", s0, sim.url());
  del["input"] = parse(created);  // the stored result DPAT deletes
  del["input"].as_object()["slideId"] = s0;
  del["cancellationToken"] = "run-b";  // a delete takes the slide's jobs, whatever run they are
  auto a = http_post_json(serve.url() + "/apps/tissue", body(del));
  REQUIRE(a.status == 200);
  check_versions(a);
  CHECK(a.body == "{}");
  CHECK(count_slide(jobs_in(serve.queue_dir(), "pending"), s0) == 0);
  CHECK(count_slide(jobs_in(serve.queue_dir(), "cancelled"), s0) == 1);

  // Cancel by token: the slide id DPAT sends along does not matter.
  auto cancel = invocation("cancel", "tissue", "some-other-slide", sim.url());
  cancel["cancellationToken"] = "cancel-me";
  a = http_post_json(serve.url() + "/apps/tissue", body(cancel));
  REQUIRE(a.status == 200);
  CHECK(a.body == "[]");
  CHECK(jobs_in(serve.queue_dir(), "pending").empty());
  CHECK(count_slide(jobs_in(serve.queue_dir(), "cancelled"), s1) == 1);
}

TEST_CASE("two apps in one server keep their results and jobs apart", "[server][integration]") {
  Sim sim;
  Serve serve(two_app_config());
  const std::string slide = sim.slide_ids().at(0);
  auto a = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", slide, sim.url())));
  REQUIRE(a.status == 200);
  auto b = http_post_json(serve.url() + "/apps/other", body(invocation("create", "other", slide, sim.url())));
  REQUIRE(b.status == 200);
  CHECK(parse(a).at("id") != parse(b).at("id"));
  CHECK(sim.results("tissue", slide).size() == 1);
  CHECK(sim.results("other", slide).size() == 1);
  auto jobs = jobs_in(serve.queue_dir(), "pending");
  REQUIRE(jobs.size() == 2);
  CHECK(jobs[0].at("applicationId") != jobs[1].at("applicationId"));
  // The wrong app's route refuses the other app's id.
  auto c = http_post_json(serve.url() + "/apps/other", body(invocation("create", "tissue", slide, sim.url())));
  CHECK(c.status == 400);
  CHECK(parse(c).at("field") == "applicationId");
}

TEST_CASE("HTTPS with a self-signed certificate", "[server][integration]") {
  Sim sim;
  TempDir certs("iaserve-certs");
  auto made = run({on_path("openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                   "-keyout", (certs / "key.pem").string(), "-out", (certs / "cert.pem").string(), "-days", "2",
                   "-subj", "/CN=127.0.0.1"});
  REQUIRE(made.code == 0);
  Serve serve(two_app_config("tls_cert = \"" + (certs / "cert.pem").string() + "\"\ntls_key = \"" +
                             (certs / "key.pem").string() + "\"\n"));
  REQUIRE(serve.url().rfind("https://", 0) == 0);
  auto a = http_get(serve.url() + "/apps/tissue", {"Host: secure.example"});
  REQUIRE(a.status == 200);
  CHECK(parse(a).at("url") == "https://secure.example/apps/tissue");
  const std::string slide = sim.slide_ids().at(0);
  a = http_post_json(serve.url() + "/apps/tissue", body(invocation("create", "tissue", slide, sim.url())));
  REQUIRE(a.status == 200);
  CHECK(parse(a).at("id").is_int64());
  // Plain HTTP on the TLS port gets no answer.
  std::string plain = "http://" + serve.url().substr(8);
  CHECK(http_get(plain + "/healthz").status != 200);
}

TEST_CASE("SIGTERM stops the server with exit code 0", "[server][integration]") {
  Serve serve(two_app_config());
  REQUIRE(http_get(serve.url() + "/healthz").status == 200);
  serve.process().signal(SIGTERM);
  auto code = serve.process().wait();
  REQUIRE(code);
  CHECK(*code == 0);
}

TEST_CASE("SIGTERM lets a request in flight finish", "[server][integration]") {
  Sim sim(1, 800);  // every callback takes 0.8 s
  Serve serve(two_app_config());
  HttpAnswer answer;
  std::thread client([&] {
    answer = http_post_json(serve.url() + "/apps/tissue",
                            body(invocation("create", "tissue", sim.slide_ids().at(0), sim.url())));
  });
  // Wait until the create is being worked on (its job is on disk), then stop.
  for (int i = 0; i < 200 && jobs_in(serve.queue_dir(), "pending").empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  serve.process().signal(SIGTERM);
  client.join();
  CHECK(answer.status == 200);
  auto code = serve.process().wait();
  REQUIRE(code);
  CHECK(*code == 0);
  // New connections are refused once it has stopped.
  CHECK(http_get(serve.url() + "/healthz").status == 0);
}

TEST_CASE("configuration errors stop the start with the key named", "[server][integration]") {
  TempDir dir("iaserve-cfg");
  std::ofstream(dir / "bad.toml") << "[[apps]]\nroute = \"tissue\"\napplication_id = \"t\"\n";
  auto r = run({bin("iaserve"), "--config", (dir / "bad.toml").string()});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains("apps[0].route: must start with '/', got \"tissue\""));

  std::ofstream(dir / "good.toml") << "[[apps]]\nroute = \"/t\"\napplication_id = \"t\"\n";
  r = run({bin("iaserve"), "--config", (dir / "good.toml").string(), "--check-config", "--listen", "127.0.0.1:0",
           "--queue-dir", "/tmp/q"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Matchers::Contains("listen = '127.0.0.1:0'"));
  CHECK_THAT(r.out, Catch::Matchers::Contains("dir = '/tmp/q'"));
  // A folder flag is a name, even one TOML would read as a date.
  r = run({bin("iaserve"), "--config", (dir / "good.toml").string(), "--check-config", "--queue-dir", "2024-01-01"});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Matchers::Contains("dir = '2024-01-01'"));
}

TEST_CASE("an app's analysis and parameters are checked at start-up, except what only a worker's host can tell",
          "[server][integration]") {
  TempDir dir("iaserve-cfg");
  auto app = [&](const std::string& name, const std::string& rest) {
    std::ofstream(dir / name) << "[[apps]]\nroute = \"/t\"\napplication_id = \"t\"\n" << rest;
    return (dir / name).string();
  };
  // Without --check-config too: a bad app never starts serving.
  auto r = run({bin("iaserve"), "--config", app("typo.toml", "analysis = \"tisue\"\n"), "--listen", "127.0.0.1:0",
                "--queue-dir", (dir / "q").string()},
               20s);
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains("apps[0].analysis: unknown analysis \"tisue\" (built in: tissue, exec)"));
  // Written as a table, the key named is the table's.
  r = run({bin("iaserve"), "--config", app("table.toml", "[apps.analysis]\nname = \"tisue\"\n"), "--check-config"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err,
             Catch::Matchers::Contains("apps[0].analysis.name: unknown analysis \"tisue\" (built in: tissue, exec)"));
  r = run({bin("iaserve"), "--config", app("param.toml", "[apps.params]\ntarget_mpp = 0.1\n"), "--check-config"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains("apps[0].params.target_mpp: 0.1 is below 1"));
  r = run({bin("iaserve"), "--config", app("exec.toml", "analysis = \"exec\"\n"), "--check-config"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains("apps[0].params.command: required"));
  // A program installed on the workers only: iaserve queues for them, and
  // the worker here (without it) refuses to start.
  const std::string remote =
      app("remote.toml", "analysis = \"exec\"\n[apps.params]\ncommand = \"/opt/models/absent\"\n");
  r = run({bin("iaserve"), "--config", remote, "--check-config"});
  INFO(r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Matchers::Contains("/opt/models/absent"));
  // The effective parameters: those left out with their defaults.
  CHECK_THAT(r.out, Catch::Matchers::Contains("max_output_mb = 64"));
  r = run({bin("iaserve"), "--config", app("tissue.toml", "[apps.params]\ntarget_mpp = 16\n"), "--check-config"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Matchers::Contains("target_mpp = 16"));
  CHECK_THAT(r.out, Catch::Matchers::Contains("method = 'otsu_saturation'"));
  CHECK_THAT(r.out, Catch::Matchers::Contains("max_points = 4000"));
  r = run({bin("iaworker"), "run", "--config", remote, "--check", "--queue-dir", (dir / "q").string()});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Matchers::Contains(
                        "apps[0].params.command: \"/opt/models/absent\" is not an executable file"));
}
