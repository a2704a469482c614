#include "server/config.hpp"

#include <boost/json.hpp>
#include <toml++/toml.h>

#include "queue/queue.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

namespace iaserve::server {
namespace {

using namespace std::chrono_literals;

std::string quote_str(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// An address as a peer's shows: IPv4 dotted, IPv6 in its canonical form, an
// IPv4-mapped IPv6 address as IPv4. "*" stays. nullopt when not an address.
std::optional<std::string> canonical_address(const std::string& text) {
  if (text == "*") return text;
  in_addr a4{};
  if (::inet_pton(AF_INET, text.c_str(), &a4) == 1) return text;
  in6_addr a6{};
  if (::inet_pton(AF_INET6, text.c_str(), &a6) != 1) return std::nullopt;
  char buf[INET6_ADDRSTRLEN] = {};
  if (IN6_IS_ADDR_V4MAPPED(&a6)) {
    std::memcpy(&a4, a6.s6_addr + 12, 4);
    ::inet_ntop(AF_INET, &a4, buf, sizeof buf);
  } else {
    ::inet_ntop(AF_INET6, &a6, buf, sizeof buf);
  }
  return std::string(buf);
}

std::string_view type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table: return "table";
    case toml::node_type::array: return "array";
    case toml::node_type::string: return "string";
    case toml::node_type::integer: return "integer";
    case toml::node_type::floating_point: return "float";
    case toml::node_type::boolean: return "boolean";
    case toml::node_type::date: return "date";
    case toml::node_type::time: return "time";
    case toml::node_type::date_time: return "date-time";
    default: return "nothing";
  }
}

std::string join(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

// The value as the user wrote it, for "got ..." in messages.
std::string shown(const toml::node& n) {
  if (auto s = n.as_string()) return quote_str(s->get());
  if (n.is_table() || n.is_array()) return std::string(type_name(n));
  std::ostringstream os;
  n.visit([&os](const auto& v) { os << v; });
  return os.str();
}

[[noreturn]] void wrong_type(const std::string& key, std::string_view expected, const toml::node& n) {
  throw ConfigError(key, "expected " + std::string(expected) + ", got " + std::string(type_name(n)) +
                             (n.is_table() || n.is_array() ? "" : " " + shown(n)));
}

void check_keys(const toml::table& t, const std::string& path,
                std::initializer_list<std::string_view> known) {
  for (auto&& [k, v] : t) {
    (void)v;
    if (std::find(known.begin(), known.end(), k.str()) == known.end())
      throw ConfigError(join(path, k.str()), "unknown key");
  }
}

const toml::table* table_at(const toml::table& t, std::string_view key, const std::string& path) {
  const toml::node* n = t.get(key);
  if (!n) return nullptr;
  if (!n->is_table()) wrong_type(join(path, key), "table", *n);
  return n->as_table();
}

void read_string(const toml::table& t, std::string_view key, const std::string& path, std::string& out) {
  const toml::node* n = t.get(key);
  if (!n) return;
  if (!n->is_string()) wrong_type(join(path, key), "string", *n);
  out = n->as_string()->get();
}

// The names of an enum's values in the file, in the order errors list them.
template <class E>
struct Named {
  std::string_view name;
  E value;
};
constexpr Named<InputType> kInputTypes[] = {{"wholeSlide", InputType::wholeSlide},
                                            {"taggedPolygon", InputType::taggedPolygon},
                                            {"multiArea", InputType::multiArea}};
constexpr Named<Wakeup> kWakeups[] = {{"auto", Wakeup::auto_}, {"inotify", Wakeup::inotify}, {"poll", Wakeup::poll}};
constexpr Named<Commit> kCommits[] = {{"auto", Commit::auto_}, {"journal", Commit::journal}, {"fsync", Commit::fsync}};

template <class E, std::size_t N>
std::string_view name_of(const Named<E> (&names)[N], E value) {
  for (const auto& n : names)
    if (n.value == value) return n.name;
  return names[0].name;
}

// A string that must be one of names: "must be a, b or c, got \"x\"" otherwise.
template <class E, std::size_t N>
void read_choice(const toml::table& t, std::string_view key, const std::string& path, const Named<E> (&names)[N],
                 E& out) {
  std::string s(name_of(names, out));
  read_string(t, key, path, s);
  for (const auto& n : names)
    if (n.name == s) {
      out = n.value;
      return;
    }
  std::string list;
  for (std::size_t i = 0; i < N; ++i) list += (i == 0 ? "" : i + 1 == N ? " or " : ", ") + std::string(names[i].name);
  throw ConfigError(join(path, key), "must be " + list + ", got " + quote_str(s));
}

void read_path(const toml::table& t, std::string_view key, const std::string& path,
               std::filesystem::path& out) {
  std::string s = out.string();
  read_string(t, key, path, s);
  out = s;
}

void read_bool(const toml::table& t, std::string_view key, const std::string& path, bool& out) {
  const toml::node* n = t.get(key);
  if (!n) return;
  if (!n->is_boolean()) wrong_type(join(path, key), "boolean", *n);
  out = n->as_boolean()->get();
}

template <class U>
void read_uint(const toml::table& t, std::string_view key, const std::string& path, U& out,
               std::uint64_t min, std::uint64_t max) {
  const toml::node* n = t.get(key);
  if (!n) return;
  if (!n->is_integer()) wrong_type(join(path, key), "integer", *n);
  std::int64_t v = n->as_integer()->get();
  if (v < 0 || static_cast<std::uint64_t>(v) < min || static_cast<std::uint64_t>(v) > max)
    throw ConfigError(join(path, key), "must be in [" + std::to_string(min) + ", " +
                                           std::to_string(max) + "], got " + std::to_string(v));
  out = static_cast<U>(v);
}

void read_duration(const toml::table& t, std::string_view key, const std::string& path, Duration& out,
                   Duration min = 1ms) {
  const toml::node* n = t.get(key);
  if (!n) return;
  Duration d;
  if (auto s = n->as_string()) {
    try {
      d = parse_duration(s->get());
    } catch (const std::invalid_argument& e) {
      throw ConfigError(join(path, key), std::string(e.what()) + ", got " + quote_str(s->get()));
    }
  } else if (auto i = n->as_integer()) {
    if (i->get() < 0 || i->get() > 100LL * 365 * 86400)
      throw ConfigError(join(path, key), "duration out of range, got " + std::to_string(i->get()));
    d = std::chrono::seconds(i->get());
  } else if (auto f = n->as_floating_point()) {
    double v = f->get();
    if (!std::isfinite(v) || v < 0 || v > 100.0 * 365 * 86400)
      throw ConfigError(join(path, key), "duration out of range, got " + shown(*n));
    d = Duration(static_cast<std::int64_t>(std::llround(v * 1000)));
  } else {
    wrong_type(join(path, key), "duration (\"30s\" or seconds)", *n);
  }
  if (d < min)
    throw ConfigError(join(path, key), "must be at least " + format_duration(min) + ", got " + shown(*n));
  out = d;
}

void read_size(const toml::table& t, std::string_view key, const std::string& path, std::uint64_t& out,
               std::uint64_t min, std::uint64_t max) {
  const toml::node* n = t.get(key);
  if (!n) return;
  std::uint64_t v = 0;
  if (auto s = n->as_string()) {
    try {
      v = parse_size(s->get());
    } catch (const std::invalid_argument& e) {
      throw ConfigError(join(path, key), std::string(e.what()) + ", got " + quote_str(s->get()));
    }
  } else if (auto i = n->as_integer()) {
    if (i->get() < 0) throw ConfigError(join(path, key), "must not be negative, got " + shown(*n));
    v = static_cast<std::uint64_t>(i->get());
  } else {
    wrong_type(join(path, key), "size (\"8MiB\" or bytes)", *n);
  }
  if (v < min || v > max)
    throw ConfigError(join(path, key), "must be in [" + std::to_string(min) + ", " + std::to_string(max) +
                                           "] bytes, got " + shown(*n));
  out = v;
}

// A list of strings; a single string is a list of one.
void read_strings(const toml::table& t, std::string_view key, const std::string& path,
                  std::vector<std::string>& out) {
  const toml::node* n = t.get(key);
  if (!n) return;
  out.clear();
  if (auto s = n->as_string()) {
    out.push_back(s->get());
    return;
  }
  auto a = n->as_array();
  if (!a) wrong_type(join(path, key), "list of strings", *n);
  for (std::size_t i = 0; i < a->size(); ++i) {
    const toml::node& e = *a->get(i);
    if (!e.is_string()) wrong_type(join(path, key) + "[" + std::to_string(i) + "]", "string", e);
    out.push_back(e.as_string()->get());
  }
}

boost::json::value to_json(const toml::node& n) {
  if (auto t = n.as_table()) {
    boost::json::object o;
    for (auto&& [k, v] : *t) o[k.str()] = to_json(v);
    return o;
  }
  if (auto a = n.as_array()) {
    boost::json::array arr;
    for (auto& e : *a) arr.push_back(to_json(e));
    return arr;
  }
  if (auto s = n.as_string()) return boost::json::string(s->get());
  if (auto i = n.as_integer()) return i->get();
  if (auto f = n.as_floating_point()) return f->get();
  if (auto b = n.as_boolean()) return b->get();
  std::ostringstream os;  // dates and times travel as their TOML text
  n.visit([&os](const auto& v) { os << v; });
  return boost::json::string(os.str());
}

void read_object(const toml::table& t, std::string_view key, const std::string& path,
                 boost::json::object& out) {
  if (auto sub = table_at(t, key, path)) out = to_json(*sub).as_object();
}

void check_listen(const std::string& key, const std::string& listen) {
  auto colon = listen.rfind(':');
  bool ok = colon != std::string::npos && colon > 0 && colon + 1 < listen.size();
  if (ok) {
    std::string port = listen.substr(colon + 1);
    ok = port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
         std::stoul(port) <= 65535;
    std::string host = listen.substr(0, colon);
    if (host.front() == '[') ok = ok && host.back() == ']' && host.size() > 2;
  }
  if (!ok) throw ConfigError(key, "expected HOST:PORT with a port in [0, 65535], got " + quote_str(listen));
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

void read_app(const toml::table& t, const std::string& path, AppConfig& app) {
  check_keys(t, path,
             {"route", "application_id", "display_name", "manufacturer", "input_template", "context",
              "analysis", "params", "notifications"});
  read_string(t, "route", path, app.route);
  if (!t.get("route")) throw ConfigError(join(path, "route"), "required");
  const std::string rk = join(path, "route");
  if (app.route.empty() || app.route.front() != '/')
    throw ConfigError(rk, "must start with '/', got " + quote_str(app.route));
  if (app.route.size() < 2 || app.route.back() == '/')
    throw ConfigError(rk, "must not end with '/', got " + quote_str(app.route));
  if (app.route.size() > 200) throw ConfigError(rk, "longer than 200 characters");
  for (char c : app.route)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '-' || c == '_' || c == '.'))
      throw ConfigError(rk, "may hold only letters, digits and / - _ ., got " + quote_str(app.route));
  if (app.route.find("//") != std::string::npos || app.route.find("/.") != std::string::npos)
    throw ConfigError(rk, "empty or dot segment in " + quote_str(app.route));
  for (std::string_view reserved : {"/healthz", "/readyz", "/metrics", "/info"})
    if (app.route == reserved) throw ConfigError(rk, "reserved for the server, got " + quote_str(app.route));
  // The status page's (reserved whether it is on or not: turning it on must
  // not take an app away).
  if (app.route == "/status" || app.route.rfind("/status.", 0) == 0 || app.route.rfind("/status/", 0) == 0)
    throw ConfigError(rk, "reserved for the status page (/status...), got " + quote_str(app.route));

  if (!t.get("application_id")) throw ConfigError(join(path, "application_id"), "required");
  read_string(t, "application_id", path, app.application_id);
  if (app.application_id.empty() || app.application_id.size() > 200)
    throw ConfigError(join(path, "application_id"), "must be 1 to 200 characters, got " + quote_str(app.application_id));
  for (char c : app.application_id)
    if (static_cast<unsigned char>(c) < 0x20 || c == '/' || c == '\\')
      throw ConfigError(join(path, "application_id"),
                        "must not hold control characters or slashes, got " + quote_str(app.application_id));
  app.display_name = app.application_id;
  read_string(t, "display_name", path, app.display_name);
  read_string(t, "manufacturer", path, app.manufacturer);

  if (auto it = table_at(t, "input_template", path)) {
    const std::string ip = join(path, "input_template");
    check_keys(*it, ip, {"type", "tags"});
    read_choice(*it, "type", ip, kInputTypes, app.input_type);
    read_strings(*it, "tags", ip, app.input_tags);
  }
  read_object(t, "context", path, app.context);
  if (const toml::node* a = t.get("analysis")) {
    if (auto at = a->as_table()) {
      const std::string ap = join(path, "analysis");
      check_keys(*at, ap, {"name"});
      read_string(*at, "name", ap, app.analysis);
      app.analysis_key = "analysis.name";
    } else {
      read_string(t, "analysis", path, app.analysis);
    }
    if (app.analysis.empty()) throw ConfigError(join(path, app.analysis_key), "must not be empty");
  }
  read_object(t, "params", path, app.params);
  if (auto nt = table_at(t, "notifications", path)) {
    const std::string np = join(path, "notifications");
    check_keys(*nt, np,
               {"enabled", "staining", "block", "min_width", "min_height", "max_width", "max_height"});
    auto& f = app.notifications;
    f.enabled = true;  // a [notifications] table means the admin wants them
    read_bool(*nt, "enabled", np, f.enabled);
    read_strings(*nt, "staining", np, f.staining);
    read_strings(*nt, "block", np, f.block);
    constexpr std::uint64_t kMaxSide = 1ull << 31;
    read_uint(*nt, "min_width", np, f.min_width, 0, kMaxSide);
    read_uint(*nt, "min_height", np, f.min_height, 0, kMaxSide);
    read_uint(*nt, "max_width", np, f.max_width, 0, kMaxSide);
    read_uint(*nt, "max_height", np, f.max_height, 0, kMaxSide);
    if (f.max_width && f.max_width < f.min_width)
      throw ConfigError(join(np, "max_width"), "smaller than min_width");
    if (f.max_height && f.max_height < f.min_height)
      throw ConfigError(join(np, "max_height"), "smaller than min_height");
  }
}

Config from_table(const toml::table& root) {
  Config c;
  check_keys(root, "", {"server", "queue", "data", "callback", "log", "worker", "apps"});
  if (auto t = table_at(root, "server", "")) {
    const std::string p = "server";
    auto& s = c.server;
    check_keys(*t, p,
               {"listen", "io_threads", "body_limit", "read_timeout", "idle_timeout", "tls_cert", "tls_key",
                "trusted_proxy", "callback_pool_threads", "max_pending_callbacks", "callback_connections", "json_max_depth",
                "status_page"});
    read_string(*t, "listen", p, s.listen);
    read_uint(*t, "io_threads", p, s.io_threads, 1, 256);
    // A body becomes a job: no larger than the queue takes, no deeper than it reads back.
    read_size(*t, "body_limit", p, s.body_limit, 1024, queue::kMaxJobBytes - queue::kJobGrowth);
    read_duration(*t, "read_timeout", p, s.read_timeout, 100ms);
    read_duration(*t, "idle_timeout", p, s.idle_timeout, 100ms);
    read_path(*t, "tls_cert", p, s.tls_cert);
    read_path(*t, "tls_key", p, s.tls_key);
    read_strings(*t, "trusted_proxy", p, s.trusted_proxy);
    for (std::size_t i = 0; i < s.trusted_proxy.size(); ++i) {
      auto canonical = canonical_address(s.trusted_proxy[i]);
      if (!canonical)
        throw ConfigError("server.trusted_proxy[" + std::to_string(i) + "]",
                          "expected an IP address or \"*\", got " + quote_str(s.trusted_proxy[i]));
      s.trusted_proxy[i] = *canonical;
    }
    read_uint(*t, "callback_pool_threads", p, s.callback_pool_threads, 1, 1024);
    read_uint(*t, "max_pending_callbacks", p, s.max_pending_callbacks, 1, 1u << 20);
    read_uint(*t, "callback_connections", p, s.callback_connections, 1, 4096);
    read_uint(*t, "json_max_depth", p, s.json_max_depth, 4, queue::kMaxPayloadDepth - 1);
    read_bool(*t, "status_page", p, s.status_page);
  }
  check_listen("server.listen", c.server.listen);
  if (c.server.tls_cert.empty() != c.server.tls_key.empty())
    throw ConfigError(c.server.tls_cert.empty() ? "server.tls_cert" : "server.tls_key",
                      "required when " +
                          std::string(c.server.tls_cert.empty() ? "server.tls_key" : "server.tls_cert") +
                          " is set");

  if (auto t = table_at(root, "queue", "")) {
    const std::string p = "queue";
    check_keys(*t, p, {"dir", "wakeup", "lease_timeout", "max_attempts", "lease_only", "sync_finish", "commit"});
    read_path(*t, "dir", p, c.queue.dir);
    read_choice(*t, "wakeup", p, kWakeups, c.queue.wakeup);
    read_duration(*t, "lease_timeout", p, c.queue.lease_timeout, 1s);
    read_uint(*t, "max_attempts", p, c.queue.max_attempts, 1, 1000);
    read_bool(*t, "lease_only", p, c.queue.lease_only);
    read_bool(*t, "sync_finish", p, c.queue.sync_finish);
    read_choice(*t, "commit", p, kCommits, c.queue.commit);
  }
  if (c.queue.dir.empty()) throw ConfigError("queue.dir", "must not be empty");

  if (auto t = table_at(root, "data", "")) {
    check_keys(*t, "data", {"dir", "retention"});
    read_path(*t, "dir", "data", c.data.dir);
    read_duration(*t, "retention", "data", c.data.retention, 1s);
  }
  if (c.data.dir.empty()) throw ConfigError("data.dir", "must not be empty");

  if (auto t = table_at(root, "callback", "")) {
    const std::string p = "callback";
    check_keys(*t, p, {"connect_timeout", "total_timeout", "retries", "retry_max_time", "ca_file", "verify_tls"});
    read_duration(*t, "connect_timeout", p, c.callback.connect_timeout, 10ms);
    read_duration(*t, "total_timeout", p, c.callback.total_timeout, 10ms);
    read_uint(*t, "retries", p, c.callback.retries, 0, 100);
    read_duration(*t, "retry_max_time", p, c.callback.retry_max_time, 0ms);
    read_path(*t, "ca_file", p, c.callback.ca_file);
    read_bool(*t, "verify_tls", p, c.callback.verify_tls);
  }

  if (auto t = table_at(root, "log", "")) {
    check_keys(*t, "log", {"level", "json"});
    read_string(*t, "level", "log", c.log.level);
    read_bool(*t, "json", "log", c.log.json);
  }
  static const std::set<std::string> kLevels{"trace", "debug", "info", "warn", "error", "critical", "off"};
  if (!kLevels.count(c.log.level))
    throw ConfigError("log.level", "must be trace, debug, info, warn, error, critical or off, got " +
                                       quote_str(c.log.level));

  if (auto t = table_at(root, "worker", "")) {
    const std::string p = "worker";
    check_keys(*t, p, {"jobs", "host_id", "grace_period", "poll_interval", "metrics_listen", "analysis_time_limit"});
    read_uint(*t, "jobs", p, c.worker.jobs, 1, 256);
    read_string(*t, "host_id", p, c.worker.host_id);
    read_duration(*t, "grace_period", p, c.worker.grace_period, 0ms);
    read_duration(*t, "poll_interval", p, c.worker.poll_interval, 10ms);
    read_string(*t, "metrics_listen", p, c.worker.metrics_listen);
    if (!c.worker.metrics_listen.empty()) check_listen("worker.metrics_listen", c.worker.metrics_listen);
    read_duration(*t, "analysis_time_limit", p, c.worker.analysis_time_limit, 1s);
  }

  const toml::node* apps = root.get("apps");
  if (!apps) throw ConfigError("apps", "at least one [[apps]] table is required");
  auto arr = apps->as_array();
  if (!arr) wrong_type("apps", "array of tables ([[apps]])", *apps);
  if (arr->empty()) throw ConfigError("apps", "at least one [[apps]] table is required");
  for (std::size_t i = 0; i < arr->size(); ++i) {
    const std::string p = "apps[" + std::to_string(i) + "]";
    const toml::node& n = *arr->get(i);
    if (!n.is_table()) wrong_type(p, "table", n);
    AppConfig app;
    read_app(*n.as_table(), p, app);
    for (std::size_t j = 0; j < c.apps.size(); ++j) {
      if (c.apps[j].route == app.route)
        throw ConfigError(p + ".route", "same route as apps[" + std::to_string(j) + "]: " + quote_str(app.route));
      // An app's own sub-routes would hide the other app.
      for (const char* sub : {"/info", "/imagenotification"}) {
        if (app.route == c.apps[j].route + sub || c.apps[j].route == app.route + sub)
          throw ConfigError(p + ".route", quote_str(app.route) + " and apps[" + std::to_string(j) + "].route " +
                                              quote_str(c.apps[j].route) + " collide: " + sub +
                                              " under an app's route is the app's own");
      }
      if (c.apps[j].application_id == app.application_id)
        throw ConfigError(p + ".application_id",
                          "same id as apps[" + std::to_string(j) + "]: " + quote_str(app.application_id));
    }
    c.apps.push_back(std::move(app));
  }
  return c;
}

// "apps[0].params.x" -> {"apps", 0, "params", "x"}; an index is kept as "[0]".
std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::string cur;
  for (std::size_t i = 0; i < key.size(); ++i) {
    char ch = key[i];
    if (ch == '.') {
      if (cur.empty()) throw ConfigError(key, "bad key path in override");
      parts.push_back(cur);
      cur.clear();
    } else if (ch == '[') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
      auto close = key.find(']', i);
      if (close == std::string::npos || close == i + 1) throw ConfigError(key, "bad key path in override");
      std::string idx = key.substr(i + 1, close - i - 1);
      if (!std::all_of(idx.begin(), idx.end(), [](char d) { return d >= '0' && d <= '9'; }))
        throw ConfigError(key, "bad index in override");
      parts.push_back("[" + idx + "]");
      i = close;
      if (i + 1 < key.size() && key[i + 1] == '.') ++i;
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  if (parts.empty()) throw ConfigError(key, "empty key in override");
  return parts;
}

}  // namespace

