// Parameters and their validation, and the checks of an app's analysis
// setting: what the server shares with the workers (spec.hpp).
#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <sstream>
#include <system_error>

#include "worker/analysis/spec/spec.hpp"

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

std::string_view json_kind_name(const json::value& v) {
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

std::string known_names(const Spec& d) {
  std::string s;
  for (const auto& p : d.parameters) s += (s.empty() ? "" : ", ") + p.name;
  return s.empty() ? "none" : s;
}

const Parameter& parameter_of(const Spec& d, std::string_view name) {
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
                          std::string(json_kind_name(v)) + " " + shown);
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

Params defaults(const Spec& d) {
  Params out;
  for (const auto& p : d.parameters) out.set(p.name, p.default_value);
  return out;
}

}  // namespace

namespace {

void run_checks(const Spec& d, const Params& p, Checks checks) {
  if (d.check) d.check(p);
  if (checks == Checks::this_host && d.host_check) d.host_check(p);
}

}  // namespace

Params validate_params(const Spec& d, const json::object& given, Checks checks) {
  Params out = defaults(d);
  for (const auto& [k, v] : given) {
    const Parameter& p = parameter_of(d, k);
    out.set(p.name, from_json(p, v));
  }
  run_checks(d, out, checks);
  return out;
}

Params validate_params(const Spec& d,
                       const std::vector<std::pair<std::string, std::string>>& given) {
  Params out = defaults(d);
  for (const auto& [k, v] : given) {
    const Parameter& p = parameter_of(d, k);
    out.set(p.name, from_json(p, from_text(p, v)));
  }
  run_checks(d, out, Checks::this_host);
  return out;
}

Params app_params(std::size_t index, std::string_view analysis, const json::object& params, Checks checks,
                  std::string_view name_key) {
  const std::string key = "apps[" + std::to_string(index) + "]";
  const Spec* d = find_spec(analysis);
  if (!d) {
    std::string known;
    for (const Spec* a : specs()) known += (known.empty() ? "" : ", ") + a->name;
    throw std::invalid_argument(key + "." + std::string(name_key) + ": unknown analysis \"" + std::string(analysis) +
                                "\" (built in: " + known + ")");
  }
  try {
    return validate_params(*d, params, checks);
  } catch (const std::exception& e) {
    // "parameter min_area: ..." as the configuration's key: "apps[2].params.min_area: ...".
    const std::string_view what = e.what(), prefix = "parameter ";
    if (what.substr(0, prefix.size()) == prefix && what.find(':') != std::string_view::npos)
      throw std::invalid_argument(key + ".params." + std::string(what.substr(prefix.size())));
    throw std::invalid_argument(key + ".params: " + std::string(what));
  }
}

std::optional<std::string> app_config_error(std::size_t index, std::string_view analysis,
                                            const json::object& params, Checks checks, std::string_view name_key) {
  try {
    (void)app_params(index, analysis, params, checks, name_key);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return std::nullopt;
}

std::span<const Spec* const> specs() {
  static const Spec* const list[] = {&tissue_spec(), &exec_spec()};
  return list;
}

const Spec* find_spec(std::string_view name) {
  for (const Spec* s : specs())
    if (s->name == name) return s;
  return nullptr;
}

}  // namespace iaserve::analysis
