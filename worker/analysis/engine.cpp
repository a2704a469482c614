// The engine around the analyses: parameter validation, the run context
// (progress, cancel, time limit) and the wrapper that turns whatever an
// analysis throws into a message for the slide.
#include <boost/json.hpp>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <new>
#include <sstream>
#include <system_error>

#include "iaapi/version.hpp"
#include "worker/analysis/analysis.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::analysis {

namespace json = boost::json;

std::string_view to_string(InputType t) {
  switch (t) {
    case InputType::whole_slide: return "wholeSlide";
    case InputType::tagged_polygon: return "taggedPolygon";
    case InputType::multi_area: return "multiArea";
  }
  return "?";
}

std::optional<InputType> input_type_from_string(std::string_view s) {
  if (s == "wholeSlide") return InputType::whole_slide;
  if (s == "taggedPolygon") return InputType::tagged_polygon;
  if (s == "multiArea") return InputType::multi_area;
  return std::nullopt;
}

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

std::string_view kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "bool";
    case json::kind::int64:
    case json::kind::uint64: return "integer";
    case json::kind::double_: return "number";
    case json::kind::string: return "string";
    case json::kind::array: return "array";
    case json::kind::object: return "object";
  }
  return "?";
}

[[noreturn]] void bad_field(const std::string& field, const std::string& what) {
  throw std::invalid_argument("field " + field + ": " + what);
}

PolygonPx polygon_from_json(const json::value& v, const std::string& field, double width) {
  if (!v.is_object()) bad_field(field, "expected object, got " + std::string(kind_name(v)));
  const json::value* pts = v.as_object().if_contains("points");
  if (!pts) bad_field(field + ".points", "missing");
  if (!pts->is_array())
    bad_field(field + ".points", "expected array, got " + std::string(kind_name(*pts)));
  PolygonPx poly;
  std::size_t i = 0;
  for (const auto& p : pts->as_array()) {
    const std::string pf = field + ".points[" + std::to_string(i++) + "]";
    if (!p.is_object()) bad_field(pf, "expected object, got " + std::string(kind_name(p)));
    PointPx q;
    for (const char* axis : {"x", "y"}) {
      const json::value* c = p.as_object().if_contains(axis);
      if (!c) bad_field(pf + "." + axis, "missing");
      if (!c->is_number()) bad_field(pf + "." + axis, "expected number, got " + std::string(kind_name(*c)));
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
        bad_field("input.content", "expected object, got " + std::string(kind_name(content)));
      const json::value* poly = content.as_object().if_contains("polygon");
      if (!poly) bad_field("input.content.polygon", "missing");
      in.regions.push_back(polygon_from_json(*poly, "input.content.polygon", slide_width));
      break;
    }
    case InputType::multi_area: {
      if (!content.is_object())
        bad_field("input.content", "expected object, got " + std::string(kind_name(content)));
      const json::value* polys = content.as_object().if_contains("polygons");
      if (!polys) bad_field("input.content.polygons", "missing");
      if (!polys->is_array())
        bad_field("input.content.polygons", "expected array, got " + std::string(kind_name(*polys)));
      std::size_t i = 0;
      for (const auto& p : polys->as_array())
        in.regions.push_back(polygon_from_json(p, "input.content.polygons[" + std::to_string(i++) + "]", slide_width));
      if (in.regions.empty()) bad_field("input.content.polygons", "empty");
      break;
    }
  }
  return in;
}

// ---- parameters ---------------------------------------------------------

const ParamValue& Params::get(std::string_view name) const {
  for (const auto& [k, v] : values_)
    if (k == name) return v;
  throw std::out_of_range("parameter " + std::string(name) + ": not set");
}

std::int64_t Params::integer(std::string_view name) const {
  const auto& v = get(name);
  if (auto* i = std::get_if<std::int64_t>(&v)) return *i;
  if (auto* d = std::get_if<double>(&v)) return static_cast<std::int64_t>(*d);
  throw std::logic_error("parameter " + std::string(name) + ": not an integer");
}

double Params::number(std::string_view name) const {
  const auto& v = get(name);
  if (auto* d = std::get_if<double>(&v)) return *d;
  if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
  throw std::logic_error("parameter " + std::string(name) + ": not a number");
}

const std::string& Params::text(std::string_view name) const {
  const auto& v = get(name);
  if (auto* s = std::get_if<std::string>(&v)) return *s;
  throw std::logic_error("parameter " + std::string(name) + ": not text");
}

bool Params::flag(std::string_view name) const {
  const auto& v = get(name);
  if (auto* b = std::get_if<bool>(&v)) return *b;
  throw std::logic_error("parameter " + std::string(name) + ": not a flag");
}

void Params::set(std::string name, ParamValue v) {
  for (auto& [k, old] : values_)
    if (k == name) {
      old = std::move(v);
      return;
    }
  values_.emplace_back(std::move(name), std::move(v));
}

json::object Params::to_json() const {
  json::object o;
  for (const auto& [k, v] : values_)
    std::visit([&o, &k](const auto& x) { o[k] = x; }, v);
  return o;
}