std::string string_override(std::string_view key, std::string_view value) {
  return std::string(key) + "=" + quote_str(value);
}

namespace {

void apply_override(toml::table& root, const std::string& assignment) {
  auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("", "override " + quote_str(assignment) + ": expected KEY=VALUE");
  std::string key = assignment.substr(0, eq);
  std::string text = assignment.substr(eq + 1);
  auto parts = split_key(key);

  // The value: TOML when it reads as one, else the text as a string.
  toml::table holder;
  bool parsed = false;
  if (!text.empty()) {
    char c0 = text.front();
    bool looks = std::isdigit(static_cast<unsigned char>(c0)) || c0 == '-' || c0 == '+' || c0 == '"' ||
                 c0 == '\'' || c0 == '[' || c0 == '{' || text == "true" || text == "false";
    if (looks) {
      try {
        holder = toml::parse("v = " + text);
        parsed = true;
      } catch (const toml::parse_error&) {
      }
    }
  }
  if (!parsed) holder.insert_or_assign("v", text);

  toml::node* cur = &root;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    const std::string& part = parts[i];
    if (part.front() == '[') {
      auto arr = cur->as_array();
      std::size_t idx = std::stoul(part.substr(1, part.size() - 2));
      if (!arr || idx >= arr->size()) throw ConfigError(key, "override names no such entry");
      cur = arr->get(idx);
    } else {
      auto t = cur->as_table();
      if (!t) throw ConfigError(key, "override path crosses a non-table");
      if (!t->get(part)) {
        if (i + 1 < parts.size() && parts[i + 1].front() == '[') throw ConfigError(key, "override names no such entry");
        t->insert(part, toml::table{});
      }
      cur = t->get(part);
    }
  }
  const std::string& last = parts.back();
  if (last.front() == '[') throw ConfigError(key, "override must end in a key name");
  auto t = cur->as_table();
  if (!t) throw ConfigError(key, "override path crosses a non-table");
  t->insert_or_assign(last, std::move(*holder.get("v")));
}

