#pragma once
// iaworker's subcommands register themselves: each lives in its own file
// with a static Registration, so adding one never touches main.cpp.
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

std::vector<CommandInfo>& commands();

struct Registration {
  Registration(std::string name, std::string description, CommandSetup setup) {
    commands().push_back({std::move(name), std::move(description), std::move(setup)});
  }
};

}  // namespace iaserve::tools