namespace {

std::string format_number(double d) {
  std::ostringstream s;
  s << d;
  return s.str();
}

std::string describe(const json::value& v) {
  if (v.is_string()) return json::serialize(v);
  if (v.is_double()) return format_number(v.as_double());  // not Boost's "2.5E0"
  std::string s = json::serialize(v);
  return s.size() > 40 ? s.substr(0, 40) + "..." : s;
}

std::string known_names(const Descriptor& d) {
  std::string s;
  for (const auto& p : d.parameters) s += (s.empty() ? "" : ", ") + p.name;
  return s.empty() ? "none" : s;
}

const Parameter& parameter_of(const Descriptor& d, std::string_view name) {
  for (const auto& p : d.parameters)
    if (p.name == name) return p;
  throw ParameterError("parameter " + std::string(name) + ": unknown for analysis " + d.name +
                       " (known: " + known_names(d) + ")");
}

void check_range(const Parameter& p, double v, const std::string& shown) {
  if (p.min && v < *p.min)
    throw ParameterError("parameter " + p.name + ": " + shown + " is below " + format_number(*p.min));
  if (p.max && v > *p.max)
    throw ParameterError("parameter " + p.name + ": " + shown + " is above " + format_number(*p.max));
}

ParamValue from_json(const Parameter& p, const json::value& v) {
  const std::string shown = describe(v);
  auto wrong = [&](const char* expected) -> ParameterError {
    return ParameterError("parameter " + p.name + ": expected " + expected + ", got " +
                          std::string(kind_name(v)) + " " + shown);
  };
  switch (p.type) {
    case ParamType::integer: {
      std::int64_t i;
      if (v.is_int64())
        i = v.as_int64();
      else if (v.is_uint64() && v.as_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
        i = static_cast<std::int64_t>(v.as_uint64());
      else if (v.is_double() && std::floor(v.as_double()) == v.as_double() && std::abs(v.as_double()) < 9e15)
        i = static_cast<std::int64_t>(v.as_double());
      else
        throw wrong("an integer");
      check_range(p, static_cast<double>(i), std::to_string(i));
      return i;
    }
    case ParamType::number: {
      if (!v.is_number()) throw wrong("a number");
      const double d = v.to_number<double>();
      if (!std::isfinite(d)) throw ParameterError("parameter " + p.name + ": " + shown + " is not finite");
      check_range(p, d, shown);
      return d;
    }
    case ParamType::text:
      if (!v.is_string()) throw wrong("a string");
      return std::string(v.as_string());
    case ParamType::choice: {
      if (!v.is_string()) throw wrong("a string");
      std::string s(v.as_string());
      if (std::find(p.choices.begin(), p.choices.end(), s) == p.choices.end()) {
        std::string list;
        for (const auto& c : p.choices) list += (list.empty() ? "" : ", ") + c;
        throw ParameterError("parameter " + p.name + ": \"" + s + "\" is not one of " + list);
      }
      return s;
    }
    case ParamType::boolean:
      if (!v.is_bool()) throw wrong("true or false");
      return v.as_bool();
  }
  throw ParameterError("parameter " + p.name + ": unsupported type");
}

// A command-line string as the JSON value it stands for.
json::value from_text(const Parameter& p, const std::string& s) {
  switch (p.type) {
    case ParamType::integer:
    case ParamType::number: {
      double d = 0;
      const char* end = s.data() + s.size();
      auto [ptr, ec] = std::from_chars(s.data(), end, d);
      if (ec != std::errc() || ptr != end || s.empty())
        throw ParameterError("parameter " + p.name + ": \"" + s + "\" is not a number");
      if (p.type == ParamType::integer) {
        std::int64_t i = 0;
        auto [p2, ec2] = std::from_chars(s.data(), end, i);
        if (ec2 == std::errc() && p2 == end) return i;
        throw ParameterError("parameter " + p.name + ": \"" + s + "\" is not an integer");
      }
      return d;
    }
    case ParamType::boolean:
      if (s == "true" || s == "1" || s == "yes") return true;
      if (s == "false" || s == "0" || s == "no") return false;
      throw ParameterError("parameter " + p.name + ": \"" + s + "\" is not true or false");
    case ParamType::text:
    case ParamType::choice: return json::string(s);
  }
  return json::string(s);
}

Params defaults(const Descriptor& d) {
  Params out;
  for (const auto& p : d.parameters) out.set(p.name, p.default_value);
  return out;
}

}  // namespace

namespace {

void run_checks(const Descriptor& d, const Params& p, Checks checks) {
  if (d.check) d.check(p);
  if (checks == Checks::this_host && d.host_check) d.host_check(p);
}

}  // namespace

Params validate_params(const Descriptor& d, const json::object& given, Checks checks) {
  Params out = defaults(d);
  for (const auto& [k, v] : given) {
    const Parameter& p = parameter_of(d, k);
    out.set(p.name, from_json(p, v));
  }
  run_checks(d, out, checks);
  return out;
}

Params validate_params(const Descriptor& d,
                       const std::vector<std::pair<std::string, std::string>>& given) {
  Params out = defaults(d);
  for (const auto& [k, v] : given) {
    const Parameter& p = parameter_of(d, k);
    out.set(p.name, from_json(p, from_text(p, v)));
  }
  run_checks(d, out, Checks::this_host);
  return out;
}

std::optional<std::string> app_config_error(std::size_t index, std::string_view analysis,
                                            const json::object& params, Checks checks) {
  const std::string key = "apps[" + std::to_string(index) + "]";
  const Descriptor* d = find(analysis);
  if (!d) {
    std::string known;
    for (const Descriptor* a : all()) known += (known.empty() ? "" : ", ") + a->name;
    return key + ".analysis: unknown analysis \"" + std::string(analysis) + "\" (built in: " + known + ")";
  }
  try {
    (void)validate_params(*d, params, checks);
  } catch (const std::exception& e) {
    return key + ".params: " + e.what();
  }
  return std::nullopt;
}

// ---- running ------------------------------------------------------------

namespace {
std::string seconds_text(std::chrono::milliseconds ms) {
  if (ms.count() % 1000 == 0) return std::to_string(ms.count() / 1000);
  return format_number(static_cast<double>(ms.count()) / 1000.0);
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
    Outcome out = d.run(ctx);
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
