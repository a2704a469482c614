#include "iaapi/log.hpp"

#include <unistd.h>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>

namespace iaserve::log {
namespace {

std::mutex g_mutex;
spdlog::level::level_enum g_level = spdlog::level::info;
bool g_json = false;
bool g_configured = false;

// %* in a pattern: the message as the inside of a JSON string, so that a
// quote, a backslash or a control character in it (an error text, a path, a
// slide id) cannot break the line's JSON.
class JsonMessage final : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    static const char* hex = "0123456789abcdef";
    for (char ch : std::string_view(msg.payload.data(), msg.payload.size())) {
      const auto c = static_cast<unsigned char>(ch);
      if (c == '"' || c == '\\') {
        dest.push_back('\\');
        dest.push_back(ch);
      } else if (c < 0x20 || c == 0x7f) {
        const char esc[] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
        dest.append(esc, esc + sizeof esc);
      } else {
        dest.push_back(ch);
      }
    }
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<JsonMessage>(); }
};

std::unique_ptr<spdlog::formatter> make_formatter(const std::string& pattern) {
  auto f = std::make_unique<spdlog::pattern_formatter>();
  f->add_flag<JsonMessage>('*').set_pattern(pattern);
  return f;
}

// stderr when it is not a terminal (a file, a pipe, journald). The server's
// request threads log a line per request; a write(2) and a flush per line
// under one lock made them queue on each other. Here a line is formatted
// into a shared buffer under a short lock and written by whichever thread
// finds no write going on: it writes everything gathered so far, again until
// nothing is left. Uncontended, a line is out before log() returns; under
// load one write carries many lines. Lines stay whole and in time order.
class LineSink final : public spdlog::sinks::sink {
 public:
  explicit LineSink(int fd) : fd_(fd), formatter_(make_formatter("%+")) {}

  void log(const spdlog::details::log_msg& msg) override {
    std::unique_lock lock(mutex_);
    formatter_->format(msg, pending_);
    if (writing_) return;  // the thread writing takes this line with its next round
    writing_ = true;
    while (pending_.size() > 0) {
      std::swap(out_, pending_);
      pending_.clear();
      lock.unlock();
      write_all(out_);
      lock.lock();
    }
    writing_ = false;
  }
  void flush() override {}
  void set_pattern(const std::string& pattern) override { set_formatter(make_formatter(pattern)); }
  void set_formatter(std::unique_ptr<spdlog::formatter> f) override {
    std::lock_guard lock(mutex_);
    formatter_ = std::move(f);
  }

 private:
  void write_all(const spdlog::memory_buf_t& text) const {
    const char* p = text.data();
    std::size_t left = text.size();
    while (left > 0) {
      const ssize_t n = ::write(fd_, p, left);
      if (n < 0) {
        if (errno == EINTR) continue;
        return;  // nowhere to report a failing stderr
      }
      p += n;
      left -= static_cast<std::size_t>(n);
    }
  }

  const int fd_;
  std::mutex mutex_;  // all below
  std::unique_ptr<spdlog::formatter> formatter_;
  spdlog::memory_buf_t pending_, out_;
  bool writing_ = false;
};

// Every component's logger writes through this one sink.
std::shared_ptr<spdlog::sinks::sink> shared_sink() {
  static std::shared_ptr<spdlog::sinks::sink> sink = []() -> std::shared_ptr<spdlog::sinks::sink> {
    if (::isatty(STDERR_FILENO)) return std::make_shared<spdlog::sinks::stderr_color_sink_mt>();  // colours
    return std::make_shared<LineSink>(STDERR_FILENO);
  }();
  return sink;
}

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
    logger.set_formatter(make_formatter(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%e%z","level":"%l","component":"%n","pid":%P,"msg":"%*"})"));
  } else {
    logger.set_formatter(make_formatter("%Y-%m-%dT%H:%M:%S.%e %^%-5l%$ [%n] %v"));
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
  auto logger = std::make_shared<spdlog::logger>(component, shared_sink());
  apply(*logger);
  spdlog::register_logger(logger);
  return logger;
}

std::string redact(std::string_view secret) {
  if (secret.size() <= 8) return "(" + std::to_string(secret.size()) + " chars)";
  return std::string(secret.substr(0, 4)) + "…(" + std::to_string(secret.size()) + " chars)";
}

}  // namespace iaserve::log
