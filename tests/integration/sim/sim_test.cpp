// dpatsim as a process on loopback: every callback route through iaapi's
// CallbackClient and raw HTTP, faults, persistence, render, and invoke
// against a small app built on the HTTP core.
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "iaapi/client.hpp"
#include "iaapi/dzi.hpp"
#include "iaapi/multipart.hpp"
#include "iaapi/result_builder.hpp"
#include "server/http/server.hpp"
#include "tests/support/http.hpp"
#include "tests/support/process.hpp"
#include "worker/slide/image_io.hpp"

using namespace iaserve;
using namespace std::chrono_literals;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// A folder of slides: two mkslide slides, one multi-file slide, and the real
// slide (linked, never copied) when the shared data is there.
struct Slides {
  test::TempDir dir{"dpatsim-test"};
  fs::path folder = dir / "slides";
  Slides() {
    fs::create_directories(folder / "multi");
    make(folder / "small.svs", {"--width", "1000", "--height", "700", "--seed", "3"});
    make(folder / "plain.tif", {"--width", "600", "--height", "520", "--format", "tiff", "--mpp", "0.5"});
    make(folder / "multi" / "scan.svs", {"--width", "700", "--height", "300", "--seed", "5"});
    // A second file of the multi-file slide (like MRXS's data files).
    std::ofstream(folder / "multi" / "extra.dat", std::ios::binary) << std::string(100000, '\x5a') << "end";
    fs::remove(folder / "multi" / "scan.svs.truth.json");
    if (auto data = test::shared_data()) {
      auto real = *data / "CMU-1-Small-Region.svs";
      if (fs::exists(real)) fs::create_symlink(real, folder / "CMU-1-Small-Region.svs");
    }
  }
  static void make(const fs::path& out, std::vector<std::string> args) {
    std::vector<std::string> argv{test::bin("mkslide"), out.string(), "--threads", "1"};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = test::run(argv);
    INFO(r.err);
    REQUIRE(r.code == 0);
  }
};

struct Sim {
  std::unique_ptr<test::Process> proc;
  std::string url;  // callback base URL
  std::string origin;
  explicit Sim(const fs::path& slides, std::vector<std::string> extra = {}) {
    std::vector<std::string> argv{test::bin("dpatsim"), "serve", "--slides", slides.string(), "--token", "fixed-token"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    proc = std::make_unique<test::Process>(argv);
    url = proc->listening_url();
    origin = url.substr(0, url.find('/', 8));
  }
  iaapi::CallbackClient client(std::string token = "fixed-token", int attempts = 1) const {
    iaapi::ClientOptions o;
    o.max_attempts = attempts;
    o.backoff_initial = 10ms;
    o.total_timeout = 20s;
    return iaapi::CallbackClient({url, std::move(token)}, o);
  }
  json::value sim_get(const std::string& route) const {
    auto a = test::http_get(origin + route);
    REQUIRE(a.status == 200);
    return json::parse(a.body);
  }
};

iaapi::Result sample_result(const std::string& slide, const std::string& text) {
  auto r = iaapi::primitive_result(
      slide, {iaapi::primitive_item({iaapi::Polygon{{{0.1, 0.1}, {0.5, 0.1}, {0.5, 0.4}}}}, {{{0.2, 0.2}, "here"}},
                                    iaapi::region_style("#ff0000", "rgba(255,0,0,0.2)"))},
      text, "1.0", {{"Area", 12.5}});
  r.extra["customField"] = "kept";
  return r;
}

}  // namespace

