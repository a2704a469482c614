// The engine around the analyses: parameter validation, the run context
// (progress, cancel, time limit) and the wrapper that turns whatever an
// analysis throws into a message for the slide.
#include <boost/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <new>
#include <sstream>
#include <system_error>

#include "iaapi/version.hpp"
#include "worker/analysis/analysis.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::analysis {

namespace json = boost::json;

std::string_view to_string(RunStatus s) {
  switch (s) {
    case RunStatus::ok: return "ok";
    case RunStatus::failed: return "failed";
    case RunStatus::cancelled: return "cancelled";
    case RunStatus::timed_out: return "timed_out";
  }
  return "?";
}

namespace {

[[noreturn]] void bad_field(const std::string& field, const std::string& what) {
  throw std::invalid_argument("field " + field + ": " + what);
}

PolygonPx polygon_from_json(const json::value& v, const std::string& field, double width) {
  if (!v.is_object()) bad_field(field, "expected object, got " + std::string(json_kind_name(v)));
  const json::value* pts = v.as_object().if_contains("points");
  if (!pts) bad_field(field + ".points", "missing");
  if (!pts->is_array())
    bad_field(field + ".points", "expected array, got " + std::string(json_kind_name(*pts)));
  PolygonPx poly;
  std::size_t i = 0;
  for (const auto& p : pts->as_array()) {
    const std::string pf = field + ".points[" + std::to_string(i++) + "]";
    if (!p.is_object()) bad_field(pf, "expected object, got " + std::string(json_kind_name(p)));
    PointPx q;
    for (const char* axis : {"x", "y"}) {
      const json::value* c = p.as_object().if_contains(axis);
      if (!c) bad_field(pf + "." + axis, "missing");
      if (!c->is_number()) bad_field(pf + "." + axis, "expected number, got " + std::string(json_kind_name(*c)));
      const double d = c->to_number<double>();
      if (!std::isfinite(d)) bad_field(pf + "." + axis, "not a finite number");
      (axis[0] == 'x' ? q.x : q.y) = d * width;
    }
    poly.push_back(q);
  }
  if (poly.size() < 3)
    bad_field(field + ".points", std::to_string(poly.size()) + " points, a polygon needs at least 3");
  return poly;
}

}  // namespace

Input input_from_json(std::string_view type, const json::value& content, double slide_width) {
  Input in;
  auto t = input_type_from_string(type);
  if (!t) bad_field("input.type", "unknown input type \"" + std::string(type) + "\"");
  in.type = *t;
  switch (in.type) {
    case InputType::whole_slide: break;
    case InputType::tagged_polygon: {
      if (!content.is_object())
        bad_field("input.content", "expected object, got " + std::string(json_kind_name(content)));
      const json::value* poly = content.as_object().if_contains("polygon");
      if (!poly) bad_field("input.content.polygon", "missing");
      in.regions.push_back(polygon_from_json(*poly, "input.content.polygon", slide_width));
      break;
    }
    case InputType::multi_area: {
      if (!content.is_object())
        bad_field("input.content", "expected object, got " + std::string(json_kind_name(content)));
      const json::value* polys = content.as_object().if_contains("polygons");
      if (!polys) bad_field("input.content.polygons", "missing");
      if (!polys->is_array())
        bad_field("input.content.polygons", "expected array, got " + std::string(json_kind_name(*polys)));
      std::size_t i = 0;
      for (const auto& p : polys->as_array())
        in.regions.push_back(polygon_from_json(p, "input.content.polygons[" + std::to_string(i++) + "]", slide_width));
      if (in.regions.empty()) bad_field("input.content.polygons", "empty");
      break;
    }
  }
  return in;
}

// ---- running ------------------------------------------------------------

namespace {
std::string seconds_text(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000);
  std::ostringstream s;
  s << static_cast<double>(ms.count()) / 1000.0;
  return s.str();
}
}  // namespace

TimedOut::TimedOut(std::chrono::milliseconds limit)
    : std::runtime_error("analysis timed out after " + seconds_text(limit) + " s") {}

Context::Context(const slide::Slide& slide, Input input, Params params, Hooks hooks)
    : slide_(slide),
      input_(std::move(input)),
      params_(std::move(params)),
      hooks_(std::move(hooks)),
      start_(std::chrono::steady_clock::now()) {}

bool Context::cancelled() const { return hooks_.cancelled && hooks_.cancelled(); }

std::chrono::steady_clock::duration Context::elapsed() const {
  return std::chrono::steady_clock::now() - start_;
}

void Context::check() const {
  if (cancelled()) throw Cancelled();
  if (hooks_.time_limit.count() > 0 && elapsed() > hooks_.time_limit) throw TimedOut(hooks_.time_limit);
}

void Context::progress(int percent) {
  check();
  percent = std::clamp(percent, 0, 100);
  if (percent <= last_progress_) return;
  last_progress_ = percent;
  if (hooks_.progress) hooks_.progress(percent);
}

