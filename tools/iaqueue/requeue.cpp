// iaqueue requeue ID: a done, failed or cancelled job back to pending, attempts 0.
#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

const Registration reg("requeue", "a done, failed or cancelled job back to pending", [](CLI::App& sub) {
  auto id = std::make_shared<std::string>();
  sub.add_option("ID", *id, "job id")->required();
  return Runner([id](const Globals& g) {
    auto q = open_queue(g);
    if (!q.requeue(*id)) {
      std::cerr << "iaqueue: no done, failed or cancelled job " << *id << "\n";
      return int(kNotFound);
    }
    std::cout << "requeued " << *id << "\n";
    return int(kOk);
  });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