TEST_CASE("dpatsim lists its slides and serves image info with and without PHI", "[sim]") {
  Slides s;
  Sim sim(s.folder);
  auto slides = sim.sim_get("/_sim/slides").as_array();
  std::map<std::string, json::object> by_id;
  for (auto& v : slides) by_id[std::string(v.as_object().at("id").as_string())] = v.as_object();
  REQUIRE(by_id.count("small"));
  REQUIRE(by_id.count("plain"));
  REQUIRE(by_id.count("multi"));
  CHECK(by_id["multi"].at("files").as_array().size() == 2);
  CHECK(by_id.size() == (test::shared_data() ? 4u : 3u));

  auto c = sim.client();
  auto api = c.get_info();
  CHECK(api.api_version == "1.10");
  auto info = c.get_image_info("small");
  CHECK(info.id == "small");
  CHECK(info.image_size == iaapi::Size{1000, 700});
  CHECK(info.microns_per_pixel == Approx(0.25));
  CHECK(info.staining == "H&E");
  CHECK(info.block.has_value());
  CHECK_FALSE(info.accession_number.has_value());
  auto plain = c.get_image_info("plain", true, true);
  CHECK(plain.microns_per_pixel == Approx(0.5).epsilon(0.01));
  REQUIRE(plain.accession_number.has_value());
  CHECK(plain.series_instance_uid.has_value());
  // The case routes find the slide by its accession number.
  auto cases = c.get_case_images(*plain.accession_number);
  REQUIRE(cases.size() == 1);
  CHECK(cases[0].id == "plain");
  CHECK(c.get_slide_case_images("plain").size() == 1);
  try {
    c.get_image_info("nope");
    FAIL("no error for an unknown slide");
  } catch (const iaapi::CallbackError& e) {
    CHECK(e.kind() == iaapi::CallbackErrorKind::not_found);
  }
}

TEST_CASE("dpatsim tiles follow the DZI arithmetic, edge tiles smaller", "[sim]") {
  Slides s;
  Sim sim(s.folder);
  auto c = sim.client();
  for (std::string id : {"small", "plain"}) {
    auto info = c.get_image_info(id);
    iaapi::Dzi dzi(info.image_size.width, info.image_size.height, info.tile_size.width);
    for (int level : {0, dzi.max_level() - 2, dzi.max_level() - 1, dzi.max_level()}) {
      auto grid = dzi.grid(level);
      for (auto [col, row] : std::vector<std::pair<std::int64_t, std::int64_t>>{
               {0, 0}, {grid.cols - 1, 0}, {0, grid.rows - 1}, {grid.cols - 1, grid.rows - 1}}) {
        auto bytes = c.get_tile(id, level, static_cast<int>(col), static_cast<int>(row));
        auto img = slide::decode_jpeg(bytes);
        auto rect = dzi.tile_rect(level, col, row);
        INFO(id << " level " << level << " tile " << col << "," << row);
        CHECK(img.width == rect.width);
        CHECK(img.height == rect.height);
      }
    }
    // PNG tiles and the focal-plane form too.
    auto png = test::http_get(sim.url + "/images/" + id + "_files/" + std::to_string(dzi.max_level()) + "/0_0_0.png",
                              {"Authorization: Bearer fixed-token"});
    CHECK(png.status == 200);
    CHECK(png.header("content-type") == "image/png");
    auto outside = test::http_get(sim.url + "/images/" + id + "_files/" + std::to_string(dzi.max_level() + 1) + "/0_0.jpg",
                                  {"Authorization: Bearer fixed-token"});
    CHECK(outside.status == 404);
    CHECK(outside.body.find("out of range") != std::string::npos);
    auto grid = dzi.grid(dzi.max_level());
    auto past = test::http_get(sim.url + "/images/" + id + "_files/" + std::to_string(dzi.max_level()) + "/" +
                                   std::to_string(grid.cols) + "_0.jpg",
                               {"Authorization: Bearer fixed-token"});
    CHECK(past.status == 404);
  }
  // Label: the SVS has one, the generic TIFF has none (204).
  auto label = c.get_label("small");
  REQUIRE(label.has_value());
  CHECK(slide::decode_jpeg(*label).width > 0);
  CHECK_FALSE(c.get_label("plain").has_value());
}

