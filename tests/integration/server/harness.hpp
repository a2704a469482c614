#pragma once
// dpatsim and iaserve as real processes on loopback, for the server tests.
#include <boost/json.hpp>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/http.hpp"
#include "tests/support/process.hpp"

namespace iaserve::test {

inline constexpr const char* kToken = "test-token-0123456789abcdef";

// dpatsim serve on a folder of `slides` slides (one mkslide slide, linked
// under `slides` names s000, s001, ...).
class Sim {
 public:
  // extra_args go to `dpatsim serve` (faults: --fail-rate, --fault-routes...).
  explicit Sim(int slides = 1, int latency_ms = 0, std::vector<std::string> extra_args = {});
  const std::string& url() const { return url_; }    // the callback base URL
  const std::string& root() const { return root_; }  // scheme://host:port
  const std::vector<std::string>& slide_ids() const { return ids_; }
  // Every stored result of that app on that slide (from /_sim/results).
  std::vector<boost::json::object> results(const std::string& app_id, const std::string& slide_id) const;
  Process& process() { return *proc_; }

 private:
  TempDir dir_{"iaserve-sim"};
  std::unique_ptr<Process> proc_;
  std::string url_, root_;
  std::vector<std::string> ids_;
};

// iaserve with a config written from `config_text` (queue and data folders
// filled in when the text does not set them).
class Serve {
 public:
  explicit Serve(const std::string& config_text, std::vector<std::string> extra_args = {});
  const std::string& url() const { return url_; }
  const std::filesystem::path& queue_dir() const { return queue_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  Process& process() { return *proc_; }

 private:
  TempDir dir_{"iaserve-serve"};
  std::filesystem::path queue_;
  std::unique_ptr<Process> proc_;
  std::string url_;
};

// A config with the two apps the tests use: /apps/tissue (notifications on,
// any slide) and /apps/other (notifications only for staining "PAS").
std::string two_app_config(const std::string& server_extra = {});

// An invocation body.
boost::json::object invocation(const std::string& action, const std::string& app_id, const std::string& slide_id,
                               const std::string& callback_url);
std::string body(const boost::json::value& v);

// The payloads of the jobs of one queue state folder (read as files).
std::vector<boost::json::object> jobs_in(const std::filesystem::path& queue_dir, const std::string& state);
// Every file under a folder (recursive), for "nothing half-written" checks.
std::vector<std::filesystem::path> files_under(const std::filesystem::path& dir);

}  // namespace iaserve::test
