#pragma once
// dpatsim's subcommands (one file each, registered through tools/command.hpp)
// and what they share: exit codes, the protocol error.
#include <stdexcept>

#include "tools/command.hpp"

namespace iaserve::dpatsim {

// Exit codes shared by every subcommand.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;     // could not run (I/O, unreachable peer, bad slide)
inline constexpr int kExitUsage = 2;     // bad command line
inline constexpr int kExitProtocol = 3;  // the peer answered, but not as IA-API says
inline constexpr int kExitTimeout = 4;   // wait: the deadline passed

using tools::CommandInfo;
using tools::CommandSetup;
using tools::Registration;

// A protocol error: the peer answered something IA-API does not allow.
class ProtocolError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace iaserve::dpatsim
