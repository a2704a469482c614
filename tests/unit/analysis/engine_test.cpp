// The engine: parameter validation with exact messages, progress, cancel,
// time limit, errors from an analysis, input conversion, the CLI.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <functional>
#include <new>
#include <system_error>
#include <sstream>
#include <thread>

#include "tests/unit/analysis/slides.hpp"
#include "worker/slide/slide.hpp"

using namespace iaserve;
using namespace iaserve::test;
namespace json = boost::json;

namespace {

std::string param_error(const json::object& given) {
  try {
    analysis::validate_params(*analysis::find("tissue"), given);
  } catch (const analysis::ParameterError& e) {
    return e.what();
  }
  return "no error";
}

std::string text_param_error(const std::string& k, const std::string& v) {
  try {
    analysis::validate_params(*analysis::find("tissue"), std::vector<std::pair<std::string, std::string>>{{k, v}});
  } catch (const analysis::ParameterError& e) {
    return e.what();
  }
  return "no error";
}

struct SmallSlide {
  TempDir dir{"iaserve-analysis"};
  TruthSlide ts = make_slide(dir, "e.svs", {"--width", "3000", "--height", "2000", "--seed", "6"});
  slide::Slide s = slide::Slide::open(ts.path);
};

}  // namespace

TEST_CASE("the specs (what the server checks apps with) are the analyses', in order", "[engine]") {
  const auto specs = analysis::specs();
  const auto all = analysis::all();
  REQUIRE(specs.size() == all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    INFO(all[i]->name);
    CHECK(specs[i]->name == all[i]->name);
    CHECK(specs[i]->version == all[i]->version);
    CHECK(specs[i]->inputs == all[i]->inputs);
    REQUIRE(specs[i]->parameters.size() == all[i]->parameters.size());
    for (std::size_t k = 0; k < all[i]->parameters.size(); ++k) {
      CHECK(specs[i]->parameters[k].name == all[i]->parameters[k].name);
      CHECK(specs[i]->parameters[k].default_value == all[i]->parameters[k].default_value);
    }
    CHECK(static_cast<bool>(specs[i]->check) == static_cast<bool>(all[i]->check));
    CHECK(static_cast<bool>(specs[i]->host_check) == static_cast<bool>(all[i]->host_check));
    CHECK(analysis::find_spec(all[i]->name) == specs[i]);
  }
  CHECK(analysis::find_spec("nope") == nullptr);
}

TEST_CASE("the table lists tissue with its parameters and defaults", "[engine]") {
  REQUIRE(analysis::find("tissue") != nullptr);
  CHECK(analysis::find("nope") == nullptr);
  CHECK(analysis::all().size() >= 1);
  const auto p = analysis::validate_params(*analysis::find("tissue"), json::object{});
  CHECK(p.text("method") == "otsu_saturation");
  CHECK(p.number("target_mpp") == 8.0);
  CHECK(p.number("min_region_um2") == 20000.0);
  CHECK(p.number("simplify_tolerance_px") == 1.0);
  CHECK(p.integer("max_points") == 4000);
  const auto q = analysis::validate_params(*analysis::find("tissue"),
                                           json::object{{"method", "otsu_od"}, {"max_points", 100}, {"target_mpp", 16}});
  CHECK(q.text("method") == "otsu_od");
  CHECK(q.integer("max_points") == 100);
  CHECK(q.number("target_mpp") == 16.0);
  CHECK(json::serialize(q.to_json()) ==
        R"({"method":"otsu_od","target_mpp":1.6E1,"min_region_um2":2E4,"simplify_tolerance_px":1E0,"max_points":100})");
}

