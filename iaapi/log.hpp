#pragma once
// Loggers per component ("server", "queue", "worker", "iaapi", "sim", ...),
// all writing one line per event to stderr (stdout belongs to the programs'
// own output, e.g. the "listening on" line). Never log a bearer token: pass
// it through redact() if it must be mentioned at all.
#include <spdlog/fwd.h>

#include <memory>
#include <string>
#include <string_view>

namespace iaserve::log {

// Level names as spdlog spells them: trace, debug, info, warn, error, critical, off.
// An empty level takes IASERVE_LOG from the environment, else "info".
// json=true writes each line as one JSON object.
void setup(std::string_view level = {}, bool json = false);

// The logger of one component, created on first use with the current setup.
std::shared_ptr<spdlog::logger> get(const std::string& component);

// "abcd…(40 chars)": enough to tell two tokens apart in a log, never the secret.
std::string redact(std::string_view secret);

}  // namespace iaserve::log
