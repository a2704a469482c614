#pragma once
// iaqueue's subcommands register themselves: each lives in its own file with
// a static Registration, so adding one never touches main.cpp.
#include <CLI/CLI.hpp>

#include <boost/json/value.hpp>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "queue/queue.hpp"

namespace iaserve::tools::iaqueue {

// Exit codes, also printed by --help.
enum Exit : int {
  kOk = 0,
  kError = 1,       // the queue could not be read or changed (message on stderr)
  kUsage = 2,       // bad command line
  kNotFound = 3,    // no job with that id (in a state the command accepts)
  kSelfTest = 4,    // selftest: flock does not exclude, or the folder is not writable
};

struct Globals {
  std::string dir;
  bool lease_only = false;
};

using Runner = std::function<int(const Globals&)>;
// setup adds the subcommand's options to `sub` and returns what runs it.
using CommandSetup = std::function<Runner(CLI::App& sub)>;

struct CommandInfo {
  std::string name, description;
  CommandSetup setup;
  bool hidden = false;  // for tests and benchmarks, not listed in --help
};

std::vector<CommandInfo>& commands();

struct Registration {
  Registration(std::string name, std::string description, CommandSetup setup, bool hidden = false) {
    commands().push_back({std::move(name), std::move(description), std::move(setup), hidden});
  }
};

queue::Queue open_queue(const Globals& g, queue::Options o = {});
// A job as JSON for --json output; payload strings under token-like keys redacted.
boost::json::value to_json(const queue::Job& job, bool with_payload);
std::string age_text(std::chrono::milliseconds age);
// "7d", "12h", "30m", "45s" or plain seconds.
std::chrono::seconds parse_age(const std::string& text);

}  // namespace iaserve::tools::iaqueue