toml::array to_array(const std::vector<std::string>& v) {
  toml::array a;
  for (auto& s : v) a.push_back(s);
  return a;
}

toml::table json_to_toml(const boost::json::object& o);

void put_json(toml::table& t, std::string_view key, const boost::json::value& v);

toml::array json_to_toml_array(const boost::json::array& arr) {
  toml::array a;
  for (auto& e : arr) {
    toml::table tmp;
    put_json(tmp, "v", e);
    if (auto n = tmp.get("v")) a.push_back(std::move(*n));
  }
  return a;
}

void put_json(toml::table& t, std::string_view key, const boost::json::value& v) {
  switch (v.kind()) {
    case boost::json::kind::object: t.insert_or_assign(key, json_to_toml(v.get_object())); break;
    case boost::json::kind::array: t.insert_or_assign(key, json_to_toml_array(v.get_array())); break;
    case boost::json::kind::string: t.insert_or_assign(key, std::string(v.get_string())); break;
    case boost::json::kind::int64: t.insert_or_assign(key, v.get_int64()); break;
    case boost::json::kind::uint64: t.insert_or_assign(key, static_cast<std::int64_t>(v.get_uint64())); break;
    case boost::json::kind::double_: t.insert_or_assign(key, v.get_double()); break;
    case boost::json::kind::bool_: t.insert_or_assign(key, v.get_bool()); break;
    case boost::json::kind::null: break;  // TOML has no null
  }
}

