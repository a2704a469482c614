#include "iaapi/result_builder.hpp"

#include "iaapi/geometry.hpp"
#include "iaapi/messages.hpp"
#include "iaapi/text.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <variant>

using namespace iaserve::iaapi;
namespace json = boost::json;

namespace {
std::string text_property(const Result& r, std::string_view name) {
  const DisplayValue* v = r.property(name);
  REQUIRE(v);
  REQUIRE(std::holds_alternative<std::string>(*v));
  return std::get<std::string>(*v);
}
}  // namespace

TEST_CASE("progress result frames the slide and says how far", "[iaapi][builder]") {
  const Result r = progress_result("CMU-1", 2220, 2967, "analysis queued", 0, "0.1.0");
  CHECK(r.slide_id == "CMU-1");
  CHECK(r.application_version == "0.1.0");
  CHECK(r.display_result == "analysis queued (0 %)");
  CHECK(text_property(r, "Progress") == "0 %");
  CHECK(text_property(r, "Status") == "analysis queued");
  REQUIRE(r.data.result);
  CHECK(r.data.result->type == ResultType::primitive);
  REQUIRE(r.data.result->primitives.size() == 1);
  const PrimitiveItem& item = r.data.result->primitives[0];
  REQUIRE(item.polygons.size() == 1);
  CHECK(item.polygons[0] == frame_polygon(2220, 2967));
  REQUIRE(item.labels.size() == 1);
  CHECK(item.labels[0].label == "analysis queued (0 %)");
  CHECK(item.labels[0].location.y < 0.05);
  REQUIRE(item.style);
  CHECK(item.style->stroke_style);

  // What DPAT receives decodes back to the same result.
  const json::value j = to_json(r);
  auto back = decode<Result>(j);
  INFO(back.error.what());
  REQUIRE(back.ok());
  CHECK(json::serialize(to_json(*back)) == json::serialize(j));
}

TEST_CASE("progress percent is clamped, and left out when unknown", "[iaapi][builder]") {
  CHECK(progress_result("s", 10, 10, "running", 150, "v").display_result == "running (100 %)");
  const Result unknown = progress_result("s", 10, 10, "downloading", -1, "v");
  CHECK(unknown.display_result == "downloading");
  CHECK(unknown.property("Progress") == nullptr);
  // Without the slide size there is no frame, only the label.
  const Result no_size = progress_result("s", 0, 0, "queued", 0, "v");
  CHECK(no_size.data.result->primitives[0].polygons.empty());
  CHECK(no_size.data.result->primitives[0].labels.size() == 1);
}

TEST_CASE("valid_utf8 keeps good text and replaces each bad byte, clip_utf8 too", "[iaapi][builder]") {
  CHECK(valid_utf8("plain, \u00e9t\u00e9, \u4e2d, \U0001F52C") == "plain, \u00e9t\u00e9, \u4e2d, \U0001F52C");
  CHECK(valid_utf8("Gr\xf6\xdf" "e") == "Gr\uFFFD\uFFFDe");          // Latin-1
  CHECK(valid_utf8("\xc0\xaf") == "\uFFFD\uFFFD");                // overlong '/'
  CHECK(valid_utf8("\xed\xa0\x80") == "\uFFFD\uFFFD\uFFFD");      // a surrogate
  CHECK(valid_utf8("\xf4\x90\x80\x80") == "\uFFFD\uFFFD\uFFFD\uFFFD");  // above U+10FFFF
  CHECK(valid_utf8("a\xe2\x82") == "a\uFFFD\uFFFD");              // cut short
  CHECK(valid_utf8(std::string("a\0b", 3)) == std::string("a\0b", 3));
  CHECK(clip_utf8("ab\xff", 10) == "ab\uFFFD");
  const Result r = failed_result("s", 100, 50, "stderr: Gr\xf6\xdf" "e", "0.1.0");
  CHECK_NOTHROW(boost::json::parse(boost::json::serialize(to_json(r))));
}

TEST_CASE("failed result", "[iaapi][builder]") {
  const Result r = failed_result("s", 100, 50, "callback token expired (401)", "0.1.0");
  CHECK(r.display_result == "analysis failed: callback token expired (401)");
  CHECK(text_property(r, "Status") == "failed");
  CHECK(text_property(r, "Error") == "callback token expired (401)");
  CHECK(r.data.result->primitives[0].style->stroke_style != progress_style().stroke_style);
  const std::string long_reason(5000, 'x');
  CHECK(failed_text(long_reason).size() < 600);
  // Cut between characters, never inside one: the result stays valid JSON
  // (an "é" straddles the 500-byte limit here).
  const std::string accented = std::string(499, 'a') + "\u00e9tait impossible";
  const Result cut = failed_result("s", 100, 50, accented, "0.1.0");
  CHECK(text_property(cut, "Error") == std::string(499, 'a') + "...");
  CHECK_NOTHROW(boost::json::parse(boost::json::serialize(to_json(cut))));
}

TEST_CASE("primitive result from polygons and labels", "[iaapi][builder]") {
  const Polygon p = rect_polygon(10, 10, 100, 100, 1000);
  const Result r = primitive_result("s",
                                    {primitive_item({p}, {{label_position(p), "region 1"}},
                                                    region_style("#00ff00", "rgba(0,255,0,0.3)"))},
                                    "1 region", "0.1.0", {{"Regions", std::int64_t{1}}});
  const json::value j = to_json(r);
  const auto& content = j.at("data").at("result").at("content").as_array();
  REQUIRE(content.size() == 1);
  CHECK(content[0].at("style").at("fillStyle") == "rgba(0,255,0,0.3)");
  CHECK(content[0].at("labels").as_array()[0].at("label") == "region 1");
  CHECK(j.at("displayProperties").at("Regions") == 1);
  CHECK(region_style("#fff").fill_style == std::nullopt);
}
