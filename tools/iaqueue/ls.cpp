// iaqueue ls [--state S] [--json]: the jobs of one state (default pending), in claim order.
#include <boost/json.hpp>

#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

struct LsOptions {
  std::string state = "pending";
  bool json = false;
};

int run(const Globals& g, const LsOptions& o) {
  auto state = queue::state_from_string(o.state);
  auto q = open_queue(g);
  auto jobs = q.list(*state);
  if (o.json) {
    boost::json::array out;
    for (auto& j : jobs) out.push_back(to_json(j, false));
    std::cout << boost::json::serialize(out) << "\n";
    return kOk;
  }
  for (auto& j : jobs) {
    std::cout << j.id << "  " << j.app_id << "  " << j.slide_key << "  attempts " << j.attempts;
    if (!j.last_error.empty()) std::cout << "  " << j.last_error;
    std::cout << "\n";
  }
  return kOk;
}

const Registration reg("ls", "lists the jobs of one state", [](CLI::App& sub) {
  auto o = std::make_shared<LsOptions>();
  sub.add_option("--state", o->state, "pending, active, done, failed or cancelled")
      ->check(CLI::IsMember({"pending", "active", "done", "failed", "cancelled"}));
  sub.add_flag("--json", o->json, "one JSON array");
  return Runner([o](const Globals& g) { return run(g, *o); });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