toml::table json_to_toml(const boost::json::object& o) {
  toml::table t;
  for (auto& [k, v] : o) put_json(t, k, v);
  return t;
}

}  // namespace

Duration parse_duration(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
  if (i == 0) throw std::invalid_argument("expected a duration like \"30s\", \"5m\", \"7d\"");
  std::string number(text.substr(0, i));
  std::string unit(text.substr(i));
  double v = 0;
  try {
    std::size_t used = 0;
    v = std::stod(number, &used);
    if (used != number.size()) throw std::invalid_argument("x");
  } catch (const std::exception&) {
    throw std::invalid_argument("expected a duration like \"30s\", \"5m\", \"7d\"");
  }
  double ms = 0;
  if (unit == "ms") ms = v;
  else if (unit == "s" || unit.empty()) ms = v * 1e3;
  else if (unit == "m" || unit == "min") ms = v * 60e3;
  else if (unit == "h") ms = v * 3600e3;
  else if (unit == "d") ms = v * 86400e3;
  else throw std::invalid_argument("unknown duration unit (ms, s, m, h, d)");
  if (ms > 100.0 * 365 * 86400e3) throw std::invalid_argument("duration out of range");
  return Duration(static_cast<std::int64_t>(std::llround(ms)));
}

std::uint64_t parse_size(std::string_view text) {
  std::size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == 0 || i > 15) throw std::invalid_argument("expected a size like \"8MiB\"");
  std::uint64_t n = std::stoull(std::string(text.substr(0, i)));
  std::string unit = lower(std::string(text.substr(i)));
  std::uint64_t mul = 0;
  if (unit.empty() || unit == "b") mul = 1;
  else if (unit == "kib" || unit == "k") mul = 1ull << 10;
  else if (unit == "mib" || unit == "m") mul = 1ull << 20;
  else if (unit == "gib" || unit == "g") mul = 1ull << 30;
  else if (unit == "kb") mul = 1000;
  else if (unit == "mb") mul = 1000 * 1000;
  else if (unit == "gb") mul = 1000ull * 1000 * 1000;
  else throw std::invalid_argument("unknown size unit (B, KiB, MiB, GiB, KB, MB, GB)");
  if (n > std::numeric_limits<std::uint64_t>::max() / mul) throw std::invalid_argument("size too large");
  return n * mul;
}

