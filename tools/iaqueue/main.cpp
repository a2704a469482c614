// iaqueue: inspects and repairs an iaserve disk queue.
#include <exception>
#include <iostream>

#include "iaapi/log.hpp"
#include "iaapi/version.hpp"
#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {
std::vector<CommandInfo>& commands() {
  static std::vector<CommandInfo> list;
  return list;
}
}  // namespace iaserve::tools::iaqueue

int main(int argc, char** argv) {
  using namespace iaserve::tools::iaqueue;
  CLI::App app{"iaqueue: inspects and repairs an iaserve disk queue"};
  app.footer(
      "Exit codes: 0 done, 1 queue error (message on stderr), 2 bad command line,\n"
      "            3 no such job, 4 selftest failed (flock does not exclude or not writable)");
  app.set_version_flag("--version", std::string("iaqueue ") + iaserve::kSoftwareVersion);
  Globals g;
  app.add_option("--dir", g.dir, "queue folder")->required();
  app.add_flag("--lease-only", g.lease_only,
               "accept a folder where flock does not exclude (nolock/nobrl mounts)");
  app.require_subcommand(1);
  Runner chosen;
  for (auto& c : commands()) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    if (c.hidden) sub->group("");
    auto runner = c.setup(*sub);
    sub->callback([&chosen, runner] { chosen = runner; });
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kOk : kUsage;
  }
  iaserve::log::setup({}, false);
  try {
    return chosen ? chosen(g) : kUsage;
  } catch (const std::exception& e) {
    std::cerr << "iaqueue: " << e.what() << "\n";
    return kError;
  }
}
