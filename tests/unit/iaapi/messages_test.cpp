#include "iaapi/messages.hpp"

#include "documents.hpp"
#include "json_support.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <string>
#include <variant>

using namespace iaserve::iaapi;
using iaapi_test::doc;
using iaapi_test::edited;
using iaapi_test::same;
namespace json = boost::json;

namespace {

// Decodes the document, encodes it, decodes and encodes again: the two
// encodings must be identical, and when `lossless` also mean the same as the
// original document (nothing dropped, nothing invented).
template <class T>
T round_trip(std::string_view text, bool lossless = true) {
  const json::value original = doc(text);
  auto first = decode<T>(original);
  INFO(first.error.what());
  REQUIRE(first.ok());
  REQUIRE(first.error.empty());
  const json::value encoded = to_json(*first);
  const std::string once = json::serialize(encoded);
  auto second = decode_body<T>(once);
  INFO(second.error.what());
  REQUIRE(second.ok());
  const std::string twice = json::serialize(to_json(*second));
  CHECK(once == twice);
  if (lossless) {
    INFO("original: " << json::serialize(original) << "\nencoded:  " << once);
    CHECK(same(original, encoded));
  }
  return std::move(*first.value);
}

}  // namespace

TEST_CASE("registration round trip", "[iaapi][messages]") {
  auto r = round_trip<Registration>(iaapi_docs::kRegistration);
  CHECK(r.application_id == "tissue");
  CHECK(r.input_template.type == InputType::taggedPolygon);
  REQUIRE(r.input_template.tags);
  CHECK(*r.input_template.tags == std::vector<std::string>{"tumour", "stroma"});
  CHECK(r.context.at("model") == "otsu");
}

TEST_CASE("application info round trip", "[iaapi][messages]") {
  auto i = round_trip<ApplicationInfo>(iaapi_docs::kApplicationInfo);
  CHECK(i.api_version == "1.10");
  CHECK(i.software_version == "4.2.1.1234");
}

TEST_CASE("whole-slide create invocation round trip", "[iaapi][messages]") {
  auto inv = round_trip<Invocation>(iaapi_docs::kInvocationWholeSlide);
  CHECK(inv.action == Action::create);
  CHECK(inv.slide_id == "1.2.752.24.10.2954227164.3472380.53.4.1.0");
  CHECK(inv.callback.url ==
        "https://pacs.example.org/SectraPathologyServer/external/imageanalysis/v1");
  CHECK(inv.context.at("seedValue") == 42);
  REQUIRE(inv.cancellation_token);
  REQUIRE(inv.input);
  CHECK(inv.input->type == InputType::wholeSlide);
  CHECK(inv.input->regions().empty());
}

TEST_CASE("tagged polygon invocation round trip", "[iaapi][messages]") {
  auto inv = round_trip<Invocation>(iaapi_docs::kInvocationTaggedPolygon);
  REQUIRE(inv.input);
  REQUIRE(inv.input->tagged_polygon);
  const auto& t = *inv.input->tagged_polygon;
  REQUIRE(t.polygon.points.size() == 4);
  CHECK(t.polygon.points[2] == Point{0.45, 0.61});
  CHECK(t.tag_index == 1);
  CHECK(inv.input->regions().size() == 1);
  CHECK(inv.context.empty());
}

TEST_CASE("multi-area invocation round trip", "[iaapi][messages]") {
  auto inv = round_trip<Invocation>(iaapi_docs::kInvocationMultiArea);
  REQUIRE(inv.input);
  REQUIRE(inv.input->multi_area);
  REQUIRE(inv.input->regions().size() == 2);
  CHECK(inv.input->regions()[1].points[2] == Point{0.75, 1.25});
}

TEST_CASE("modify invocation carries the stored result and keeps unknown fields",
          "[iaapi][messages]") {
  auto inv = round_trip<Invocation>(iaapi_docs::kInvocationModify);
  CHECK(inv.action == Action::modify);
  REQUIRE(inv.input);
  REQUIRE(inv.input->result);
  const StoredResult& r = *inv.input->result;
  CHECK(r.id == 1234);
  CHECK(r.version_id == "7f3c2a");
  REQUIRE(r.display_properties.size() == 3);
  CHECK(std::get<std::string>(r.display_properties[0].value) == "3.14 mm2");
  CHECK(std::get<std::int64_t>(r.display_properties[1].value) == 3);
  CHECK(std::get<double>(r.display_properties[2].value) == 0.425);
  REQUIRE(r.attachments);
  CHECK((*r.attachments)[0].state == AttachmentState::stored);
  CHECK(r.extra.at("sectraInternal").at("revision") == 3);
  REQUIRE(r.data.result);
  CHECK(r.data.result->type == ResultType::patchCollection);
  const PatchCollection& pc = r.data.result->patches;
  CHECK(pc.patches.size() == 2);
  CHECK(pc.patches[1].tag == 1);
  CHECK(pc.patch_size == 224);
  REQUIRE(pc.statuses.size() == 1);
  CHECK(pc.statuses[0].first == "allowVerify");
  CHECK_FALSE(pc.statuses[0].second.value);
  REQUIRE(pc.actions.size() == 1);
  CHECK(pc.actions[0].state == 1);
  // What the app PUTs back still has the field it did not understand.
  CHECK(to_json(r).at("sectraInternal").at("revision") == 3);
}

