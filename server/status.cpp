#include "server/status.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <boost/json.hpp>

#include "iaapi/decode.hpp"
#include "iaapi/timestamp.hpp"
#include "iaapi/version.hpp"
#include "queue/queue.hpp"

namespace iaserve::server::status {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;
using SysClock = std::chrono::system_clock;

constexpr std::string_view kThumbnail = "thumbnail.jpg";

bool plain_key(std::string_view key) {
  if (key.empty() || key.size() > 128 || key.front() == '.') return false;
  return std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '-';
  });
}

bool regular_file(const fs::path& p) {
  struct ::stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

json::value time_or_null(SysClock::time_point t) {
  if (t.time_since_epoch().count() == 0) return nullptr;
  return json::value(iaapi::format_utc(t));
}

double seconds_between(SysClock::time_point a, SysClock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

std::string string_in(const json::object& o, std::string_view key) {
  auto v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->get_string()) : std::string();
}

// What a person needs of one job: never its payload beyond slide id and kind.
json::object job_view(const Config& config, const fs::path& data_dir, const queue::Job& j) {
  json::object o;
  o["id"] = j.id;
  o["state"] = std::string(queue::to_string(j.state));
  o["app"] = j.app_id;
  if (const AppConfig* app = config.find_app_by_id(j.app_id)) o["appName"] = app->display_name;
  o["slideId"] = string_in(j.payload, "slideId");
  o["kind"] = string_in(j.payload, "kind");
  o["slideKey"] = j.slide_key;
  o["enqueued"] = time_or_null(j.enqueued);
  o["finished"] = time_or_null(j.finished);
  o["attempts"] = j.attempts;
  if (!j.last_error.empty()) o["error"] = j.last_error;
  if (auto r = j.summary.if_contains("displayResult"); r && r->is_string()) o["result"] = r->get_string();
  if (auto s = j.summary.if_contains("seconds"); s && s->is_number()) o["seconds"] = s->to_number<double>();
  if (auto h = j.summary.if_contains("host"); h && h->is_string()) o["host"] = h->get_string();
  if (j.lease) {
    o["host"] = j.lease->host;
    o["pid"] = j.lease->pid;
    if (!j.lease->label.empty()) o["worker"] = j.lease->label;
  }
  if (j.state == queue::State::active) o["cancelRequested"] = j.cancel_requested;
  json::value thumb = nullptr, overlay = nullptr;
  if (plain_key(j.slide_key)) {
    std::string base = "status/slides/" + j.slide_key + "/";
    if (regular_file(data_dir / j.slide_key / kThumbnail)) thumb = base + std::string(kThumbnail);
    const std::string over = iaapi::overlay_file_name(j.app_id);
    if (regular_file(data_dir / j.slide_key / over)) overlay = base + over;
  }
  o["thumbnail"] = std::move(thumb);
  o["overlay"] = std::move(overlay);
  return o;
}

std::string this_host() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return {};
  return name;
}

}  // namespace

json::object snapshot(const Snapshot& s) {
  const Config& config = *s.config;
  const auto now = SysClock::now();
  json::object out;

  json::array apps;
  for (const auto& a : config.apps)
    apps.push_back(json::object{{"route", a.route},
                                {"applicationId", a.application_id},
                                {"displayName", a.display_name},
                                {"analysis", a.analysis}});
  const std::string host = this_host();
  out["server"] = json::object{{"name", "iaserve"},
                               {"softwareVersion", kSoftwareVersion},
                               {"apiVersion", kApiVersion},
                               {"host", host},
                               {"pid", static_cast<std::int64_t>(::getpid())},
                               {"started", iaapi::format_utc(s.started)},
                               {"uptimeSeconds", seconds_between(s.started, now)},
                               {"apps", std::move(apps)}};
  out["time"] = iaapi::format_utc(now);

  json::object q{{"dir", config.queue.dir.string()}, {"ready", s.queue != nullptr}};
  json::array processes, active, recent;
  if (!s.queue) {
    q["error"] = s.queue_error;
  } else {
    auto st = s.queue->stats();
    q["pending"] = st.pending;
    q["active"] = st.active;
    q["done"] = st.done;
    q["failed"] = st.failed;
    q["cancelled"] = st.cancelled;
    q["oldestPendingSeconds"] =
        st.oldest_pending_age ? json::value(static_cast<double>(st.oldest_pending_age->count()) / 1000.0) : nullptr;

    for (const auto& p : s.queue->processes()) {
      std::size_t running = std::count_if(st.active_jobs.begin(), st.active_jobs.end(), [&](const queue::Job& j) {
        return j.lease && j.lease->host == p.lease.host && j.lease->pid == p.lease.pid;
      });
      processes.push_back(json::object{{"name", p.name},
                                       {"host", p.lease.host},
                                       {"pid", p.lease.pid},
                                       {"label", p.lease.label},
                                       {"heartbeat", iaapi::format_utc(p.lease.time)},
                                       {"heartbeatAgeSeconds", std::max(0.0, seconds_between(p.lease.time, now))},
                                       {"stale", p.stale},
                                       {"self", p.lease.host == host && p.lease.pid == ::getpid()},
                                       {"activeJobs", running}});
    }
    for (const auto& j : st.active_jobs) active.push_back(job_view(config, config.data.dir, j));

    std::vector<queue::Job> finished;
    for (auto state : {queue::State::done, queue::State::failed, queue::State::cancelled}) {
      auto some = s.queue->recent(state, kRecentJobs);
      std::move(some.begin(), some.end(), std::back_inserter(finished));
    }
    auto when = [](const queue::Job& j) { return j.finished.time_since_epoch().count() ? j.finished : j.enqueued; };
    std::sort(finished.begin(), finished.end(),
              [&](const queue::Job& a, const queue::Job& b) { return when(a) > when(b); });
    if (finished.size() > kRecentJobs) finished.resize(kRecentJobs);
    for (const auto& j : finished) recent.push_back(job_view(config, config.data.dir, j));
  }
  out["queue"] = std::move(q);
  out["processes"] = std::move(processes);
  out["active"] = std::move(active);
  out["recent"] = std::move(recent);
  return out;
}

std::optional<fs::path> picture(const Config& config, std::string_view rest) {
  auto slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view key = rest.substr(0, slash), name = rest.substr(slash + 1);
  if (!plain_key(key)) return std::nullopt;
  // The thumbnail, or the overlay of an app of this server: never a file of
  // the slide's own that DPAT happened to name like one.
  bool known = name == kThumbnail;
  for (const auto& app : config.apps) known = known || name == iaapi::overlay_file_name(app.application_id);
  if (!known) return std::nullopt;
  fs::path p = config.data.dir / std::string(key) / std::string(name);
  if (!regular_file(p)) return std::nullopt;
  return p;
}

std::string_view picture_type(const fs::path& p) {
  return p.extension() == ".png" ? "image/png" : "image/jpeg";  // picture() serves only these two kinds
}

}  // namespace iaserve::server::status
