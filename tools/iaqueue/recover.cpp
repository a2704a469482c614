// iaqueue recover: the orphan sweep, now.
#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

const Registration reg("recover", "returns jobs of dead workers (lock free, lease stale) and replays journals of dead processes now", [](CLI::App& sub) {
  auto timeout = std::make_shared<long>(60000);
  auto max_attempts = std::make_shared<int>(3);
  sub.add_option("--lease-timeout-ms", *timeout,
                 "a lease older than this is stale: the configuration's queue.lease_timeout (default 60s), "
                 "never less")
      ->capture_default_str();
  sub.add_option("--max-attempts", *max_attempts, "past this a job goes to failed/")->capture_default_str();
  return Runner([timeout, max_attempts](const Globals& g) {
    queue::Options o;
    o.lease_timeout = std::chrono::milliseconds(*timeout);
    o.max_attempts = *max_attempts;
    auto q = open_queue(g, o);
    auto r = q.recover_orphans();
    std::cout << "requeued " << r.requeued << ", failed " << r.failed << ", cancelled "
              << r.cancelled << ", cleaned " << r.cleaned << ", written again from journals " << r.replayed
              << "\n";
    return int(kOk);
  });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