TEST_CASE("dpatsim /files streams the exact bytes, multipart for a multi-file slide", "[sim]") {
  Slides s;
  Sim sim(s.folder);
  auto raw = test::http_get(sim.url + "/slides/small/files", {"Authorization: Bearer fixed-token"});
  REQUIRE(raw.status == 200);
  CHECK(raw.body == iaserve::test::read_file(s.folder / "small.svs"));
  CHECK(raw.header("content-disposition").find("filename=\"small.svs\"") != std::string::npos);
  auto head = test::http("HEAD", sim.url + "/slides/small/files", {}, {"Authorization: Bearer fixed-token"});
  CHECK(head.header("content-length") == std::to_string(fs::file_size(s.folder / "small.svs")));

  // The multipart body parsed back with iaapi's parser gives the files.
  auto multi = test::http_get(sim.url + "/slides/multi/files", {"Authorization: Bearer fixed-token"});
  REQUIRE(multi.status == 200);
  auto ct = multi.header("content-type");
  REQUIRE(ct.rfind("multipart/related", 0) == 0);
  auto boundary = ct.substr(ct.find("boundary=") + 9);
  std::vector<std::pair<std::string, std::string>> parts;
  iaapi::MultipartParser parser(boundary, {[&](const iaapi::PartHeaders& h) {
                                             parts.emplace_back(h.get("content-disposition").value_or(""), "");
                                           },
                                           [&](std::span<const char> d) { parts.back().second.append(d.data(), d.size()); },
                                           [] {}});
  parser.feed(std::span<const char>(multi.body.data(), multi.body.size()));
  parser.finish();
  REQUIRE(parts.size() == 2);
  CHECK(parts[0].first.find("extra.dat") != std::string::npos);
  CHECK(parts[0].second == iaserve::test::read_file(s.folder / "multi" / "extra.dat"));
  CHECK(parts[1].first.find("scan.svs") != std::string::npos);
  CHECK(parts[1].second == iaserve::test::read_file(s.folder / "multi" / "scan.svs"));

  // And through the client's download, single and multi.
  test::TempDir out("dpatsim-dl");
  auto c = sim.client();
  auto files = c.download_files("multi", out / "multi");
  REQUIRE(files.size() == 2);
  for (const auto& f : files) CHECK(iaserve::test::read_file(f) == iaserve::test::read_file(s.folder / "multi" / f.filename()));
  auto one = c.download_files("small", out / "small");
  REQUIRE(one.size() == 1);
  CHECK(iaserve::test::read_file(one[0]) == iaserve::test::read_file(s.folder / "small.svs"));
}

TEST_CASE("dpatsim stores results: create, get, list, update, 409 on a stale version, 400 naming the field", "[sim]") {
  Slides s;
  test::TempDir state("dpatsim-state");
  auto state_file = (state / "state.json").string();
  std::int64_t id = 0;
  std::string version;
  {
    Sim sim(s.folder, {"--state", state_file});
    auto c = sim.client();
    auto created = c.create_result("tissue", sample_result("small", "queued"));
    CHECK(created.id > 0);
    CHECK_FALSE(created.version_id.empty());
    CHECK(created.extra.at("customField") == "kept");
    auto second = c.create_result("tissue", sample_result("small", "second"));
    CHECK(second.id > created.id);
    c.create_result("other-app", sample_result("small", "not mine"));
    auto list = c.list_results("tissue", "small");
    REQUIRE(list.size() == 2);
    CHECK(c.list_results("tissue", "plain").empty());

    auto changed = created;
    changed.display_result = "done";
    auto updated = c.update_result("tissue", changed);
    CHECK(updated.display_result == "done");
    CHECK(updated.version_id != created.version_id);
    CHECK(c.get_result("tissue", created.id).display_result == "done");
    try {
      c.update_result("tissue", changed);  // names the old version
      FAIL("a stale versionId was accepted");
    } catch (const iaapi::CallbackError& e) {
      CHECK(e.kind() == iaapi::CallbackErrorKind::conflict);
    }
    auto up = c.upsert_result("tissue", "small", sample_result("small", "final answer"));
    CHECK(up.id == second.id);

    // Bad bodies: 400 with the field named.
    auto bad = test::http_post_json(sim.url + "/applications/tissue/results",
                                    R"({"slideId":"small","displayResult":"x","displayProperties":{"a":[1]},"data":{}})",
                                    {"Authorization: Bearer fixed-token"});
    CHECK(bad.status == 400);
    CHECK(json::parse(bad.body).at("field").as_string().starts_with("displayProperties"));
    auto unknown = test::http_post_json(sim.url + "/applications/tissue/results",
                                        R"({"slideId":"nope","displayResult":"x","data":{}})",
                                        {"Authorization: Bearer fixed-token"});
    CHECK(unknown.status == 400);
    CHECK(unknown.body.find("slideId") != std::string::npos);
    auto garbage = test::http_post_json(sim.url + "/applications/tissue/results", "{not json",
                                        {"Authorization: Bearer fixed-token"});
    CHECK(garbage.status == 400);
    auto missing = test::http_get(sim.url + "/applications/tissue/results/999", {"Authorization: Bearer fixed-token"});
    CHECK(missing.status == 404);

    iaapi::QualityControl qc{"1.0", {iaapi::QualityStatus::QualityOk, ""}};
    c.put_quality_control("small", qc);
    auto info = c.get_image_info("small", true);
    REQUIRE(info.quality_control.has_value());
    CHECK(info.quality_control->status == iaapi::QualityStatus::QualityOk);
    id = created.id;
    version = updated.version_id;
  }  // SIGTERM: the state is flushed
  Sim again(s.folder, {"--state", state_file});
  auto c = again.client();
  auto kept = c.get_result("tissue", id);
  CHECK(kept.display_result == "done");
  CHECK(kept.version_id == version);
  CHECK(c.list_results("tissue", "small").size() == 2);
  auto fresh = c.create_result("tissue", sample_result("plain", "after restart"));
  CHECK(fresh.id > id + 1);  // ids keep increasing across restarts
}

