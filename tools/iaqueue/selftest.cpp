// iaqueue selftest: does flock exclude here, is the folder writable, which wake-up.
#include <iostream>

#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
namespace {

const Registration reg("selftest", "checks flock exclusion and writability of the folder", [](CLI::App&) {
  return Runner([](const Globals& g) {
    auto t = queue::Queue::selftest(g.dir);
    std::cout << t.message << "\n"
              << "filesystem " << t.filesystem << (t.local ? " (local: inotify)" : " (network: polling)")
              << "\nwritable " << (t.writable ? "yes" : "no") << "\n";
    if (!t.flock_excludes && !g.lease_only) return int(kSelfTest);
    return t.writable ? int(kOk) : int(kSelfTest);
  });
});

}  // namespace
}  // namespace iaserve::tools::iaqueue
