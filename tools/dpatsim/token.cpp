// dpatsim token: a bearer token from a running simulator, for scripts.
#include <iostream>

#include "tools/dpatsim/command.hpp"
#include "tools/dpatsim/peer.hpp"

namespace iaserve::dpatsim {
namespace {

struct TokenOptions {
  std::string sim;
  double ttl = 0;
};

Registration token_command{
    "token",
    "Ask a running simulator for a fresh bearer token and print it",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<TokenOptions>();
      sub.add_option("URL", o->sim, "The simulator's URL")->required();
      auto* ttl = sub.add_option("--ttl", o->ttl, "Seconds the token lives (default: the simulator's --token-ttl)");
      return [o, ttl]() -> int {
        std::cout << mint_token(o->sim, ttl->count() ? std::optional<double>(o->ttl) : std::nullopt) << std::endl;
        return kExitOk;
      };
    }};

}  // namespace
}  // namespace iaserve::dpatsim
