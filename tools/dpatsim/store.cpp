#include "tools/dpatsim/store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "iaapi/log.hpp"
#include <spdlog/spdlog.h>

namespace iaserve::dpatsim {
namespace json = boost::json;

namespace {

std::optional<iaapi::QualityStatus> parse_status(std::string_view s) {
  if (s == "NotSet") return iaapi::QualityStatus::NotSet;
  if (s == "QualityOk") return iaapi::QualityStatus::QualityOk;
  if (s == "Rejected") return iaapi::QualityStatus::Rejected;
  return std::nullopt;
}

void write_all(int fd, const std::string& data, const std::filesystem::path& p) {
  std::size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::runtime_error("writing " + p.string() + ": " + std::strerror(errno));
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

Store::Store(std::filesystem::path state_file) : file_(std::move(state_file)) {
  if (file_.empty()) return;
  if (std::filesystem::exists(file_)) {
    std::ifstream in(file_, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    try {
      auto v = json::parse(ss.str());
      auto& o = v.as_object();
      next_id_ = o.at("nextId").to_number<std::int64_t>();
      for (auto& e : o.at("results").as_array()) {
        auto& eo = e.as_object();
        Entry entry{json::value_to<std::string>(eo.at("applicationId")), eo.at("result").as_object()};
        auto id = entry.result.at("id").to_number<std::int64_t>();
        index(id, entry);
        results_[id] = std::move(entry);
      }
      if (auto* q = o.if_contains("qualityControl")) {
        for (auto& [slide, qv] : q->as_object()) {
          auto& qo = qv.as_object();
          auto status = parse_status(qo.at("status").as_string());
          if (!status) throw std::runtime_error("bad status");
          qc_[std::string(slide)] = {{*status, json::value_to<std::string>(qo.at("versionId"))},
                                     json::value_to<std::string>(qo.at("applicationVersion"))};
        }
      }
    } catch (const std::exception& e) {
      throw std::runtime_error("--state " + file_.string() + ": not a dpatsim state file (" + e.what() + ")");
    }
    iaserve::log::get("sim")->info("state {}: {} results", file_.string(), results_.size());
  }
  thread_ = std::thread([this] { flusher(); });
}

Store::~Store() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  try {
    flush();
  } catch (const std::exception& e) {
    iaserve::log::get("sim")->error("{}", e.what());
  }
}

std::string Store::new_version() {
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng_()),
                static_cast<unsigned long long>(rng_()));
  return buf;
}

void Store::mark_dirty() {
  dirty_ = true;
  cv_.notify_all();
}

const json::object& Store::create_locked(const std::string& app_id, json::object result) {
  std::int64_t id = next_id_++;
  result["id"] = id;
  result["versionId"] = new_version();
  auto& entry = results_[id];
  entry = Entry{app_id, std::move(result)};
  index(id, entry);
  mark_dirty();
  return entry.result;
}

json::object Store::create(const std::string& app_id, json::object result) {
  std::lock_guard lock(mutex_);
  return create_locked(app_id, std::move(result));
}

std::string Store::create_text(const std::string& app_id, json::object result) {
  std::lock_guard lock(mutex_);
  return json::serialize(create_locked(app_id, std::move(result)));
}

json::object Store::update(const std::string& app_id, std::int64_t id, json::object result) {
  std::lock_guard lock(mutex_);
  return update_locked(app_id, id, std::move(result));
}

std::string Store::update_text(const std::string& app_id, std::int64_t id, json::object result) {
  std::lock_guard lock(mutex_);
  return json::serialize(update_locked(app_id, id, std::move(result)));
}

const json::object& Store::update_locked(const std::string& app_id, std::int64_t id, json::object result) {
  auto it = results_.find(id);
  if (it == results_.end() || it->second.app_id != app_id)
    throw StoreError(404, "result " + std::to_string(id) + " of application " + app_id + " not found");
  auto& current = it->second.result;
  const auto& current_version = current.at("versionId").as_string();
  if (auto* v = result.if_contains("versionId"); v && v->is_string() && !v->as_string().empty() &&
                                                 v->as_string() != current_version)
    throw StoreError(409, "stale versionId " + std::string(v->as_string()) + ": result " + std::to_string(id) +
                              " is at version " + std::string(current_version));
  if (auto* s = current.if_contains("slideId"); s && result.if_contains("slideId") &&
                                                result.at("slideId") != *s)
    throw StoreError(400, "field slideId: result " + std::to_string(id) + " belongs to slide " +
                              std::string(s->as_string()));
  result["id"] = id;
  result["versionId"] = new_version();
  const auto* old_slide = current.if_contains("slideId");
  const bool indexed = old_slide && old_slide->is_string();
  current = std::move(result);
  if (!indexed) index(id, it->second);
  mark_dirty();
  return current;
}

std::optional<json::object> Store::get(const std::string& app_id, std::int64_t id) const {
  std::lock_guard lock(mutex_);
  auto it = results_.find(id);
  if (it == results_.end() || it->second.app_id != app_id) return std::nullopt;
  return it->second.result;
}

void Store::index(std::int64_t id, const Entry& e) {
  auto* s = e.result.if_contains("slideId");
  if (!s || !s->is_string()) return;
  auto& ids = by_slide_[{e.app_id, std::string(s->as_string())}];
  ids.insert(std::upper_bound(ids.begin(), ids.end(), id), id);
}

std::vector<json::object> Store::list(const std::string& app_id, const std::string& slide_id) const {
  std::lock_guard lock(mutex_);
  std::vector<json::object> out;
  auto ids = by_slide_.find({app_id, slide_id});
  if (ids == by_slide_.end()) return out;
  for (std::int64_t id : ids->second) {
    // An update keeps the slide (it refuses another one), but may leave
    // slideId out: such a result is no longer listed on the slide.
    const auto& e = results_.at(id);
    auto* s = e.result.if_contains("slideId");
    if (s && s->is_string() && s->as_string() == slide_id) out.push_back(e.result);
  }
  return out;
}

std::string Store::list_text(const std::string& app_id, const std::string& slide_id) const {
  std::lock_guard lock(mutex_);
  std::string out = "[";
  if (auto ids = by_slide_.find({app_id, slide_id}); ids != by_slide_.end()) {
    for (std::int64_t id : ids->second) {
      const auto& e = results_.at(id);
      auto* s = e.result.if_contains("slideId");
      if (!(s && s->is_string() && s->as_string() == slide_id)) continue;
      if (out.size() > 1) out += ',';
      out += json::serialize(e.result);
    }
  }
  out += ']';
  return out;
}

json::array Store::all(const std::string& slide_filter) const {
  std::lock_guard lock(mutex_);
  json::array out;
  for (const auto& [id, e] : results_) {
    auto* s = e.result.if_contains("slideId");
    if (!slide_filter.empty() && !(s && s->is_string() && s->as_string() == slide_filter)) continue;
    out.push_back(json::object{{"applicationId", e.app_id}, {"result", e.result}});
  }
  return out;
}

iaapi::QualityControlData Store::set_quality_control(const std::string& slide_id, iaapi::QualityStatus status,
                                                     const std::string& version_id, const std::string& app_version) {
  std::lock_guard lock(mutex_);
  auto it = qc_.find(slide_id);
  if (it != qc_.end() && !version_id.empty() && version_id != it->second.first.version_id)
    throw StoreError(409, "stale qualityControl.versionId " + version_id + ": slide " + slide_id + " is at version " +
                              it->second.first.version_id);
  iaapi::QualityControlData q{status, new_version()};
  qc_[slide_id] = {q, app_version};
  mark_dirty();
  return q;
}

std::optional<iaapi::QualityControlData> Store::quality_control(const std::string& slide_id) const {
  std::lock_guard lock(mutex_);
  auto it = qc_.find(slide_id);
  if (it == qc_.end()) return std::nullopt;
  return it->second.first;
}

void Store::flusher() {
  std::unique_lock lock(mutex_);
  while (!closing_) {
    cv_.wait(lock, [this] { return closing_ || dirty_; });
    if (closing_) break;
    lock.unlock();
    try {
      flush();
    } catch (const std::exception& e) {
      iaserve::log::get("sim")->error("{}", e.what());
    }
    // Coalesce bursts: at most one write per 100 ms.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    lock.lock();
  }
}

void Store::flush() {
  if (file_.empty()) return;
  std::lock_guard wlock(write_mutex_);
  std::string text;
  {
    std::lock_guard lock(mutex_);
    if (!dirty_) return;
    dirty_ = false;
    json::array results;
    for (const auto& [id, e] : results_)
      results.push_back(json::object{{"applicationId", e.app_id}, {"result", e.result}});
    json::object qc;
    for (const auto& [slide, q] : qc_)
      qc[slide] = json::object{{"status", iaapi::to_string(q.first.status)},
                               {"versionId", q.first.version_id},
                               {"applicationVersion", q.second}};
    text = json::serialize(json::object{{"nextId", next_id_}, {"results", std::move(results)},
                                        {"qualityControl", std::move(qc)}});
  }
  auto tmp = file_;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("writing " + tmp.string() + ": " + std::strerror(errno));
  try {
    write_all(fd, text, tmp);
    if (::fsync(fd) != 0) throw std::runtime_error("fsync " + tmp.string() + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), file_.c_str()) != 0)
    throw std::runtime_error("renaming " + tmp.string() + " to " + file_.string() + ": " + std::strerror(errno));
}

}  // namespace iaserve::dpatsim
