#include "server/job_payload.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <ctime>
#include <stdexcept>

namespace iaserve::server {

std::string_view to_string(JobKind k) {
  switch (k) {
    case JobKind::create: return "create";
    case JobKind::modify: return "modify";
    case JobKind::notification: return "notification";
  }
  return "create";
}

const iaapi::CallbackInfo& JobPayload::callback() const {
  if (invocation) return invocation->callback;
  if (notification) return notification->callback;
  throw std::logic_error("job payload without invocation or notification");
}

const boost::json::object& JobPayload::context() const {
  if (invocation) return invocation->context;
  if (notification) return notification->context;
  throw std::logic_error("job payload without invocation or notification");
}

boost::json::object to_json(const JobPayload& p) {
  boost::json::object o;
  o["version"] = JobPayload::kVersion;
  o["kind"] = to_string(p.kind);
  o["applicationId"] = p.application_id;
  o["slideId"] = p.slide_id;
  o["receivedAt"] = p.received_at;
  if (p.invocation) o["invocation"] = iaapi::to_json(*p.invocation);
  if (p.notification) o["notification"] = iaapi::to_json(*p.notification);
  if (p.action_id) o["actionId"] = *p.action_id;
  return o;
}

namespace {
[[noreturn]] void bad(const std::string& field, const std::string& message) {
  throw std::runtime_error("job payload: " + field + ": " + message);
}
std::string string_field(const boost::json::object& o, const char* name) {
  auto it = o.find(name);
  if (it == o.end()) bad(name, "missing");
  if (!it->value().is_string()) bad(name, std::string("expected string, got ") + iaapi::json_kind_name(it->value()));
  return std::string(it->value().get_string());
}
}  // namespace

JobPayload job_payload_from_json(const boost::json::object& o) {
  JobPayload p;
  if (auto v = o.if_contains("version"); !v || !v->is_int64() || v->get_int64() != JobPayload::kVersion)
    bad("version", "expected 1");
  std::string kind = string_field(o, "kind");
  if (kind == "create") p.kind = JobKind::create;
  else if (kind == "modify") p.kind = JobKind::modify;
  else if (kind == "notification") p.kind = JobKind::notification;
  else bad("kind", "unknown kind \"" + kind + "\"");
  p.application_id = string_field(o, "applicationId");
  p.slide_id = string_field(o, "slideId");
  if (o.contains("receivedAt")) p.received_at = string_field(o, "receivedAt");
  if (p.kind == JobKind::notification) {
    auto v = o.if_contains("notification");
    if (!v) bad("notification", "missing");
    auto d = iaapi::decode<iaapi::ImageNotification>(*v);
    if (!d) bad("notification." + d.error.field, d.error.message);
    p.notification = std::move(*d.value);
  } else {
    auto v = o.if_contains("invocation");
    if (!v) bad("invocation", "missing");
    auto d = iaapi::decode<iaapi::Invocation>(*v);
    if (!d) bad("invocation." + d.error.field, d.error.message);
    p.invocation = std::move(*d.value);
  }
  if (o.contains("actionId")) p.action_id = string_field(o, "actionId");
  return p;
}


}  // namespace iaserve::server
