#include <boost/json.hpp>

#include <algorithm>
#include <cctype>

#include "iaapi/log.hpp"
#include "queue/record.hpp"
#include "tools/iaqueue/command.hpp"

namespace iaserve::tools::iaqueue {

namespace json = boost::json;

queue::Queue open_queue(const Globals& g, queue::Options o) {
  o.lease_only = g.lease_only;
  o.create = false;
  o.recover_interval = std::chrono::milliseconds(0);
  return queue::Queue(g.dir, o);
}

namespace {

bool secret_key(std::string_view key) {
  std::string k(key);
  std::transform(k.begin(), k.end(), k.begin(), [](unsigned char c) { return std::tolower(c); });
  return k.find("token") != std::string::npos || k.find("authorization") != std::string::npos ||
         k.find("password") != std::string::npos || k.find("secret") != std::string::npos;
}

void redact(json::value& v) {
  if (v.is_object()) {
    for (auto& kv : v.get_object()) {
      if (kv.value().is_string() && secret_key(kv.key()))
        kv.value() = log::redact(std::string(kv.value().get_string()));
      else
        redact(kv.value());
    }
  } else if (v.is_array()) {
    for (auto& e : v.get_array()) redact(e);
  }
}

std::string iso(std::chrono::system_clock::time_point t) {
  std::time_t s = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

json::value to_json(const queue::Job& j, bool with_payload) {
  json::object o;
  o["id"] = j.id;
  o["state"] = std::string(queue::to_string(j.state));
  o["app_id"] = j.app_id;
  o["slide_key"] = j.slide_key;
  o["priority"] = j.priority;
  o["attempts"] = j.attempts;
  if (j.enqueued.time_since_epoch().count()) o["enqueued"] = iso(j.enqueued);
  if (j.finished.time_since_epoch().count()) o["finished"] = iso(j.finished);
  if (!j.last_error.empty()) o["last_error"] = j.last_error;
  if (!j.summary.empty()) o["summary"] = j.summary;
  if (j.lease) {
    auto age = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::system_clock::now() - j.lease->time);
    o["lease"] = json::object{{"host", j.lease->host}, {"pid", j.lease->pid},
                              {"age_ms", age.count()}};
  }
  if (j.state == queue::State::active) o["cancel_requested"] = j.cancel_requested;
  if (with_payload) {
    json::value p = j.payload;
    redact(p);
    o["payload"] = std::move(p);
  }
  return o;
}

std::string age_text(std::chrono::milliseconds age) {
  auto s = age.count() / 1000;
  if (s < 120) return std::to_string(age.count() / 100 / 10.0).substr(0, 5) + " s";
  if (s < 7200) return std::to_string(s / 60) + " min";
  if (s < 172800) return std::to_string(s / 3600) + " h";
  return std::to_string(s / 86400) + " d";
}

std::chrono::seconds parse_age(const std::string& text) {
  std::size_t used = 0;
  long long n = 0;
  try {
    n = std::stoll(text, &used);
  } catch (const std::exception&) {
    throw CLI::ValidationError("--older-than", "\"" + text + "\" is not an age like 7d, 12h, 30m, 45s");
  }
  std::string unit = text.substr(used);
  long long mult = 0;
  if (unit.empty() || unit == "s") mult = 1;
  else if (unit == "m") mult = 60;
  else if (unit == "h") mult = 3600;
  else if (unit == "d") mult = 86400;
  if (!mult || n < 0)
    throw CLI::ValidationError("--older-than", "\"" + text + "\" is not an age like 7d, 12h, 30m, 45s");
  constexpr long long kMaxSeconds = 100LL * 366 * 86400;  // a century: past it, time arithmetic would wrap
  if (n > kMaxSeconds / mult)
    throw CLI::ValidationError("--older-than", "\"" + text + "\" is more than 100 years");
  return std::chrono::seconds(n * mult);
}

}  // namespace iaserve::tools::iaqueue