std::string format_duration(Duration d) {
  auto ms = d.count();
  if (ms == 0) return "0s";
  if (ms % 86400000 == 0) return std::to_string(ms / 86400000) + "d";
  if (ms % 3600000 == 0) return std::to_string(ms / 3600000) + "h";
  if (ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string_view to_string(InputType t) { return name_of(kInputTypes, t); }
std::string_view to_string(Wakeup w) { return name_of(kWakeups, w); }
std::string_view to_string(Commit c) { return name_of(kCommits, c); }

const AppConfig* Config::find_app_by_id(std::string_view id) const {
  for (auto& a : apps)
    if (a.application_id == id) return &a;
  return nullptr;
}

const AppConfig* Config::find_app_by_route(std::string_view route) const {
  for (auto& a : apps)
    if (a.route == route) return &a;
  return nullptr;
}

Config parse_config(std::string_view text, const std::vector<std::string>& overrides, std::string_view source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    throw ConfigError("", std::string(source) + ":" + std::to_string(b.line) + ":" + std::to_string(b.column) +
                              ": " + std::string(e.description()));
  }
  for (const auto& o : overrides) apply_override(root, o);
  return from_table(root);
}

Config load_config(const std::filesystem::path& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("", path.string() + ": cannot read the configuration file");
  std::string text;
  char buf[8192];
  constexpr std::size_t kMax = 4u << 20;  // a config is small; refuse anything absurd
  while (in.read(buf, sizeof buf) || in.gcount() > 0) {
    text.append(buf, static_cast<std::size_t>(in.gcount()));
    if (text.size() > kMax) throw ConfigError("", path.string() + ": larger than 4 MiB");
  }
  return parse_config(text, overrides, path.string());
}

std::string describe(const Config& c) {
  toml::table root;
  toml::table s{{"listen", c.server.listen},
                {"io_threads", static_cast<std::int64_t>(c.server.io_threads)},
                {"body_limit", static_cast<std::int64_t>(c.server.body_limit)},
                {"read_timeout", format_duration(c.server.read_timeout)},
                {"idle_timeout", format_duration(c.server.idle_timeout)},
                {"tls_cert", c.server.tls_cert.string()},
                {"tls_key", c.server.tls_key.string()},
                {"callback_pool_threads", static_cast<std::int64_t>(c.server.callback_pool_threads)},
                {"max_pending_callbacks", static_cast<std::int64_t>(c.server.max_pending_callbacks)},
                {"callback_connections", static_cast<std::int64_t>(c.server.callback_connections)},
                {"json_max_depth", static_cast<std::int64_t>(c.server.json_max_depth)},
                {"status_page", c.server.status_page}};
  s.insert("trusted_proxy", to_array(c.server.trusted_proxy));
  root.insert("server", std::move(s));
  root.insert("queue", toml::table{{"dir", c.queue.dir.string()},
                                   {"wakeup", std::string(to_string(c.queue.wakeup))},
                                   {"lease_timeout", format_duration(c.queue.lease_timeout)},
                                   {"max_attempts", static_cast<std::int64_t>(c.queue.max_attempts)},
                                   {"lease_only", c.queue.lease_only},
                                   {"sync_finish", c.queue.sync_finish},
                                   {"commit", std::string(to_string(c.queue.commit))}});
  root.insert("data", toml::table{{"dir", c.data.dir.string()}, {"retention", format_duration(c.data.retention)}});
  root.insert("callback", toml::table{{"connect_timeout", format_duration(c.callback.connect_timeout)},
                                      {"total_timeout", format_duration(c.callback.total_timeout)},
                                      {"retries", static_cast<std::int64_t>(c.callback.retries)},
                                      {"retry_max_time", format_duration(c.callback.retry_max_time)},
                                      {"ca_file", c.callback.ca_file.string()},
                                      {"verify_tls", c.callback.verify_tls}});
  root.insert("log", toml::table{{"level", c.log.level}, {"json", c.log.json}});
  root.insert("worker", toml::table{{"jobs", static_cast<std::int64_t>(c.worker.jobs)},
                                    {"host_id", c.worker.host_id},
                                    {"grace_period", format_duration(c.worker.grace_period)},
                                    {"poll_interval", format_duration(c.worker.poll_interval)},
                                    {"metrics_listen", c.worker.metrics_listen},
                                    {"analysis_time_limit", format_duration(c.worker.analysis_time_limit)}});
  toml::array apps;
  for (const auto& a : c.apps) {
    toml::table t{{"route", a.route},
                  {"application_id", a.application_id},
                  {"display_name", a.display_name},
                  {"manufacturer", a.manufacturer},
                  {"analysis", a.analysis}};
    toml::table it{{"type", std::string(to_string(a.input_type))}};
    it.insert("tags", to_array(a.input_tags));
    t.insert("input_template", std::move(it));
    t.insert("context", json_to_toml(a.context));
    t.insert("params", json_to_toml(a.params));
    const auto& f = a.notifications;
    toml::table nt{{"enabled", f.enabled},
                   {"min_width", static_cast<std::int64_t>(f.min_width)},
                   {"min_height", static_cast<std::int64_t>(f.min_height)},
                   {"max_width", static_cast<std::int64_t>(f.max_width)},
                   {"max_height", static_cast<std::int64_t>(f.max_height)}};
    nt.insert("staining", to_array(f.staining));
    nt.insert("block", to_array(f.block));
    t.insert("notifications", std::move(nt));
    apps.push_back(std::move(t));
  }
  root.insert("apps", std::move(apps));
  std::ostringstream os;
  os << root << "\n";
  return os.str();
}

}  // namespace iaserve::server
