// iaworker analyse SLIDE_FILE: one analysis on a local slide file, no server,
// no queue. For app authors: shows what the worker would put on the slide.
// Exit codes: 0 done, 1 the analysis (or the slide) failed, 2 bad command line
// or parameters.
#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "tools/command.hpp"
#include "worker/analysis/analysis.hpp"
#include "worker/analysis/overlay.hpp"
#include "worker/slide/image_io.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::tools {

namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

struct AnalyseOptions {
  std::string slide_file;
  std::string analysis = "tissue";
  std::vector<std::string> params;
  std::string out, overlay, region_json;
  double time_limit_s = 0;
  int overlay_size = 1024;
  bool list = false;
};

std::string read_text(const fs::path& p, std::uintmax_t limit) {
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error(p.string() + ": cannot open");
  std::error_code ec;
  const auto size = fs::file_size(p, ec);
  if (!ec && size > limit) throw std::runtime_error(p.string() + ": larger than " + std::to_string(limit) + " bytes");
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string value_text(const analysis::ParamValue& v) {
  return std::visit(
      [](const auto& x) -> std::string {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>)
          return x;
        else if constexpr (std::is_same_v<T, bool>)
          return x ? "true" : "false";
        else {
          std::ostringstream s;
          s << x;
          return s.str();
        }
      },
      v);
}

void list_analyses() {
  for (const auto* d : analysis::all()) {
    std::cout << d->name << ": " << d->description << "\n  inputs:";
    for (auto t : d->inputs) std::cout << " " << analysis::to_string(t);
    std::cout << "\n";
    for (const auto& p : d->parameters) {
      std::cout << "  --param " << p.name << "=" << value_text(p.default_value);
      if (!p.choices.empty()) {
        std::cout << " (";
        for (std::size_t i = 0; i < p.choices.size(); ++i) std::cout << (i ? "|" : "") << p.choices[i];
        std::cout << ")";
      }
      if (p.min || p.max)
        std::cout << " [" << (p.min ? value_text(*p.min) : "") << ".." << (p.max ? value_text(*p.max) : "") << "]";
      std::cout << "  " << p.doc << "\n";
    }
  }
}

int run_analyse(const AnalyseOptions& o) {
  if (o.list) {
    list_analyses();
    return 0;
  }
  if (o.slide_file.empty()) {
    std::cerr << "iaworker analyse: SLIDE_FILE is required\n";
    return 2;
  }
  const analysis::Descriptor* d = analysis::find(o.analysis);
  if (!d) {
    std::cerr << "iaworker analyse: --analysis: unknown analysis \"" << o.analysis << "\" (see --list)\n";
    return 2;
  }
  std::vector<std::pair<std::string, std::string>> kv;
  for (const auto& p : o.params) {
    const auto eq = p.find('=');
    if (eq == std::string::npos || eq == 0) {
      std::cerr << "iaworker analyse: --param: \"" << p << "\" is not NAME=VALUE\n";
      return 2;
    }
    kv.emplace_back(p.substr(0, eq), p.substr(eq + 1));
  }
  analysis::Params params;
  try {
    params = analysis::validate_params(*d, kv);
  } catch (const analysis::ParameterError& e) {
    std::cerr << "iaworker analyse: " << e.what() << "\n";
    return 2;
  }

  std::optional<slide::Slide> s;
  try {
    s.emplace(slide::Slide::open(o.slide_file));
  } catch (const std::exception& e) {
    std::cerr << "iaworker analyse: " << e.what() << "\n";
    return 1;
  }

  analysis::Input input;
  if (!o.region_json.empty()) {
    try {
      json::parse_options opts;
      opts.max_depth = 64;
      const json::value v = json::parse(read_text(o.region_json, 64 << 20), {}, opts);
      // An invocation, its input, or just {type, content}.
      const json::value* in = &v;
      if (v.is_object() && v.as_object().contains("input")) in = &v.as_object().at("input");
      if (!in->is_object() || !in->as_object().contains("type") || !in->as_object().at("type").is_string())
        throw std::invalid_argument("field input.type: missing");
      const json::object& io = in->as_object();
      const json::value* content = io.if_contains("content");
      input = analysis::input_from_json(std::string(io.at("type").as_string()), content ? *content : json::value(),
                                        static_cast<double>(s->width()));
    } catch (const std::exception& e) {
      std::cerr << "iaworker analyse: --region-json " << o.region_json << ": " << e.what() << "\n";
      return 2;
    }
  }

  analysis::Hooks hooks;
  if (o.time_limit_s > 0)
    hooks.time_limit = std::chrono::milliseconds(static_cast<std::int64_t>(o.time_limit_s * 1000));
  const auto report = analysis::run_analysis(*d, *s, input, params, hooks);
  if (report.status != analysis::RunStatus::ok) {
    std::cerr << "iaworker analyse: " << report.error << "\n";
    return 1;
  }
  const analysis::Outcome& out = *report.outcome;
  std::cout << out.display_result << "\n";
  for (const auto& [k, v] : out.display_properties) {
    std::cout << "  " << k << ": ";
    std::visit([](const auto& x) { std::cout << x; }, v);
    std::cout << "\n";
  }
  std::cout << std::fixed << std::setprecision(3) << "  (" << report.seconds << " s)\n";
  try {
    if (!o.out.empty()) {
      std::ofstream f(o.out, std::ios::binary | std::ios::trunc);
      f << json::serialize(analysis::result_json(out, fs::path(o.slide_file).filename().string())) << "\n";
      if (!f) throw std::runtime_error(o.out + ": write failed");
    }
    if (!o.overlay.empty())
      slide::write_png(o.overlay, analysis::render_overlay(*s, out, input, o.overlay_size));
  } catch (const std::exception& e) {
    std::cerr << "iaworker analyse: " << e.what() << "\n";
    return 1;
  }
  return 0;
}

const Registration registration{
    "analyse", "Run one analysis on a local slide file, without a server",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<AnalyseOptions>();
      sub.add_option("SLIDE_FILE", o->slide_file, "the slide (any format OpenSlide reads)");
      sub.add_option("--analysis", o->analysis, "analysis name (see --list)")->capture_default_str();
      sub.add_option("--param", o->params, "a parameter NAME=VALUE (repeatable)");
      sub.add_option("--out", o->out, "write the IA-API Result JSON here");
      sub.add_option("--overlay", o->overlay, "write a PNG thumbnail with the result drawn on it");
      sub.add_option("--overlay-size", o->overlay_size, "longest side of the overlay, px")
          ->check(CLI::Range(64, 8192))
          ->capture_default_str();
      sub.add_option("--region-json", o->region_json,
                     "an IA-API input {type, content} (or an invocation) restricting the analysis");
      sub.add_option("--time-limit", o->time_limit_s, "seconds before the analysis is stopped (0: none)")
          ->check(CLI::NonNegativeNumber);
      sub.add_flag("--list", o->list, "list the analyses and their parameters");
      sub.footer("Exit codes: 0 done, 1 analysis or slide failed, 2 bad command line or parameters.");
      return [o] { return run_analyse(*o); };
    }};

}  // namespace

}  // namespace iaserve::tools
