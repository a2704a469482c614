// iaqueue cancel ID | --slide KEY [--app APP]: pending jobs to cancelled/,
// running ones get a cancel mark their worker sees at its next step.
#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

struct CancelOptions {
  std::string id, slide, app;
};

int run(const Globals& g, const CancelOptions& o) {
  auto q = open_queue(g);
  if (!o.slide.empty()) {
    auto n = o.app.empty() ? q.cancel_slide_any_app(o.slide) : q.cancel_slide(o.app, o.slide);
    std::cout << "cancelled " << n << " job(s) of slide " << o.slide << "\n";
    return n ? kOk : kNotFound;
  }
  if (!q.cancel(o.id)) {
    std::cerr << "iaqueue: no pending or active job " << o.id << "\n";
    return kNotFound;
  }
  std::cout << "cancelled " << o.id << "\n";
  return kOk;
}

const Registration reg("cancel", "cancels a job, or every job of a slide", [](CLI::App& sub) {
  auto o = std::make_shared<CancelOptions>();
  auto* id = sub.add_option("ID", o->id, "job id");
  auto* slide = sub.add_option("--slide", o->slide, "slide key");
  sub.add_option("--app", o->app, "only this application id (with --slide)")->needs(slide);
  id->excludes(slide);
  sub.require_option(1, 2);
  return Runner([o](const Globals& g) { return run(g, *o); });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
