#pragma once
// The status page: GET /status (HTML), /status.js, /status.css, the
// /status.json snapshot it polls every two seconds, and the pictures the
// workers leave in the data folder (/status/slides/<slide key>/thumbnail.jpg
// and overlay.<app key>.png). The snapshot names slides, apps, hosts and outcomes;
// never a job's payload (it holds DPAT's bearer token).
#include <boost/json/object.hpp>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "server/config.hpp"

namespace iaserve::queue {
class Queue;
}

namespace iaserve::server::status {

std::string_view page_html();
std::string_view page_js();
std::string_view page_css();

// How many finished jobs the snapshot lists, newest first.
inline constexpr std::size_t kRecentJobs = 25;

struct Snapshot {
  const Config* config = nullptr;
  queue::Queue* queue = nullptr;   // nullptr: not open (queue_error says why)
  std::string queue_error;
  std::chrono::system_clock::time_point started;
};
boost::json::object snapshot(const Snapshot& s);

// The picture a /status/slides/... path names, when it is thumbnail.jpg or
// the overlay of one of config's apps, the key is a plain slide key (letters, digits, '.', '_', '-', not
// starting with '.') and the file is a regular file in config's data folder.
// rest: the path after "/status/slides/".
std::optional<std::filesystem::path> picture(const Config& config, std::string_view rest);

// Content-Type of a picture path (by its name).
std::string_view picture_type(const std::filesystem::path& p);

}  // namespace iaserve::server::status
