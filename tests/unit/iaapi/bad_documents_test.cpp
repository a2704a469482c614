// Bad documents with the exact error each one must give: the text is what an
// administrator reads in a log or in the answer to DPAT, so it is pinned.
#include "iaapi/messages.hpp"

#include "documents.hpp"
#include "json_support.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace iaserve::iaapi;
using iaapi_test::edited;
namespace json = boost::json;

namespace {

struct Case {
  std::string body;
  std::string error;
};

json::object& input(json::object& o) {
  return o["input"].as_object();
}
json::object& content(json::object& o) {
  return input(o)["content"].as_object();
}
json::array& points(json::object& o) {
  return content(o)["polygon"].as_object()["points"].as_array();
}
json::object& stored_content(json::object& o) {
  return input(o)["data"].as_object()["result"].as_object()["content"].as_object();
}

std::string nested(int depth) {
  return std::string(static_cast<std::size_t>(depth), '[') +
         std::string(static_cast<std::size_t>(depth), ']');
}

template <class T>
void check_cases(const std::vector<Case>& cases) {
  for (const auto& c : cases) {
    INFO("document: " << c.body);
    Decoded<T> d;
    REQUIRE_NOTHROW(d = decode_body<T>(c.body));
    CHECK_FALSE(d.ok());
    CHECK(d.error.what() == c.error);
  }
}

}  // namespace

TEST_CASE("bad invocations give the field path and what was wrong", "[iaapi][errors]") {
  using iaapi_docs::kInvocationModify;
  using iaapi_docs::kInvocationMultiArea;
  using iaapi_docs::kInvocationTaggedPolygon;
  using iaapi_docs::kInvocationWholeSlide;
  const std::vector<Case> cases = {
      {"not json", "body: syntax error at offset 0"},
      {R"({"action": "create", )", "body: incomplete JSON at offset 21"},
      {"", "body: incomplete JSON at offset 0"},
      {R"({"a": 1} x)", "body: extra data at offset 9"},
      {"[]", "body: expected object, got array"},
      {R"({"action": "create", "context": )" + nested(40) + "}",
       "body: nested deeper than 32 levels at offset 63"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["action"] = "frobnicate"; }),
       R"(action: unknown value "frobnicate" (expected create, modify, delete or cancel))"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["action"] = "a\nb"; }),
       R"(action: unknown value "a?b" (expected create, modify, delete or cancel))"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["action"] = nullptr; }),
       "action: expected string, got null"},
      {edited(kInvocationWholeSlide, [](auto& o) { o.erase("slideId"); }), "slideId: missing"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["slideId"] = ""; }), "slideId: empty"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["slideId"] = 17; }),
       "slideId: expected string, got number"},
      {edited(kInvocationWholeSlide,
              [](auto& o) { o["slideId"] = json::string(std::string("abc\0def", 7)); }),
       "slideId: control character at offset 3"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["slideId"] = std::string(300, 'a'); }),
       "slideId: longer than 256 bytes (300)"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["applicationId"] = "tis\x7f"; }),
       "applicationId: control character at offset 3"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["callbackInfo"].as_object().erase("token"); }),
       "callbackInfo.token: missing"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["callbackInfo"] = "http://x"; }),
       "callbackInfo: expected object, got string"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["context"] = "gpu"; }),
       "context: expected object, got string"},
      {edited(kInvocationWholeSlide, [](auto& o) { o["cancellationToken"] = 5; }),
       "cancellationToken: expected string, got number"},
      {edited(kInvocationWholeSlide, [](auto& o) { o.erase("input"); }),
       "input: missing (required for action create)"},
      {edited(kInvocationWholeSlide, [](auto& o) { input(o)["type"] = "circle"; }),
       R"(input.type: unknown value "circle" (expected wholeSlide, taggedPolygon or multiArea))"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { points(o)[3].as_object()["x"] = "0.1"; }),
       "input.content.polygon.points[3].x: expected number, got string"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { points(o)[0].as_object().erase("y"); }),
       "input.content.polygon.points[0].y: missing"},
      {R"({"action": "create", "applicationId": "a", "slideId": "s",
          "callbackInfo": {"url": "u", "token": "t"},
          "input": {"type": "multiArea", "content": {"polygons": [{"points": [
            {"x": 0, "y": 0}, {"x": 1e999, "y": 0}, {"x": 0, "y": 1}]}]}}})",
       "input.content.polygons[0].points[1].x: not a finite number"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { points(o).resize(2); }),
       "input.content.polygon.points: 2 points, need at least 3"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { content(o).erase("tagIndex"); }),
       "input.content.tagIndex: missing (required when tags is given)"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { content(o)["tagIndex"] = 5; }),
       "input.content.tagIndex: 5 out of range [0,2)"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { content(o)["tagIndex"] = 0.5; }),
       "input.content.tagIndex: expected integer, got a fractional number"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { input(o).erase("content"); }),
       "input.content: missing (required for input type taggedPolygon)"},
      {edited(kInvocationTaggedPolygon, [](auto& o) { content(o).erase("polygon"); }),
       "input.content.polygon: missing"},
      {edited(kInvocationMultiArea, [](auto& o) { content(o)["polygons"] = json::array(); }),
       "input.content.polygons: empty"},
      {edited(kInvocationMultiArea,
              [](auto& o) { content(o)["polygons"].as_array()[1] = "square"; }),
       "input.content.polygons[1]: expected object, got string"},
      {edited(kInvocationModify, [](auto& o) { input(o).erase("id"); }), "input.id: missing"},
      {edited(kInvocationModify, [](auto& o) { input(o)["id"] = "1234"; }),
       "input.id: expected integer, got string"},
      {edited(kInvocationModify, [](auto& o) { input(o)["id"] = 18446744073709551615ull; }),
       "input.id: integer out of range"},
      {edited(
           kInvocationModify,
           [](auto& o) { input(o)["data"].as_object()["result"].as_object()["type"] = "heatmap"; }),
       R"(input.data.result.type: unknown value "heatmap" (expected primitive or patchCollection))"},
      {edited(kInvocationModify,
              [](auto& o) { stored_content(o)["patches"].as_array()[0].as_object()["tag"] = 5; }),
       "input.data.result.content.patches[0].tag: 5 out of range [0,2)"},
      {edited(kInvocationModify,
              [](auto& o) { input(o)["attachments"].as_array()[0].as_object()["state"] = "lost"; }),
       R"(input.attachments[0].state: unknown value "lost" (expected new, upload-in-progress or stored))"},
      {edited(kInvocationModify,
              [](auto& o) { input(o)["displayProperties"].as_object()["Done"] = true; }),
       "input.displayProperties.Done: expected string or number, got bool"},
      {edited(kInvocationModify,
              [](auto& o) { stored_content(o)["statuses"].as_object()["allowVerify"] = 1; }),
       "input.data.result.content.statuses.allowVerify: expected object, got number"},
      {edited(kInvocationModify,
              [](auto& o) {
                input(o)["data"].as_object()["result"].as_object()["content"] = "polygons";
              }),
       "input.data.result.content: expected object, got string"},
  };
  check_cases<Invocation>(cases);
}

