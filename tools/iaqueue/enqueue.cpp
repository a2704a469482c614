// iaqueue enqueue (hidden): adds jobs by hand or from scripts; prints their ids.
#include <boost/json.hpp>

#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

struct EnqueueOptions {
  std::string slide, app = "test", payload = "{}";
  int priority = 0, count = 1;
};

int run(const Globals& g, const EnqueueOptions& o) {
  std::error_code ec;
  auto p = boost::json::parse(o.payload, ec);
  if (ec || !p.is_object()) {
    std::cerr << "iaqueue: --payload: not a JSON object\n";
    return kUsage;
  }
  queue::Options qo;
  qo.lease_only = g.lease_only;
  queue::Queue q(g.dir, qo);
  for (int i = 0; i < o.count; ++i) {
    queue::JobSpec s;
    s.slide_key = o.count == 1 ? o.slide : o.slide + "-" + std::to_string(i);
    s.app_id = o.app;
    s.priority = o.priority;
    s.payload = p.get_object();
    std::cout << q.enqueue(s) << "\n";
  }
  return kOk;
}

const Registration reg(
    "enqueue", "adds jobs (slide KEY, or KEY-0..KEY-N-1 with --count)",
    [](CLI::App& sub) {
      auto o = std::make_shared<EnqueueOptions>();
      sub.add_option("--slide", o->slide, "slide key")->required();
      sub.add_option("--app", o->app, "application id");
      sub.add_option("--priority", o->priority);
      sub.add_option("--count", o->count)->check(CLI::Range(1, 1000000));
      sub.add_option("--payload", o->payload, "JSON object");
      return Runner([o](const Globals& g) { return run(g, *o); });
    },
    true);

}  // namespace
}  // namespace iaserve::tools::iaqueue
