#pragma once
// The analysis engine: a table of analyses, each one descriptor in its own
// file (name, accepted inputs, parameters, run). The worker and
// `iaworker analyse` find an analysis by name and call run_analysis(), which
// validates the parameters, passes progress, cancel and a wall-time limit to
// the analysis and turns whatever it throws into an error message.
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include "worker/analysis/spec/spec.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace iaserve::slide {
class Slide;
}

namespace iaserve::analysis {

// Level-0 pixel coordinates.
struct PointPx {
  double x = 0, y = 0;
};
using PolygonPx = std::vector<PointPx>;

// What the invocation asked to analyse: the whole slide, or the drawn
// polygons (in level-0 px) of a taggedPolygon / multiArea input.
struct Input {
  InputType type = InputType::whole_slide;
  std::vector<PolygonPx> regions;
  // A pressed patchCollection button (a modify): its id and the stored
  // result's content. An analysis with on_action gets it there, exec in its
  // job description; any other runs as for a create.
  struct Action {
    std::string id;
    boost::json::value content;
  };
  std::optional<Action> action = std::nullopt;
};

// Converts an IA-API invocation input (`type` and `content`, points in
// image-width units) to an Input in level-0 px of a slide `slide_width` wide.
// Throws std::invalid_argument naming the field ("input.content.polygon.points:
// expected array, got string") on malformed content.
Input input_from_json(std::string_view type, const boost::json::value& content,
                      double slide_width);

// ---- what an analysis gives back ---------------------------------------

using PropertyValue = std::variant<std::string, std::int64_t, double>;

// One shape of the overlay in level-0 px: its rings (the first is the outer
// boundary, the others holes) and its label at `label_at`.
struct OverlayShape {
  std::vector<PolygonPx> rings;
  std::string label;
  PointPx label_at;
};

struct Outcome {
  // data.result of the IA-API Result: "primitive" or "patchCollection" and
  // its content (coordinates in image-width units).
  std::string result_type = "primitive";
  boost::json::value content;
  std::string display_result;
  std::vector<std::pair<std::string, PropertyValue>> display_properties;
  std::vector<OverlayShape> overlay;
};

// displayProperties as the IA-API object, in order.
boost::json::object display_properties_json(const Outcome& o);
// A whole IA-API Result (slideId, displayResult, displayProperties,
// applicationVersion, data {context, result {type, content}}).
boost::json::object result_json(const Outcome& o, std::string_view slide_id,
                                const boost::json::object& context = {});

// ---- running ------------------------------------------------------------

// A failure of this host, not of the slide or the analysis (no memory, no
// processes, a program killed from outside): the job is retried.
class HostError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// An errno that says this host ran short (memory, processes, descriptors,
// disk space, I/O) or a program file was being written: worth another try.
bool host_errno(int e);

class Cancelled : public std::runtime_error {
 public:
  Cancelled() : std::runtime_error("analysis cancelled") {}
};
class TimedOut : public std::runtime_error {
 public:
  explicit TimedOut(std::chrono::milliseconds limit);
};

// What the caller plugs in: progress reports, a cancel flag, a time limit,
// where scratch files go.
struct Hooks {
  std::function<void(int percent)> progress;  // 0..100, never decreasing
  std::function<bool()> cancelled;
  std::chrono::milliseconds time_limit{0};  // 0: none
  // An existing folder for an analysis's scratch folders (exec): the
  // worker's slide folder, beside the slide, so a run's files stay in the
  // data folder and on its disk. Empty: the temporary folder (TMPDIR).
  std::filesystem::path scratch_dir;
};

// What an analysis sees while it runs.
class Context {
 public:
  Context(const slide::Slide& slide, Input input, Params params, Hooks hooks);

  const slide::Slide& slide() const { return slide_; }
  const Input& input() const { return input_; }
  // The drawn regions in level-0 px; empty for a whole-slide input.
  const std::vector<PolygonPx>& regions() const { return input_.regions; }
  const Params& params() const { return params_; }

  // Reports progress (clamped to 0..100, never decreasing) and checks for a
  // cancel or an exceeded time limit (throws Cancelled / TimedOut).
  void progress(int percent);
  // The check alone, for loops between progress reports.
  void check() const;
  bool cancelled() const;
  std::chrono::steady_clock::duration elapsed() const;
  const std::filesystem::path& scratch_dir() const { return hooks_.scratch_dir; }

 private:
  const slide::Slide& slide_;
  Input input_;
  Params params_;
  Hooks hooks_;
  int last_progress_ = -1;
  std::chrono::steady_clock::time_point start_;
};

// A patchCollection action button pressed: a modify invocation brings the
// stored result content with the button's state = 1.
using ActionHandler = std::function<Outcome(Context&, const boost::json::value& stored_content,
                                            std::string_view action_id)>;

// An analysis: its spec (name, inputs, parameters, checks: spec/spec.hpp)
// and what runs it.
struct Descriptor : Spec {
  std::function<Outcome(Context&)> run;
  ActionHandler on_action;  // optional
};

// The built-in analyses, in order (registry.cpp).
std::span<const Descriptor* const> all();
// nullptr when no analysis has that name.
const Descriptor* find(std::string_view name);

enum class RunStatus { ok, failed, cancelled, timed_out };
std::string_view to_string(RunStatus s);

struct RunReport {
  RunStatus status = RunStatus::failed;
  std::optional<Outcome> outcome;  // when ok
  std::string error;               // otherwise: the message for the slide
  // A failure of the host rather than of the slide or the analysis (memory,
  // disk space, file descriptors, processes, I/O): another run may succeed.
  bool transient = false;
  double seconds = 0;
};

// Runs one analysis; never throws. An unknown analysis, an input type it
// does not accept or a bad parameter fail with a message naming it.
RunReport run_analysis(std::string_view name, const slide::Slide& slide, const Input& input,
                       const boost::json::object& params, const Hooks& hooks = {});
RunReport run_analysis(const Descriptor& d, const slide::Slide& slide, const Input& input,
                       const Params& params, const Hooks& hooks = {});

// The action ids whose state is 1 in a patchCollection content.
std::vector<std::string> pressed_actions(const boost::json::value& content);

}  // namespace iaserve::analysis
