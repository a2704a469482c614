// iaqueue stats [--json]: counts per state, oldest pending age, active jobs.
#include <boost/json.hpp>

#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

struct StatsOptions {
  bool json = false;
};

int run(const Globals& g, const StatsOptions& o) {
  auto q = open_queue(g);
  auto s = q.stats();
  if (o.json) {
    boost::json::array active;
    for (auto& j : s.active_jobs) active.push_back(to_json(j, false));
    boost::json::object out{{"pending", s.pending}, {"active", s.active}, {"done", s.done},
                            {"failed", s.failed}, {"cancelled", s.cancelled}};
    out["oldest_pending_age_ms"] =
        s.oldest_pending_age ? boost::json::value(s.oldest_pending_age->count()) : nullptr;
    out["active_jobs"] = std::move(active);
    std::cout << boost::json::serialize(out) << "\n";
    return kOk;
  }
  std::cout << "pending   " << s.pending;
  if (s.oldest_pending_age) std::cout << " (oldest " << age_text(*s.oldest_pending_age) << ")";
  std::cout << "\nactive    " << s.active << "\ndone      " << s.done << "\nfailed    " << s.failed
            << "\ncancelled " << s.cancelled << "\n";
  for (auto& j : s.active_jobs) {
    std::cout << "  " << j.id << "  " << j.app_id << "  " << j.slide_key;
    if (j.lease)
      std::cout << "  " << j.lease->host << " pid " << j.lease->pid << " lease "
                << age_text(std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now() - j.lease->time));
    if (j.cancel_requested) std::cout << "  cancel requested";
    std::cout << "\n";
  }
  return kOk;
}

const Registration reg("stats", "counts per state, oldest pending age, active jobs", [](CLI::App& sub) {
  auto o = std::make_shared<StatsOptions>();
  sub.add_flag("--json", o->json, "one JSON object");
  return Runner([o](const Globals& g) { return run(g, *o); });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
