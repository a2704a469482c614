#include "iaapi/log.hpp"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <mutex>

namespace iaserve::log {
namespace {

std::mutex g_mutex;
spdlog::level::level_enum g_level = spdlog::level::info;
bool g_json = false;
bool g_configured = false;

spdlog::level::level_enum level_from(std::string_view name) {
  if (name.empty()) {
    const char* env = std::getenv("IASERVE_LOG");
    name = env ? env : "info";
  }
  auto lvl = spdlog::level::from_str(std::string(name));
  // from_str answers "off" for unknown names; an unknown name should not
  // silence a service, so fall back to info.
  if (lvl == spdlog::level::off && name != "off") lvl = spdlog::level::info;
  return lvl;
}

void apply(spdlog::logger& logger) {
  logger.set_level(g_level);
  if (g_json) {
    logger.set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","component":"%n","pid":%P,"msg":"%v"})");
  } else {
    logger.set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v");
  }
}

}  // namespace

void setup(std::string_view level, bool json) {
  std::lock_guard lock(g_mutex);
  g_level = level_from(level);
  g_json = json;
  g_configured = true;
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { apply(*l); });
}

std::shared_ptr<spdlog::logger> get(const std::string& component) {
  std::lock_guard lock(g_mutex);
  if (auto existing = spdlog::get(component)) return existing;
  if (!g_configured) {
    g_level = level_from({});
    g_configured = true;
  }
  auto logger = spdlog::stderr_color_mt(component);
  apply(*logger);
  return logger;
}

std::string redact(std::string_view secret) {
  if (secret.size() <= 8) return "(" + std::to_string(secret.size()) + " chars)";
  return std::string(secret.substr(0, 4)) + "…(" + std::to_string(secret.size()) + " chars)";
}

}  // namespace iaserve::log
