// dpatsim results: what the simulator stores for a slide.
#include <boost/json.hpp>

#include <iostream>

#include "tools/dpatsim/command.hpp"
#include "tools/dpatsim/peer.hpp"

namespace iaserve::dpatsim {
namespace {

struct ResultsOptions {
  std::string sim, slide, app;
};

Registration results_command{
    "results",
    "Print the results stored on a slide: [{applicationId, result}], oldest first",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<ResultsOptions>();
      sub.add_option("--sim", o->sim, "The simulator's URL")->required();
      sub.add_option("--slide", o->slide, "Slide id (all slides when absent)");
      sub.add_option("--app", o->app, "Only this applicationId");
      return [o]() -> int {
        std::string url = origin_of(o->sim) + "/_sim/results";
        if (!o->slide.empty()) url += "?slide=" + o->slide;
        auto r = call("GET", url);
        if (r.status != 200) throw ProtocolError("GET " + url + ": " + std::to_string(r.status) + " " + r.body);
        auto v = parse_answer("GET " + url, r);
        if (!o->app.empty()) {
          boost::json::array kept;
          for (auto& e : v.as_array())
            if (e.as_object().at("applicationId").as_string() == o->app) kept.push_back(e);
          v = std::move(kept);
        }
        std::cout << pretty(v) << std::endl;
        return kExitOk;
      };
    }};

}  // namespace
}  // namespace iaserve::dpatsim