TEST_CASE("dpatsim checks bearer tokens: missing, unknown and expired get 401", "[sim]") {
  Slides s;
  Sim sim(s.folder, {"--token-ttl", "600"});
  CHECK(test::http_get(sim.url + "/info").status == 401);
  CHECK(test::http_get(sim.url + "/info", {"Authorization: Bearer wrong"}).status == 401);
  CHECK(test::http_get(sim.url + "/info", {"Authorization: Basic Zm9vOmJhcg=="}).status == 401);
  auto minted = test::run({test::bin("dpatsim"), "token", sim.url});
  REQUIRE(minted.code == 0);
  std::string token = minted.out.substr(0, minted.out.find('\n'));
  CHECK(token.size() >= 32);
  CHECK(test::http_get(sim.url + "/info", {"Authorization: Bearer " + token}).status == 200);
  // A token minted to live 0.2 s is dead once that time has passed.
  auto short_lived = json::parse(test::http("POST", sim.origin + "/_sim/token?ttl=0.2").body);
  std::string dying(short_lived.at("token").as_string());
  std::this_thread::sleep_for(400ms);
  auto c = sim.client(dying);
  try {
    c.get_info();
    FAIL("an expired token was accepted");
  } catch (const iaapi::CallbackError& e) {
    CHECK(e.kind() == iaapi::CallbackErrorKind::token_expired);
    CHECK(std::string(e.what()).find(dying) == std::string::npos);
  }
  // The call log has the calls, never a token.
  auto calls = json::serialize(sim.sim_get("/_sim/calls"));
  CHECK(calls.find("/info") != std::string::npos);
  CHECK(calls.find(token) == std::string::npos);
  CHECK(calls.find("401") != std::string::npos);
}

TEST_CASE("dpatsim injects faults: errors, hangs and latency on matching routes", "[sim]") {
  Slides s;
  SECTION("fail-rate 1 on one route") {
    Sim sim(s.folder, {"--fail-rate", "1", "--fault-routes", "^GET /info$", "--seed", "7"});
    auto a = test::http_get(sim.url + "/info", {"Authorization: Bearer fixed-token"});
    CHECK((a.status == 500 || a.status == 503));
    CHECK(test::http_get(sim.url + "/slides/small/info", {"Authorization: Bearer fixed-token"}).status == 200);
    auto c = sim.client("fixed-token", 2);
    try {
      c.get_info();
      FAIL("an injected fault went unnoticed");
    } catch (const iaapi::CallbackError& e) {
      CHECK(e.kind() == iaapi::CallbackErrorKind::server);
    }
  }
  SECTION("hang-rate 1: no answer until the client gives up") {
    Sim sim(s.folder, {"--hang-rate", "1", "--fault-routes", "results"});
    auto a = test::http("GET", sim.url + "/applications/x/results/slide/small", {}, {"Authorization: Bearer fixed-token"},
                        1s);
    CHECK(a.status == 0);
    CHECK(test::http_get(sim.url + "/info", {"Authorization: Bearer fixed-token"}).status == 200);
  }
  SECTION("latency: answers still arrive, from a timer") {
    Sim sim(s.folder, {"--latency-ms", "100"});
    auto c = sim.client();
    CHECK(c.get_info().api_version == "1.10");
    CHECK(c.create_result("app", sample_result("small", "slow")).id > 0);
    // A call is logged once its answer is written, which may be just after
    // the client has read it: wait (bounded) for both entries.
    json::array calls;
    for (int i = 0; i < 500; ++i) {
      calls = sim.sim_get("/_sim/calls").as_array();
      if (calls.size() >= 2) break;
      std::this_thread::sleep_for(10ms);
    }
    REQUIRE(calls.size() >= 2);
    CHECK(calls[0].as_object().at("elapsedMs").to_number<double>() >= 100.0);
  }
}