TEST_CASE("delete and cancel invocations", "[iaapi][messages]") {
  auto del = round_trip<Invocation>(iaapi_docs::kInvocationDelete, false);
  CHECK(del.action == Action::delete_);
  REQUIRE(del.input);
  REQUIRE(del.input->result);
  CHECK(del.input->result->id == 7);
  CHECK_FALSE(del.input->result->data.result);

  auto cancel = round_trip<Invocation>(iaapi_docs::kInvocationCancel);
  CHECK(cancel.action == Action::cancel);
  CHECK_FALSE(cancel.input);
  CHECK(cancel.cancellation_token == "b7a0e0f2");
}

TEST_CASE("image info round trip keeps every field", "[iaapi][messages]") {
  auto i = round_trip<ImageInfo>(iaapi_docs::kImageInfo);
  CHECK(i.image_size == Size{2220, 2967});
  CHECK(i.tile_size == Size{240, 240});
  CHECK(i.microns_per_pixel == 0.499);
  CHECK(i.staining == "H&E");
  CHECK(i.block == "A1");
  REQUIRE(i.specimen);
  CHECK(i.specimen->anatomy == "Skin");
  CHECK(i.priority == 2);
  REQUIRE(i.quality_control);
  CHECK(i.quality_control->status == QualityStatus::QualityOk);
  CHECK(i.available_tile_formats.size() == 2);
  CHECK(i.extra.at("scannerModel") == "GT450");
}

TEST_CASE("image notification round trip", "[iaapi][messages]") {
  auto n = round_trip<ImageNotification>(iaapi_docs::kImageNotification);
  CHECK(n.slide_id == "CMU-1-Small-Region");
  CHECK(n.image_info.image_size.height == 2967);
  CHECK(n.image_info.staining == "H&E");
}

TEST_CASE("primitive content as a single object is accepted and written back as one",
          "[iaapi][messages]") {
  auto r = round_trip<StoredResult>(iaapi_docs::kStoredResultPrimitiveObject);
  REQUIRE(r.data.result);
  CHECK(r.data.result->single_object);
  REQUIRE(r.data.result->primitives.size() == 1);
  const PrimitiveItem& item = r.data.result->primitives[0];
  REQUIRE(item.style);
  CHECK(item.style->stroke_style == "#00ff00");
  CHECK(item.polylines.size() == 1);
  CHECK(item.labels[0].label == "Region 1");
  CHECK(to_json(r).at("data").at("result").at("content").is_object());
}

TEST_CASE("primitive content as a list round trip", "[iaapi][messages]") {
  auto r = round_trip<Result>(iaapi_docs::kResultPrimitiveList);
  REQUIRE(r.data.result);
  CHECK_FALSE(r.data.result->single_object);
  CHECK(r.data.result->primitives.size() == 2);
  CHECK(r.data.context.at("job") == "x");
  CHECK(to_json(r).at("data").at("result").at("content").is_array());
}

TEST_CASE("result lists, quality control and case images round trip", "[iaapi][messages]") {
  auto list = round_trip<std::vector<StoredResult>>(iaapi_docs::kStoredResultList);
  REQUIRE(list.size() == 2);
  CHECK(list[1].id == 2);
  CHECK_FALSE(list[0].data.result);

  auto qc = round_trip<QualityControl>(iaapi_docs::kQualityControl);
  CHECK(qc.quality_control.status == QualityStatus::Rejected);

  auto cases = round_trip<std::vector<CaseImageInfo>>(iaapi_docs::kCaseImages);
  REQUIRE(cases.size() == 2);
  CHECK(cases[1].staining == "Ki-67");
  CHECK_FALSE(cases[1].specimen);
}

TEST_CASE("display properties keep their order and types", "[iaapi][messages]") {
  Result r;
  r.slide_id = "s";
  r.set_property("Zeta", std::string("first"));
  r.set_property("Alpha", std::int64_t{2});
  r.set_property("Zeta", 1.5);
  REQUIRE(r.display_properties.size() == 2);
  CHECK(r.display_properties[0].name == "Zeta");
  REQUIRE(r.property("Zeta"));
  CHECK(std::get<double>(*r.property("Zeta")) == 1.5);
  CHECK(r.property("missing") == nullptr);
  const std::string text = json::serialize(to_json(r));
  CHECK(text.find("\"Zeta\"") < text.find("\"Alpha\""));
  auto back = decode_body<Result>(text);
  REQUIRE(back.ok());
  CHECK(std::holds_alternative<std::int64_t>(back->display_properties[1].value));
  CHECK(std::holds_alternative<double>(back->display_properties[0].value));
}

