// iaqueue show ID: one job as JSON (token-like payload fields redacted).
#include <boost/json.hpp>

#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

const Registration reg("show", "one job as JSON, tokens redacted", [](CLI::App& sub) {
  auto id = std::make_shared<std::string>();
  sub.add_option("ID", *id, "job id")->required();
  return Runner([id](const Globals& g) {
    auto q = open_queue(g);
    auto job = q.find(*id);
    if (!job) {
      std::cerr << "iaqueue: no job " << *id << "\n";
      return int(kNotFound);
    }
    std::cout << boost::json::serialize(to_json(*job, true)) << "\n";
    return int(kOk);
  });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