TEST_CASE("dpatsim render draws the stored result over the slide at a DZI level", "[sim]") {
  Slides s;
  Sim sim(s.folder);
  auto c = sim.client();
  c.create_result("tissue", sample_result("small", "tissue 40 %"));
  test::TempDir out("dpatsim-render");
  auto png = out / "overlay.png";
  auto r = test::run({test::bin("dpatsim"), "render", "--sim", sim.url, "--slide", "small", "--out", png.string(),
                      "--size", "600"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  auto img = slide::read_image(png);
  iaapi::Dzi dzi(1000, 700, 256);
  auto ls = dzi.level_size(dzi.max_level() - 1);  // 500 x 350: the largest level within 600
  CHECK(img.width == ls.width);
  CHECK(img.height == ls.height);
  // The red outline of the result is there, at 0.1..0.5 of the width.
  int red = 0;
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x) {
      auto* p = img.at(x, y);
      if (p[0] > 200 && p[1] < 60 && p[2] < 60) ++red;
    }
  CHECK(red > 200);
  if (test::shared_data()) {
    auto real = out / "cmu.png";
    auto rr = test::run({test::bin("dpatsim"), "render", "--sim", sim.url, "--slide", "CMU-1-Small-Region", "--out",
                         real.string()});
    REQUIRE(rr.code == 0);
    auto ri = slide::read_image(real);
    iaapi::Dzi cmu(2220, 2967, 256);
    CHECK(ri.height == cmu.level_size(cmu.max_level() - 2).height);
  }
}

namespace {

// A small IA-API app on the HTTP core: create stores a result through the
// callback API and answers with it, like a real app must.
struct FakeApp {
  std::mutex m;
  std::vector<std::string> actions;
  bool broken = false;  // answers create with something that is not a stored result
  std::unique_ptr<http::Server> server;
  FakeApp() {
    http::Options o;
    o.default_headers = {{"X-Sectra-ApiVersion", "1.10"}};
    server = std::make_unique<http::Server>(o, [this](http::Request&& req, http::Responder r) {
      if (req.method == "GET" && req.path == "/apps/fake") {
        iaapi::Registration reg{"fake", "Fake", server->base_url() + "/apps/fake", "test", {}, {{"echo", 1}}};
        return r(http::Response::json(200, json::serialize(iaapi::to_json(reg))));
      }
      if (req.method == "POST" && req.path == "/apps/fake/imagenotification") {
        auto n = iaapi::decode_image_notification(req.body);
        std::lock_guard lock(m);
        actions.push_back(n ? "notify:" + n->image_info.id : "bad notification");
        return r(http::Response::json(200, "{}"));
      }
      if (req.method == "POST" && req.path == "/apps/fake") {
        auto inv = iaapi::decode_invocation(req.body);
        if (!inv) return r(http::Response::json(400, "{\"error\":\"" + inv.error.what() + "\"}"));
        {
          std::lock_guard lock(m);
          actions.push_back(std::string(iaapi::to_string(inv->action)) + ":" + inv->slide_id + ":" +
                            (inv->context.contains("echo") ? "ctx" : "noctx"));
        }
        if (inv->action == iaapi::Action::create) {
          if (broken) return r(http::Response::json(200, "{\"hello\":1}"));
          iaapi::CallbackClient c(inv->callback);
          auto stored = c.upsert_result("fake", inv->slide_id, sample_result(inv->slide_id, "done"));
          return r(http::Response::json(200, json::serialize(iaapi::to_json(stored))));
        }
        if (inv->action == iaapi::Action::cancel) return r(http::Response::json(200, "[]"));
        return r(http::Response::json(200, "{}"));
      }
      r(http::Response::json(404, "{\"error\":\"no route\"}"));
    });
    server->start();
  }
  std::string url() const { return server->base_url() + "/apps/fake"; }
};

}  // namespace

TEST_CASE("dpatsim invoke plays DPAT toward an app, wait and results see the answer", "[sim]") {
  Slides s;
  Sim sim(s.folder);
  FakeApp app;
  auto dpatsim = [&](std::vector<std::string> args) {
    args.insert(args.begin(), test::bin("dpatsim"));
    return test::run(args);
  };
  auto reg = dpatsim({"invoke", "register", app.url()});
  REQUIRE(reg.code == 0);
  CHECK(reg.out.find("\"applicationId\": \"fake\"") != std::string::npos);

  auto created = dpatsim({"invoke", "create", app.url(), "--slide", "small", "--sim", sim.url, "--input", "taggedPolygon"});
  INFO(created.err);
  REQUIRE(created.code == 0);
  CHECK(created.out.find("\"id\"") != std::string::npos);
  auto waited = dpatsim({"wait", "--sim", sim.url, "--slide", "small", "--app", "fake", "--final", "--timeout", "10"});
  CHECK(waited.code == 0);
  CHECK(waited.out.find("\"displayResult\": \"done\"") != std::string::npos);
  auto results = dpatsim({"results", "--sim", sim.url, "--slide", "small"});
  CHECK(results.code == 0);
  CHECK(results.out.find("\"applicationId\": \"fake\"") != std::string::npos);

  CHECK(dpatsim({"invoke", "notify", app.url(), "--slide", "plain", "--sim", sim.url}).code == 0);
  CHECK(dpatsim({"invoke", "cancel", app.url(), "--slide", "small", "--sim", sim.url}).code == 0);
  CHECK(dpatsim({"invoke", "delete", app.url(), "--slide", "small", "--sim", sim.url}).code == 0);
  {
    std::lock_guard lock(app.m);
    CHECK(app.actions == std::vector<std::string>{"create:small:ctx", "notify:plain", "cancel:small:ctx", "delete:small:ctx"});
  }
  // Protocol errors exit 3: an answer that is not a stored result, and a 404.
  app.broken = true;
  auto bad = dpatsim({"invoke", "create", app.url(), "--slide", "small", "--sim", sim.url});
  CHECK(bad.code == 3);
  CHECK(bad.err.find("not a stored result") != std::string::npos);
  CHECK(dpatsim({"invoke", "register", app.url() + "/missing"}).code == 3);
  // No final result on a slide nobody analysed: timeout, exit 4.
  CHECK(dpatsim({"wait", "--sim", sim.url, "--slide", "plain", "--app", "fake", "--final", "--timeout", "0.3"}).code == 4);
}

TEST_CASE("dpatsim command line: --help and --version exit 0, bad options 2, a bad folder 1", "[sim]") {
  CHECK(test::run({test::bin("dpatsim"), "--help"}).code == 0);
  auto v = test::run({test::bin("dpatsim"), "--version"});
  CHECK(v.code == 0);
  CHECK(v.out.find("dpatsim") != std::string::npos);
  CHECK(test::run({test::bin("dpatsim"), "serve", "--help"}).code == 0);
  CHECK(test::run({test::bin("dpatsim"), "serve"}).code == 2);
  CHECK(test::run({test::bin("dpatsim"), "serve", "--slides", "/x", "--fail-rate", "2"}).code == 2);
  auto missing = test::run({test::bin("dpatsim"), "serve", "--slides", "/nonexistent-folder"});
  CHECK(missing.code == 1);
  CHECK(missing.err.find("/nonexistent-folder") != std::string::npos);
}
