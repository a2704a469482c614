// iaqueue purge --older-than AGE: removes finished jobs (done, failed, cancelled).
#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

const Registration reg("purge", "removes done, failed and cancelled jobs older than an age", [](CLI::App& sub) {
  auto age = std::make_shared<std::string>();
  sub.add_option("--older-than", *age, "age: 7d, 12h, 30m, 45s")
      ->required()
      ->check([](const std::string& text) {
        try {
          parse_age(text);
          return std::string();
        } catch (const CLI::ValidationError& e) {
          return std::string(e.what());
        }
      });
  return Runner([age](const Globals& g) {
    auto older = parse_age(*age);
    auto q = open_queue(g);
    std::cout << "removed " << q.purge(older) << " job(s)\n";
    return int(kOk);
  });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