TEST_CASE("parameter errors name the parameter and the value", "[engine]") {
  CHECK(param_error({{"min_region_um2", -3}}) == "parameter min_region_um2: -3 is below 0");
  CHECK(param_error({{"min_region_um2", -2.5}}) == "parameter min_region_um2: -2.5 is below 0");
  CHECK(param_error({{"target_mpp", 100}}) == "parameter target_mpp: 100 is above 64");
  CHECK(param_error({{"method", "magic"}}) == "parameter method: \"magic\" is not one of otsu_saturation, otsu_od");
  CHECK(param_error({{"target_mpp", "8"}}) == "parameter target_mpp: expected a number, got string \"8\"");
  CHECK(param_error({{"max_points", 2.5}}) == "parameter max_points: expected an integer, got number 2.5");
  CHECK(param_error({{"max_points", 3}}) == "parameter max_points: 3 is below 16");
  CHECK(param_error({{"method", 1}}) == "parameter method: expected a string, got integer 1");
  CHECK(param_error({{"bogus", 1}}) ==
        "parameter bogus: unknown for analysis tissue (known: method, target_mpp, min_region_um2, "
        "simplify_tolerance_px, max_points)");
  CHECK(text_param_error("target_mpp", "abc") == "parameter target_mpp: \"abc\" is not a number");
  CHECK(text_param_error("target_mpp", "0.5") == "parameter target_mpp: 0.5 is below 1");
  CHECK(text_param_error("max_points", "12.5") == "parameter max_points: \"12.5\" is not an integer");
  CHECK(text_param_error("max_points", "500") == "no error");
}

TEST_CASE("input conversion from image-width units, with field errors", "[engine]") {
  const auto in = analysis::input_from_json(
      "taggedPolygon", json::parse(R"({"polygon": {"points": [{"x": 0.1, "y": 0.2}, {"x": 0.5, "y": 0.2}, {"x": 0.3, "y": 0.6}]}, "tags": ["a"], "tagIndex": 0})"),
      2000);
  CHECK(in.type == analysis::InputType::tagged_polygon);
  REQUIRE(in.regions.size() == 1);
  CHECK(in.regions[0][2].x == Approx(600));
  CHECK(in.regions[0][2].y == Approx(1200));
  CHECK(analysis::input_from_json("wholeSlide", json::value(), 2000).regions.empty());
  auto error = [](const char* type, const char* content) -> std::string {
    try {
      analysis::input_from_json(type, json::parse(content), 1000);
    } catch (const std::invalid_argument& e) {
      return e.what();
    }
    return "no error";
  };
  CHECK(error("taggedPolygon", R"({"polygon": "x"})") == "field input.content.polygon: expected object, got string");
  CHECK(error("taggedPolygon", R"({"polygon": {"points": [{"x": 0, "y": 0}, {"x": "1", "y": 0}, {"x": 0, "y": 1}]}})") ==
        "field input.content.polygon.points[1].x: expected number, got string");
  CHECK(error("multiArea", R"({"polygons": [{"points": [{"x": 0, "y": 0}]}]})") ==
        "field input.content.polygons[0].points: 1 points, a polygon needs at least 3");
  CHECK(error("multiArea", R"({"polygons": []})") == "field input.content.polygons: empty");
  CHECK(error("circle", "{}") == "field input.type: unknown input type \"circle\"");
}

TEST_CASE("progress runs 0..100 and never goes back", "[engine]") {
  SmallSlide sl;
  std::vector<int> seen;
  analysis::Hooks hooks;
  hooks.progress = [&seen](int p) { seen.push_back(p); };
  const auto r = analysis::run_analysis("tissue", sl.s, {}, {}, hooks);
  REQUIRE(r.status == analysis::RunStatus::ok);
  REQUIRE(seen.size() >= 3);
  CHECK(seen.front() == 0);
  CHECK(seen.back() == 100);
  for (std::size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] > seen[i - 1]);
  CHECK_THAT(r.outcome->display_result, Catch::Matches("Tissue \\d+\\.\\d+ mm² in \\d+ regions?"));
  const auto result = analysis::result_json(*r.outcome, "slide-1");
  CHECK(result.at("slideId").as_string() == "slide-1");
  CHECK(result.at("data").at("result").at("type").as_string() == "primitive");
  CHECK(result.at("displayProperties").as_object().contains("Tissue area (mm\u00b2)"));
}

