// dpatsim: plays Sectra DPAT on loopback, for tests, demos, benchmarks and
// app authors without a PACS.
#include <exception>
#include <iostream>

#include "iaapi/log.hpp"
#include "iaapi/version.hpp"
#include "tools/dpatsim/command.hpp"

int main(int argc, char** argv) {
  using namespace iaserve::dpatsim;
  CLI::App app{"dpatsim: a Sectra DPAT simulator speaking the Image Analysis API (IA-API 1.10)"};
  app.footer(
      "Exit codes: 0 success, 1 error (I/O, peer unreachable), 2 bad command line,\n"
      "3 protocol error (a non-2xx answer or one that does not decode), 4 timeout (wait).");
  app.set_version_flag("--version", std::string("dpatsim ") + iaserve::kSoftwareVersion);
  app.require_subcommand(1);
  std::string log_level;
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (default: $IASERVE_LOG or info)");
  std::function<int()> chosen;
  iaserve::tools::add_commands(app, chosen);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  iaserve::log::setup(log_level);
  try {
    return chosen ? chosen() : kExitUsage;
  } catch (const ProtocolError& e) {
    std::cerr << "dpatsim: protocol error: " << e.what() << "\n";
    return kExitProtocol;
  } catch (const std::exception& e) {
    std::cerr << "dpatsim: " << e.what() << "\n";
    return kExitError;
  }
}
