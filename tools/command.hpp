#pragma once
// Subcommands that register themselves: each lives in its own file with a
// static Registration, so adding one never touches a program's main.cpp.
// Shared by the programs with subcommands (iaworker, dpatsim).
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

namespace iaserve::tools {

// setup adds the subcommand's options to `sub` and returns what runs it
// (its exit code) when it was chosen.
using CommandSetup = std::function<std::function<int()>(CLI::App& sub)>;

struct CommandInfo {
  std::string name, description;
  CommandSetup setup;
};

// The registered subcommands, in registration order. A function-local static,
// so Registrations in any translation unit may run before main.
inline std::vector<CommandInfo>& commands() {
  static std::vector<CommandInfo> list;
  return list;
}

struct Registration {
  Registration(std::string name, std::string description, CommandSetup setup) {
    commands().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

// Adds every registered subcommand to `app`; after parsing, `chosen` runs
// the one the command line named.
inline void add_commands(CLI::App& app, std::function<int()>& chosen) {
  for (auto& c : commands()) {
    CLI::App* sub = app.add_subcommand(c.name, c.description);
    auto runner = c.setup(*sub);
    sub->callback([&chosen, runner] { chosen = runner; });
  }
}

}  // namespace iaserve::tools