TEST_CASE("cancel stops the analysis at its next check", "[engine]") {
  SmallSlide sl;
  int calls = 0;
  analysis::Hooks hooks;
  hooks.progress = [&calls](int) { ++calls; };
  hooks.cancelled = [&calls] { return calls >= 2; };
  const auto r = analysis::run_analysis("tissue", sl.s, {}, {}, hooks);
  CHECK(r.status == analysis::RunStatus::cancelled);
  CHECK(r.error == "analysis cancelled");
  CHECK_FALSE(r.outcome);
  CHECK(calls == 2);
}

TEST_CASE("the time limit ends a slow analysis with a message", "[engine]") {
  SmallSlide sl;
  analysis::Hooks hooks;
  hooks.time_limit = std::chrono::milliseconds(20);
  hooks.progress = [](int) { std::this_thread::sleep_for(std::chrono::milliseconds(15)); };
  const auto r = analysis::run_analysis("tissue", sl.s, {}, {}, hooks);
  CHECK(r.status == analysis::RunStatus::timed_out);
  CHECK(r.error == "analysis timed out after 0.02 s");
  hooks.time_limit = std::chrono::seconds(2);
  hooks.progress = [](int) { std::this_thread::sleep_for(std::chrono::milliseconds(600)); };
  CHECK(analysis::run_analysis("tissue", sl.s, {}, {}, hooks).error == "analysis timed out after 2 s");
}

TEST_CASE("errors of an analysis, an unknown name and bad parameters become messages", "[engine]") {
  SmallSlide sl;
  CHECK(analysis::run_analysis("nope", sl.s, {}, {}).error == "unknown analysis \"nope\" (known: tissue, exec)");
  const auto bad = analysis::run_analysis("tissue", sl.s, {}, {{"min_region_um2", -3}});
  CHECK(bad.status == analysis::RunStatus::failed);
  CHECK(bad.error == "parameter min_region_um2: -3 is below 0");
  analysis::Descriptor boom;
  boom.name = "boom";
  boom.inputs = {analysis::InputType::whole_slide};
  boom.run = [](analysis::Context&) -> analysis::Outcome { throw std::runtime_error("stain vector singular"); };
  const auto r = analysis::run_analysis(boom, sl.s, {}, {});
  CHECK(r.status == analysis::RunStatus::failed);
  CHECK(r.error == "stain vector singular");
  analysis::Input drawn{analysis::InputType::multi_area, {{{0, 0}, {10, 0}, {10, 10}}}};
  CHECK(analysis::run_analysis(boom, sl.s, drawn, {}).error == "analysis boom does not accept input type multiArea");
  // drawn regions off the slide
  analysis::Input off{analysis::InputType::tagged_polygon, {{{-100, -100}, {-50, -100}, {-50, -50}}}};
  CHECK(analysis::run_analysis("tissue", sl.s, off, {}).error == "the drawn regions lie outside the slide");
}