TEST_CASE("bad image info and results", "[iaapi][errors]") {
  using iaapi_docs::kImageInfo;
  check_cases<ImageInfo>({
      {edited(kImageInfo, [](auto& o) { o["imageSize"].as_object()["width"] = 0; }),
       "imageSize.width: 0 is not positive"},
      {edited(kImageInfo, [](auto& o) { o.erase("tileSize"); }), "tileSize: missing"},
      {edited(kImageInfo,
              [](auto& o) { o["tileSize"].as_object()["width"] = std::int64_t{9223372036854775807}; }),
       "tileSize.width: 9223372036854775807 is more than 65536"},
      {edited(kImageInfo, [](auto& o) { o["imageSize"].as_object()["height"] = std::int64_t{1} << 40; }),
       "imageSize.height: 1099511627776 is more than 2147483648"},
      {edited(kImageInfo, [](auto& o) { o["imageSize"].as_object()["width"] = 1e16; }),
       "imageSize.width: integer out of range"},
      {edited(kImageInfo, [](auto& o) { o["micronsPerPixel"] = "0.5"; }),
       "micronsPerPixel: expected number, got string"},
      {edited(kImageInfo, [](auto& o) { o["qualityControl"].as_object()["status"] = "Maybe"; }),
       R"(qualityControl.status: unknown value "Maybe" (expected NotSet, QualityOk or Rejected))"},
      {edited(kImageInfo, [](auto& o) { o["focalPlanes"].as_array()[0] = json::object(); }),
       "focalPlanes[0].id: missing"},
  });
  check_cases<ImageNotification>({
      {edited(iaapi_docs::kImageNotification, [](auto& o) { o.erase("imageInfo"); }),
       "imageInfo: missing"},
      {edited(iaapi_docs::kImageNotification,
              [](auto& o) { o["imageInfo"].as_object()["id"] = ""; }),
       "imageInfo.id: empty"},
  });
  check_cases<std::vector<StoredResult>>({
      {R"([{"id": 1, "versionId": "a", "slideId": "s"}, {"id": "x", "versionId": "b"}])",
       "[1].id: expected integer, got string"},
      {R"({"id": 1})", "body: expected array, got object"},
  });
}

TEST_CASE("sizes of untrusted documents are bounded", "[iaapi][errors]") {
  std::string many =
      R"({"slideId": "s", "data": {"result": {"type": "primitive", "content": [{"polygons": [)";
  for (std::size_t i = 0; i <= kMaxPolygons; ++i)
    many += i ? R"(,{"points":[]})" : R"({"points":[]})";
  many += "]}]}}}";
  auto d = decode_body<Result>(many);
  CHECK(d.error.what() ==
        "data.result.content[0].polygons: too many elements (100001, limit 100000)");

  const std::string long_text(kMaxStringLength + 1, 'x');
  auto r = decode_body<Result>(R"({"slideId": "s", "displayResult": ")" + long_text + "\"}");
  CHECK(r.error.what() == "displayResult: too long (65537 bytes, limit 65536)");

  // At the limit is still fine.
  auto ok = decode_body<Result>(R"({"slideId": "s", "displayResult": ")" +
                                std::string(kMaxStringLength, 'x') + "\"}");
  CHECK(ok.ok());
}

TEST_CASE("get() turns a field error into DecodeError", "[iaapi][errors]") {
  auto d = decode_body<Invocation>("{}");
  CHECK_FALSE(d.ok());
  CHECK(d.error.field == "action");
  CHECK(d.error.message == "missing");
  CHECK_THROWS_AS(d.get(), DecodeError);
  try {
    d.get();
  } catch (const DecodeError& e) {
    CHECK(std::string(e.what()) == "action: missing");
    CHECK(e.error().field == "action");
  }
  CHECK(decode_body<ApplicationInfo>(R"({"apiVersion": "1.9"})").get().api_version == "1.9");
}
