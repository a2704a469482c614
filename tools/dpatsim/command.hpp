#pragma once
// dpatsim's subcommands register themselves: one file per subcommand, each
// with a static Registration, so adding one never touches main.cpp.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace iaserve::dpatsim {

// Exit codes shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;     // could not run (I/O, unreachable peer, bad slide)
inline constexpr int kExitUsage = 2;     // bad command line
inline constexpr int kExitProtocol = 3;  // the peer answered, but not as IA-API says
inline constexpr int kExitTimeout = 4;   // wait: the deadline passed

// setup adds the subcommand's options to `sub` and returns what runs it.
using CommandSetup = std::function<std::function<int()>(CLI::App& sub)>;

struct CommandInfo {
  std::string name, description;
  CommandSetup setup;
};

std::vector<CommandInfo>& commands();

struct Registration {
  Registration(std::string name, std::string description, CommandSetup setup) {
    commands().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

// A protocol error: the peer answered something IA-API does not allow.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace iaserve::dpatsim
