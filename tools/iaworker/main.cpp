// iaworker: takes jobs from the queue and runs analyses.
// Exit codes: 0 done, 1 failure, 2 bad command line.
#include <exception>
#include <iostream>

#include "iaapi/version.hpp"
#include "tools/command.hpp"

int main(int argc, char** argv) {
  using namespace iaserve::tools;
  CLI::App app{"iaworker: runs iaserve's analysis jobs"};
  app.set_version_flag("--version", std::string("iaworker ") + iaserve::kSoftwareVersion);
  app.require_subcommand(1);
  std::function<int()> chosen;
  add_commands(app, chosen);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    return chosen ? chosen() : 2;
  } catch (const std::exception& e) {
    std::cerr << "iaworker: " << e.what() << "\n";
    return 1;
  }
}
