// dpatsim wait: until an app's result on a slide is there (or final).
#include <boost/json.hpp>

#include <iostream>
#include <thread>

#include "iaapi/client.hpp"
#include "tools/dpatsim/command.hpp"
#include "tools/dpatsim/peer.hpp"

namespace iaserve::dpatsim {
namespace {

struct WaitOptions {
  std::string sim, slide, app;
  bool final = false;
  double timeout_s = 300, interval_s = 0.2;
};

Registration wait_command{
    "wait",
    "Wait for the app's newest result on a slide. With --final, until it is final: its displayProperties "
    "have no \"Progress\" entry, or its data.context has \"state\": \"final\". Prints the result; exit 0, or 4 "
    "on timeout, or 1 when the final result is a failure (displayProperties Status \"failed\").",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<WaitOptions>();
      sub.add_option("--sim", o->sim, "The simulator's callback URL")->required();
      sub.add_option("--slide", o->slide, "Slide id")->required();
      sub.add_option("--app", o->app, "applicationId")->required();
      sub.add_flag("--final", o->final, "Wait until the result is final, not just present");
      sub.add_option("--timeout", o->timeout_s, "Seconds before giving up")->capture_default_str();
      sub.add_option("--interval", o->interval_s, "Seconds between polls")->capture_default_str();
      return [o]() -> int {
        iaapi::ClientOptions co;
        co.max_attempts = 1;
        iaapi::CallbackClient client({o->sim, mint_token(o->sim)}, co);
        auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<std::int64_t>(o->timeout_s * 1000));
        std::string last_text;
        for (;;) {
          auto list = client.list_results(o->app, o->slide);
          if (!list.empty()) {
            auto newest = *std::max_element(list.begin(), list.end(),
                                            [](const auto& a, const auto& b) { return a.id < b.id; });
            if (newest.display_result != last_text) {
              std::cerr << "dpatsim: result " << newest.id << ": " << newest.display_result << "\n";
              last_text = newest.display_result;
            }
            if (!o->final || is_final(newest)) {
              std::cout << pretty(iaapi::to_json(newest)) << std::endl;
              return o->final && is_failed(newest) ? kExitError : kExitOk;
            }
          }
          if (std::chrono::steady_clock::now() >= deadline) {
            std::cerr << "dpatsim: no " << (o->final ? "final " : "") << "result of " << o->app << " on slide "
                      << o->slide << " after " << o->timeout_s << " s\n";
            return kExitTimeout;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<std::int64_t>(o->interval_s * 1000)));
        }
      };
    }};

}  // namespace
}  // namespace iaserve::dpatsim
