#include <catch2/catch.hpp>

#include <boost/json.hpp>

#include "server/filter.hpp"
#include "server/job_payload.hpp"

using namespace iaserve;
using namespace iaserve::server;

namespace {

iaapi::Invocation sample_invocation() {
  auto d = iaapi::decode<iaapi::Invocation>(boost::json::parse(R"({
    "action": "create", "applicationId": "tissue", "slideId": "1.2.3",
    "callbackInfo": {"url": "http://dpat/ia/v1", "token": "secret-token"},
    "context": {"useGPU": false}, "cancellationToken": "c-1",
    "input": {"type": "wholeSlide"}})"));
  REQUIRE(d.ok());
  return *d.value;
}

iaapi::ImageInfo info(std::int64_t w, std::int64_t h, const char* staining, const char* block) {
  iaapi::ImageInfo i;
  i.id = "1.2.3";
  i.image_size = {w, h};
  i.tile_size = {256, 256};
  i.microns_per_pixel = 0.5;
  if (staining) i.staining = staining;
  if (block) i.block = block;
  return i;
}

}  // namespace

TEST_CASE("job payload round trip", "[payload]") {
  JobPayload p;
  p.kind = JobKind::modify;
  p.application_id = "tissue";
  p.slide_id = "1.2.3";
  p.received_at = utc_now_iso();
  p.invocation = sample_invocation();
  p.action_id = "rerun";
  boost::json::object o = to_json(p);
  CHECK(o.at("kind") == "modify");
  CHECK(o.at("version") == 1);
  CHECK(o.at("invocation").at("callbackInfo").at("token") == "secret-token");
  JobPayload q = job_payload_from_json(o);
  CHECK(q.kind == JobKind::modify);
  CHECK(q.slide_id == "1.2.3");
  CHECK(q.action_id == std::optional<std::string>("rerun"));
  REQUIRE(q.invocation);
  CHECK(q.callback().token == "secret-token");
  CHECK(q.invocation->cancellation_token == std::optional<std::string>("c-1"));
  CHECK(to_json(q) == o);
  CHECK(q.received_at.size() == 24);
}

TEST_CASE("job payload errors name the field", "[payload]") {
  JobPayload p;
  p.application_id = "tissue";
  p.slide_id = "1.2.3";
  p.invocation = sample_invocation();
  boost::json::object o = to_json(p);
  auto err = [](const boost::json::object& x) {
    try {
      job_payload_from_json(x);
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  auto a = o;
  a["kind"] = "dance";
  CHECK(err(a) == "job payload: kind: unknown kind \"dance\"");
  auto b = o;
  b.erase("invocation");
  CHECK(err(b) == "job payload: invocation: missing");
  auto c = o;
  c["version"] = 2;
  CHECK(err(c) == "job payload: version: expected 1");
  auto d = o;
  d["invocation"].as_object()["slideId"] = 5;
  CHECK_THAT(err(d), Catch::Matchers::StartsWith("job payload: invocation.slideId: "));
}

TEST_CASE("notification filter", "[filter]") {
  NotificationFilter f;
  CHECK(notification_rejection(f, info(1000, 1000, "HE", "A1")) ==
        std::optional<std::string>("notifications disabled for this app"));
  f.enabled = true;
  CHECK_FALSE(notification_rejection(f, info(1000, 1000, nullptr, nullptr)));  // empty lists take all
  f.staining = {"HE", "H-DAB"};
  CHECK_FALSE(notification_rejection(f, info(1000, 1000, "he", nullptr)));
  CHECK(notification_rejection(f, info(1000, 1000, "PAS", nullptr)) ==
        std::optional<std::string>("staining \"PAS\" not in [HE, H-DAB]"));
  CHECK(notification_rejection(f, info(1000, 1000, nullptr, nullptr)) ==
        std::optional<std::string>("staining unknown, wanted one of [HE, H-DAB]"));
  f.block = {"A1"};
  CHECK(notification_rejection(f, info(1000, 1000, "HE", "B2")) ==
        std::optional<std::string>("block \"B2\" not in [A1]"));
  f.min_width = 2000;
  CHECK(notification_rejection(f, info(1000, 1000, "HE", "A1")) ==
        std::optional<std::string>("width 1000 below min_width 2000"));
  f.min_width = 0;
  f.max_height = 500;
  CHECK(notification_rejection(f, info(1000, 1000, "HE", "A1")) ==
        std::optional<std::string>("height 1000 above max_height 500"));
  f.max_height = 0;
  CHECK_FALSE(notification_rejection(f, info(1000, 1000, "HE", "a1")));
}
