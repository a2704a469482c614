#pragma once
// The simulator's result database: what DPAT keeps for the apps. Results
// are stored as the JSON the app sent (unknown fields kept), plus id and
// versionId. Persisted to a JSON state file (write to a temporary, fsync,
// rename) so a restarted simulator still has them: the file is written at
// most every 100 ms by a background thread and at close.
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "iaapi/messages.hpp"

namespace iaserve::dpatsim {

struct StoreError : std::runtime_error {
  StoreError(unsigned code, const std::string& message) : std::runtime_error(message), status(code) {}
  unsigned status;  // 400, 404, 409
};

class Store {
 public:
  // Loads the state file when it exists (throws naming it when it is not
  // valid); an empty path keeps everything in memory only.
  explicit Store(std::filesystem::path state_file);
  ~Store();  // flushes
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // POST: a new id (increasing) and versionId. Returns the stored JSON.
  boost::json::object create(const std::string& app_id, boost::json::object result);
  // The same, answering the stored JSON as text (no copy of the result).
  std::string create_text(const std::string& app_id, boost::json::object result);
  // PUT: replaces result `id` of `app_id`. A body naming a versionId other
  // than the current one gets StoreError 409; an unknown id 404.
  boost::json::object update(const std::string& app_id, std::int64_t id, boost::json::object result);
  std::string update_text(const std::string& app_id, std::int64_t id, boost::json::object result);
  std::optional<boost::json::object> get(const std::string& app_id, std::int64_t id) const;
  // This app's results on a slide, oldest first.
  std::vector<boost::json::object> list(const std::string& app_id, const std::string& slide_id) const;
  // The same as a JSON array text, written from the stored results directly.
  std::string list_text(const std::string& app_id, const std::string& slide_id) const;
  // Every stored result with its app: [{applicationId, result}], optional slide filter.
  boost::json::array all(const std::string& slide_filter = {}) const;

  // Quality control per slide: the new versionId. A non-empty stale
  // versionId gets StoreError 409.
  iaapi::QualityControlData set_quality_control(const std::string& slide_id, iaapi::QualityStatus status,
                                                const std::string& version_id, const std::string& app_version);
  std::optional<iaapi::QualityControlData> quality_control(const std::string& slide_id) const;

  void flush();

 private:
  struct Entry {
    std::string app_id;
    boost::json::object result;
  };
  std::string new_version();
  // Stores a new result / replaces one; the stored object. Callers hold mutex_.
  const boost::json::object& create_locked(const std::string& app_id, boost::json::object result);
  const boost::json::object& update_locked(const std::string& app_id, std::int64_t id, boost::json::object result);
  void mark_dirty();
  void write_file();
  void flusher();

  std::filesystem::path file_;
  mutable std::mutex mutex_;
  std::map<std::int64_t, Entry> results_;
  // Ids by (app id, slide id at creation), ascending: a listing looks at the
  // slide's results only, not at every stored one.
  std::map<std::pair<std::string, std::string>, std::vector<std::int64_t>> by_slide_;
  void index(std::int64_t id, const Entry& e);
  std::map<std::string, std::pair<iaapi::QualityControlData, std::string>> qc_;  // + app version
  std::int64_t next_id_ = 1;
  std::mt19937_64 rng_{std::random_device{}()};
  bool dirty_ = false, closing_ = false;
  std::condition_variable cv_;
  std::mutex write_mutex_;
  std::thread thread_;
};

}  // namespace iaserve::dpatsim