TEST_CASE("enum spellings", "[iaapi][messages]") {
  CHECK(to_string(Action::delete_) == "delete");
  CHECK(to_string(AttachmentState::upload_in_progress) == "upload-in-progress");
  CHECK(to_string(QualityStatus::NotSet) == "NotSet");
  CHECK(parse_action("cancel") == Action::cancel);
  CHECK_FALSE(parse_action("Cancel"));
  CHECK(parse_input_type("multiArea") == InputType::multiArea);
}

TEST_CASE("unknown fields inside result content survive a round trip", "[iaapi][messages]") {
  const std::string text = R"({"id": 3, "versionId": "v", "slideId": "s", "displayResult": "",
    "displayProperties": {}, "applicationVersion": "1",
    "data": {"context": {}, "heatmapVersion": 2,
             "result": {"type": "patchCollection", "content": {
               "description": "d", "polygons": [], "patches": [], "tags": [], "patchSize": 0,
               "magnification": 40, "verifiedBy": "dr. x"}}},
    "futureFlag": true})";
  auto r = round_trip<StoredResult>(text);
  CHECK(r.data.extra.at("heatmapVersion") == 2);
  CHECK(r.data.result->patches.extra.at("verifiedBy") == "dr. x");
  CHECK(r.extra.at("futureFlag") == true);
}

TEST_CASE("messages built in code encode as DPAT expects", "[iaapi][messages]") {
  Invocation inv;
  inv.action = Action::create;
  inv.application_id = "tissue";
  inv.slide_id = "s1";
  inv.callback = {"http://127.0.0.1:1/v1", "t"};
  InvocationInput in;
  in.type = InputType::multiArea;
  in.multi_area = MultiAreaContent{{Polygon{{{0, 0}, {0.5, 0}, {0.5, 0.25}}}}};
  inv.input = in;
  const json::value j = to_json(inv);
  CHECK(json::serialize(j) == R"({"action":"create","applicationId":"tissue","slideId":"s1",)"
                              R"("callbackInfo":{"url":"http://127.0.0.1:1/v1","token":"t"},)"
                              R"("input":{"type":"multiArea","content":{"polygons":[{"points":)"
                              R"([{"x":0,"y":0},{"x":5E-1,"y":0},{"x":5E-1,"y":2.5E-1}]}]}}})");
  auto back = decode<Invocation>(j);
  REQUIRE(back.ok());
  CHECK(back->input->regions()[0] == inv.input->regions()[0]);

  QualityControl qc{"0.1.0", {QualityStatus::QualityOk, "q2"}};
  CHECK(
      json::serialize(to_json(qc)) ==
      R"({"applicationVersion":"0.1.0","qualityControl":{"status":"QualityOk","versionId":"q2"}})");

  StoredResult stored;
  stored.id = 9;
  stored.version_id = "v9";
  stored.slide_id = "s1";
  const Result plain = as_result(stored);
  CHECK(to_json(plain).as_object().if_contains("id") == nullptr);
  CHECK(to_json(stored).at("id") == 9);
}

TEST_CASE("coordinates survive any number of decode/encode cycles unchanged", "[iaapi][messages]") {
  // Boost.JSON 1.81 reads about one in seven shortest-form doubles back one ulp
  // off; what we write must not drift on every PUT of a result.
  std::mt19937_64 rng(99);
  std::uniform_real_distribution<double> unit(0, 1.4);
  std::uniform_real_distribution<double> mant(1, 10);
  std::uniform_int_distribution<int> exp10(-30, 17);
  Polygon poly;
  for (int i = 0; i < 20000; ++i) {
    poly.points.push_back({unit(rng), unit(rng)});
    poly.points.push_back({mant(rng) * std::pow(10.0, exp10(rng)), -mant(rng) * 1e-9});
  }
  const std::string once = json::serialize(to_json(poly));
  auto back = decode_body<Polygon>(once);
  REQUIRE(back.ok());
  const std::string twice = json::serialize(to_json(*back));
  CHECK(once == twice);
  // Written values stay within 15 significant digits of the originals.
  for (std::size_t i = 0; i < poly.points.size(); ++i) {
    const double x = poly.points[i].x;
    if (std::abs(x) > 1e-8) CHECK(std::abs(back->points[i].x - x) <= std::abs(x) * 1e-14);
  }
  // Free-form numbers in a context are written the same way.
  auto r =
      decode_body<Result>(R"({"slideId": "s", "data": {"context": {"t": 0.8200000000000001}}})");
  REQUIRE(r.ok());
  const std::string ctx = json::serialize(to_json(*r));
  CHECK(json::serialize(to_json(*decode_body<Result>(ctx))) == ctx);
}

TEST_CASE("numbers beyond 1e18 are refused", "[iaapi][errors]") {
  auto r = decode_body<Polygon>(R"({"points": [{"x": 5.555555555555555e49, "y": 0}]})");
  CHECK(r.error.what() == "points[0].x: out of range (magnitude above 1e18)");
  CHECK(decode_body<Polygon>(R"({"points": [{"x": 1e18, "y": -1e18}]})").ok());
}