TEST_CASE("a failure of the host (memory, disk, descriptors, slide I/O) is transient, others are not",
          "[engine]") {
  SmallSlide sl;
  auto run_throwing = [&](std::function<void()> thrower) {
    analysis::Descriptor d;
    d.name = "thrower";
    d.inputs = {analysis::InputType::whole_slide};
    d.run = [thrower](analysis::Context&) -> analysis::Outcome {
      thrower();
      return {};
    };
    return analysis::run_analysis(d, sl.s, {}, {});
  };
  auto oom = run_throwing([] { throw std::bad_alloc(); });
  CHECK(oom.status == analysis::RunStatus::failed);
  CHECK(oom.transient);
  CHECK(oom.error == "analysis thrower: out of memory");
  auto full = run_throwing([] { throw std::filesystem::filesystem_error("write scratch", std::make_error_code(std::errc::no_space_on_device)); });
  CHECK(full.transient);
  CHECK_THAT(full.error, Catch::Contains("write scratch"));
  CHECK(run_throwing([] { throw std::system_error(EMFILE, std::generic_category(), "open"); }).transient);
  CHECK(run_throwing([] { throw slide::SlideError(slide::SlideError::Kind::io, "read failed"); }).transient);
  // The slide's or the analysis's own faults stay failures for good.
  CHECK_FALSE(run_throwing([] { throw slide::SlideError(slide::SlideError::Kind::broken, "bad tile"); }).transient);
  CHECK_FALSE(run_throwing([] { throw std::system_error(ENOENT, std::generic_category(), "model file"); }).transient);
  CHECK_FALSE(run_throwing([] { throw std::runtime_error("stain vector singular"); }).transient);
  CHECK_FALSE(run_throwing([] { throw std::invalid_argument("bad"); }).transient);
}

TEST_CASE("a pressed button goes to the analysis's on_action, with the stored content, else to its run",
          "[engine]") {
  SmallSlide sl;
  analysis::Descriptor d;
  d.name = "gallery";
  d.inputs = {analysis::InputType::whole_slide};
  d.run = [](analysis::Context&) {
    analysis::Outcome o;
    o.display_result = "ran";
    return o;
  };
  analysis::Input pressed;
  pressed.action = analysis::Input::Action{"redo", json::parse(R"({"actions": [{"id": "redo", "state": 1}]})")};
  CHECK(analysis::run_analysis(d, sl.s, pressed, {}).outcome->display_result == "ran");  // no hook: a run
  d.on_action = [](analysis::Context&, const json::value& content, std::string_view id) {
    analysis::Outcome o;
    o.display_result = std::string(id) + " of " + std::to_string(analysis::pressed_actions(content).size());
    return o;
  };
  CHECK(analysis::run_analysis(d, sl.s, pressed, {}).outcome->display_result == "redo of 1");
  CHECK(analysis::run_analysis(d, sl.s, {}, {}).outcome->display_result == "ran");  // a create
}

TEST_CASE("pressed patchCollection buttons are found", "[engine]") {
  const auto content = json::parse(R"({"actions": [{"id": "approve", "state": 0}, {"id": "redo", "state": 1}, {"id": 7, "state": 1}]})");
  CHECK(analysis::pressed_actions(content) == std::vector<std::string>{"redo", "7"});
  CHECK(analysis::pressed_actions(json::parse("[]")).empty());
}

TEST_CASE("iaworker analyse: result, overlay and exit codes", "[cli]") {
  SmallSlide sl;
  const auto out = (sl.dir / "r.json").string(), png = (sl.dir / "o.png").string();
  auto r = run({bin("iaworker"), "analyse", sl.ts.path, "--analysis", "tissue", "--param", "method=otsu_od", "--out",
                out, "--overlay", png});
  INFO(r.out << r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("Tissue ") && Catch::Contains("Slide coverage (%)"));
  CHECK(std::filesystem::file_size(png) > 1000);
  std::ifstream f(out);
  std::stringstream text;
  text << f.rdbuf();
  const auto result = json::parse(text.str());
  CHECK(result.at("data").at("result").at("type").as_string() == "primitive");
  r = run({bin("iaworker"), "analyse", sl.ts.path, "--param", "min_region_um2=-3"});
  CHECK(r.code == 2);
  CHECK_THAT(r.err, Catch::Contains("parameter min_region_um2: -3 is below 0"));
  r = run({bin("iaworker"), "analyse", sl.ts.path, "--analysis", "nope"});
  CHECK(r.code == 2);
  r = run({bin("iaworker"), "analyse", (sl.dir / "missing.svs").string()});
  CHECK(r.code == 1);
  r = run({bin("iaworker"), "analyse", "--list"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("--param min_region_um2=20000"));
}
