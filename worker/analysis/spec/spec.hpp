#pragma once
// What the server needs of the analyses without linking the code that runs
// them (OpenSlide and the rest): input types, parameters, their validation
// and each built-in analysis's spec. analysis.hpp builds on it.
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace iaserve::analysis {

// IA-API invocation input types (inputTemplate.type).
enum class InputType { whole_slide, tagged_polygon, multi_area };
// "wholeSlide", "taggedPolygon", "multiArea"
std::string_view to_string(InputType t);
std::optional<InputType> input_type_from_string(std::string_view s);

// "string", "integer", "array", ... for error texts.
std::string_view json_kind_name(const boost::json::value& v);

// ---- parameters ---------------------------------------------------------

enum class ParamType { integer, number, text, choice, boolean };
using ParamValue = std::variant<bool, std::int64_t, double, std::string>;

struct Parameter {
  std::string name;
  ParamType type = ParamType::number;
  ParamValue default_value;
  std::optional<double> min, max;    // integer, number
  std::vector<std::string> choices;  // choice
  std::string doc;
};

// A parameter value that is missing, of the wrong type or out of range:
// "parameter min_region_um2: -3 is below 0".
class ParameterError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Validated parameters: every parameter of the descriptor has a value.
class Params {
 public:
  std::int64_t integer(std::string_view name) const;
  double number(std::string_view name) const;  // integer parameters convert
  const std::string& text(std::string_view name) const;  // text and choice
  bool flag(std::string_view name) const;
  const ParamValue& get(std::string_view name) const;  // throws std::out_of_range
  void set(std::string name, ParamValue v);
  // The values as JSON, in the descriptor's order.
  boost::json::object to_json() const;
  const std::vector<std::pair<std::string, ParamValue>>& values() const { return values_; }

 private:
  std::vector<std::pair<std::string, ParamValue>> values_;
};

// What is known of an analysis without running it: enough to check an app's
// configuration (the server does, without the code that runs analyses).
struct Spec {
  std::string name;
  std::string description;
  std::vector<InputType> inputs;
  std::vector<Parameter> parameters;
  std::string version = "1";
  // Optional: checks the validated parameters together (a required text, an
  // argument line that must parse); throws ParameterError naming the parameter.
  std::function<void(const Params&)> check;
  // Optional: what only the host that runs the analysis can check (a program
  // that must exist there). Workers run it; the server, which may run on a
  // host without the program, does not.
  std::function<void(const Params&)> host_check;
};

// The built-in analyses' specs, in the order of analysis::all() (a test
// holds the two lists together); nullptr when no analysis has that name.
std::span<const Spec* const> specs();
const Spec* find_spec(std::string_view name);
const Spec& tissue_spec();
const Spec& exec_spec();

// Which of a descriptor's checks validate_params runs: all of them (a
// worker, which runs the analysis here), or those that hold on any host
// (the server, which only queues jobs for workers elsewhere).
enum class Checks { this_host, any_host };

// Validates given parameters (JSON values, or strings from a command line
// "k=v") against the descriptor; unset parameters take their defaults.
// Throws ParameterError naming the parameter and the value.
Params validate_params(const Spec& d, const boost::json::object& given, Checks checks = Checks::this_host);
Params validate_params(const Spec& d,
                       const std::vector<std::pair<std::string, std::string>>& given);

// A configured app's (apps[index]) validated parameters, defaults included;
// its first fault throws std::invalid_argument naming the key
// ("apps[2].analysis: unknown analysis \"x\" (built in: tissue, exec)",
// "apps[2].params.min_area: unknown for analysis tissue ..."). What iaserve
// and iaworker check at start-up; app_config_error gives the fault as text.
// name_key is where the app's configuration wrote the name: "analysis", or
// "analysis.name" for the table form.
Params app_params(std::size_t index, std::string_view analysis, const boost::json::object& params, Checks checks,
                  std::string_view name_key = "analysis");
std::optional<std::string> app_config_error(std::size_t index, std::string_view analysis,
                                            const boost::json::object& params, Checks checks,
                                            std::string_view name_key = "analysis");

namespace exec {
// `args` as a shell would split it, without running one: blanks separate
// words; '...' keeps everything inside; "..." keeps everything but \" and
// \\; a backslash outside quotes keeps the next character. Nothing is
// expanded ($, ~, *, `). An unclosed quote or a trailing backslash is a
// ParameterError naming the parameter.
std::vector<std::string> split_args(const std::string& text);
// The program as execvp would find it: a path, or a name on PATH.
std::optional<std::string> resolve(const std::string& command);
// The guard the worker runs each program under (tools/iaexec-guard): beside
// the running program (iaworker, or a test of this build), as installed and
// built; nullopt when it is not there or not executable.
std::optional<std::string> guard_path();
}  // namespace exec

}  // namespace iaserve::analysis