bool host_errno(int e) {
  switch (e) {
    case ENOMEM: case ENOSPC: case EDQUOT: case EIO: case EMFILE: case ENFILE: case EAGAIN: case ETIMEDOUT:
    case ETXTBSY:
      return true;
    default:
      return false;
  }
}

namespace {
// Errors of this host's resources, not of the slide or the analysis.
bool host_failure(const std::exception& e) {
  if (dynamic_cast<const HostError*>(&e)) return true;
  if (auto* s = dynamic_cast<const slide::SlideError*>(&e)) return s->kind() == slide::SlideError::Kind::io;
  auto* sys = dynamic_cast<const std::system_error*>(&e);  // std::filesystem errors too
  if (!sys || (sys->code().category() != std::generic_category() && sys->code().category() != std::system_category()))
    return false;
  return host_errno(sys->code().value());
}
}  // namespace

RunReport run_analysis(const Descriptor& d, const slide::Slide& slide, const Input& input,
                       const Params& params, const Hooks& hooks) {
  RunReport report;
  const auto start = std::chrono::steady_clock::now();
  try {
    if (std::find(d.inputs.begin(), d.inputs.end(), input.type) == d.inputs.end())
      throw std::invalid_argument("analysis " + d.name + " does not accept input type " +
                                  std::string(to_string(input.type)));
    if (input.type != InputType::whole_slide && input.regions.empty())
      throw std::invalid_argument("input " + std::string(to_string(input.type)) + " without polygons");
    Context ctx(slide, input, params, hooks);
    ctx.progress(0);
    Outcome out = input.action && d.on_action ? d.on_action(ctx, input.action->content, input.action->id) : d.run(ctx);
    ctx.progress(100);
    report.outcome = std::move(out);
    report.status = RunStatus::ok;
  } catch (const Cancelled& e) {
    report.status = RunStatus::cancelled;
    report.error = e.what();
  } catch (const TimedOut& e) {
    report.status = RunStatus::timed_out;
    report.error = e.what();
  } catch (const std::bad_alloc&) {
    report.status = RunStatus::failed;
    report.error = "analysis " + d.name + ": out of memory";
    report.transient = true;
  } catch (const std::exception& e) {
    report.status = RunStatus::failed;
    report.error = e.what();
    if (report.error.empty()) report.error = "analysis " + d.name + " failed";
    report.transient = host_failure(e);
  } catch (...) {
    report.status = RunStatus::failed;
    report.error = "analysis " + d.name + " failed with an unknown error";
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

RunReport run_analysis(std::string_view name, const slide::Slide& slide, const Input& input,
                       const json::object& params, const Hooks& hooks) {
  const Descriptor* d = find(name);
  if (!d) {
    RunReport r;
    std::string known;
    for (const auto* x : all()) known += (known.empty() ? "" : ", ") + x->name;
    r.error = "unknown analysis \"" + std::string(name) + "\" (known: " + known + ")";
    return r;
  }
  Params p;
  try {
    p = validate_params(*d, params);
  } catch (const std::exception& e) {
    RunReport r;
    r.error = e.what();
    return r;
  }
  return run_analysis(*d, slide, input, p, hooks);
}

const Descriptor* find(std::string_view name) {
  for (const auto* d : all())
    if (d->name == name) return d;
  return nullptr;
}

// ---- results ------------------------------------------------------------

json::object display_properties_json(const Outcome& o) {
  json::object props;
  for (const auto& [k, v] : o.display_properties)
    std::visit([&props, &k](const auto& x) { props[k] = x; }, v);
  return props;
}

json::object result_json(const Outcome& o, std::string_view slide_id, const json::object& context) {
  json::object r;
  r["slideId"] = slide_id;
  r["displayResult"] = o.display_result;
  r["displayProperties"] = display_properties_json(o);
  r["applicationVersion"] = kSoftwareVersion;
  json::object data;
  data["context"] = context;
  data["result"] = {{"type", o.result_type}, {"content", o.content}};
  r["data"] = std::move(data);
  return r;
}

std::vector<std::string> pressed_actions(const json::value& content) {
  std::vector<std::string> out;
  const json::object* o = content.if_object();
  if (!o) return out;
  const json::value* actions = o->if_contains("actions");
  if (!actions || !actions->is_array()) return out;
  for (const auto& a : actions->as_array()) {
    const json::object* ao = a.if_object();
    if (!ao) continue;
    const json::value* state = ao->if_contains("state");
    const json::value* id = ao->if_contains("id");
    if (!state || !id || !state->is_number() || state->to_number<double>() != 1) continue;
    if (id->is_string())
      out.emplace_back(id->as_string());
    else if (id->is_number())
      out.push_back(json::serialize(*id));
  }
  return out;
}

}  // namespace iaserve::analysis
