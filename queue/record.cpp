#include "queue/record.hpp"

#include "iaapi/text.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>

#include <algorithm>
#include <cstdio>

namespace iaserve::queue::record {

namespace json = boost::json;

namespace {

bool all_of(std::string_view s, std::string_view allowed) {
  return std::all_of(s.begin(), s.end(),
                     [&](char c) { return allowed.find(c) != std::string_view::npos; });
}

constexpr std::string_view kDigits = "0123456789";
constexpr std::string_view kHex = "0123456789abcdef";

[[noreturn]] void bad(std::string_view field, std::string_view why) {
  throw QueueError("field " + std::string(field) + ": " + std::string(why));
}

const json::value& need(const json::object& o, std::string_view key) {
  auto it = o.find(key);
  if (it == o.end()) bad(key, "missing");
  return it->value();
}

std::string need_string(const json::object& o, std::string_view key) {
  const auto& v = need(o, key);
  if (!v.is_string()) bad(key, std::string("expected string, got ") + std::string(json::to_string(v.kind())));
  return std::string(v.get_string());
}

std::int64_t need_int(const json::object& o, std::string_view key) {
  const auto& v = need(o, key);
  if (v.is_int64()) return v.get_int64();
  if (v.is_uint64() && v.get_uint64() <= static_cast<std::uint64_t>(INT64_MAX))
    return static_cast<std::int64_t>(v.get_uint64());
  bad(key, std::string("expected integer, got ") + std::string(json::to_string(v.kind())));
}

std::int64_t opt_int(const json::object& o, std::string_view key) {
  return o.contains(key) ? need_int(o, key) : 0;
}

std::string opt_string(const json::object& o, std::string_view key) {
  return o.contains(key) ? need_string(o, key) : std::string();
}

}  // namespace

std::chrono::system_clock::time_point from_ns(std::int64_t ns) {
  return std::chrono::system_clock::time_point(
      std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::nanoseconds(ns)));
}

std::int64_t to_ns(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::string make_id(int priority, std::int64_t time_ns, std::string_view hash,
                    std::string_view random) {
  int p = std::clamp(priority, -kMaxPriority, kMaxPriority);
  char head[64];
  std::snprintf(head, sizeof head, "%05d-%020lld-", 50000 - p, static_cast<long long>(time_ns));
  return std::string(head) + std::string(hash) + "-" + std::string(random);
}

std::optional<IdParts> parse_id(std::string_view id) {
  // 5 + 1 + 20 + 1 + 16 + 1 + 8
  if (id.size() != 52 || id[5] != '-' || id[26] != '-' || id[43] != '-') return std::nullopt;
  auto p = id.substr(0, 5), t = id.substr(6, 20), h = id.substr(27, 16), r = id.substr(44, 8);
  if (!all_of(p, kDigits) || !all_of(t, kDigits) || !all_of(h, kHex) || !all_of(r, kHex))
    return std::nullopt;
  IdParts parts;
  parts.priority = 50000 - std::stoi(std::string(p));
  parts.time_ns = std::stoll(std::string(t));
  parts.slide_hash = std::string(h);
  parts.random = std::string(r);
  return parts;
}

std::string slide_hash(std::string_view app_id, std::string_view slide_key) {
  // FNV-1a 64: only a hint for listings; equality is confirmed on the keys.
  std::uint64_t h = 1469598103934665603ULL;
  auto mix = [&](std::string_view s) {
    for (unsigned char c : s) {
      h ^= c;
      h *= 1099511628211ULL;
    }
  };
  mix(app_id);
  mix(std::string_view("\n", 1));
  mix(slide_key);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::string encode_job(const JobFile& f) {
  const Job& j = f.job;
  json::object o;
  o["format"] = 1;
  o["id"] = j.id;
  o["app_id"] = j.app_id;
  o["slide_key"] = j.slide_key;
  o["priority"] = j.priority;
  o["attempts"] = j.attempts;
  o["enqueued_ns"] = to_ns(j.enqueued);
  if (j.finished.time_since_epoch().count() != 0) o["finished_ns"] = to_ns(j.finished);
  if (!j.last_error.empty()) o["last_error"] = iaapi::valid_utf8(j.last_error);
  if (!j.summary.empty()) o["summary"] = j.summary;
  if (f.outcome) o["outcome"] = json::object{{"state", f.outcome->state}, {"run", f.outcome->run}};
  if (f.claim) o["claim"] = json::object{{"run", f.claim->run}, {"lease", f.claim->lease}};
  if (f.generation > 0) o["generation"] = f.generation;
  o["payload"] = j.payload;
  return json::serialize(o);
}

namespace {

json::value outcome_json(const std::optional<Outcome>& o) {
  if (!o) return nullptr;
  return json::object{{"state", o->state}, {"run", o->run}};
}

void apply_mutable(const json::object& o, JobFile& f) {
  Job& j = f.job;
  if (o.contains("attempts"))
    j.attempts = static_cast<int>(std::clamp<std::int64_t>(need_int(o, "attempts"), 0, 1000000));
  if (o.contains("finished_ns")) j.finished = from_ns(need_int(o, "finished_ns"));
  if (o.contains("last_error")) j.last_error = need_string(o, "last_error");
  if (auto it = o.find("summary"); it != o.end()) {
    if (!it->value().is_object()) bad("summary", "expected object");
    j.summary = it->value().get_object();
  }
  if (auto it = o.find("claim"); it != o.end() && it->value().is_object()) {
    const auto& c = it->value().get_object();
    f.claim = ClaimRecord{need_string(c, "run"), need_string(c, "lease")};
  }
  if (auto it = o.find("outcome"); it != o.end()) {
    ++f.generation;
    if (it->value().is_object()) {
      const auto& oc = it->value().get_object();
      f.outcome = Outcome{need_string(oc, "state"), need_string(oc, "run")};
    } else if (it->value().is_null()) {
      f.outcome.reset();
    }
  }
}

}  // namespace

std::string encode_update(const JobFile& f) {
  const Job& j = f.job;
  json::object o;
  o["update"] = 1;
  o["attempts"] = j.attempts;
  o["finished_ns"] = to_ns(j.finished);
  o["last_error"] = iaapi::valid_utf8(j.last_error);  // a reader refuses a line of bad UTF-8
  o["summary"] = j.summary;
  o["outcome"] = outcome_json(f.outcome);
  std::string out = "\n";
  out += json::serialize(o);
  out += '\n';
  return out;
}

std::string encode_claim(const ClaimRecord& c) {
  json::object o;
  o["update"] = 1;
  o["claim"] = json::object{{"run", c.run}, {"lease", c.lease}};
  std::string out = "\n";
  out += json::serialize(o);
  out += '\n';
  return out;
}

std::string encode_bump() { return "\n{\"update\":1,\"outcome\":null}\n"; }

std::string encode_note(const std::string& last_error, std::chrono::system_clock::time_point finished) {
  json::object o;
  o["update"] = 1;
  o["finished_ns"] = to_ns(finished);
  o["last_error"] = iaapi::valid_utf8(last_error);
  std::string out = "\n";
  out += json::serialize(o);
  out += '\n';
  return out;
}

JobFile decode_job(std::string_view whole, std::string_view id_from_name) {
  json::parse_options opts;
  opts.max_depth = kMaxPayloadDepth + 1;  // the record's own level around the payload
  std::error_code ec;
  auto first_end = whole.find('\n');
  std::string_view text = whole.substr(0, first_end);
  json::value v = json::parse(text, ec, {}, opts);
  if (ec) throw QueueError("not JSON: " + ec.message());
  if (!v.is_object()) throw QueueError("not a JSON object");
  const auto& o = v.get_object();
  JobFile f;
  Job& j = f.job;
  j.id = need_string(o, "id");
  if (j.id != id_from_name) bad("id", "\"" + j.id + "\" does not match the file name");
  j.app_id = need_string(o, "app_id");
  j.slide_key = need_string(o, "slide_key");
  j.priority = static_cast<int>(std::clamp<std::int64_t>(need_int(o, "priority"), -kMaxPriority, kMaxPriority));
  j.attempts = static_cast<int>(std::clamp<std::int64_t>(need_int(o, "attempts"), 0, 1000000));
  j.enqueued = from_ns(need_int(o, "enqueued_ns"));
  j.finished = from_ns(opt_int(o, "finished_ns"));
  j.last_error = opt_string(o, "last_error");
  if (auto it = o.find("summary"); it != o.end()) {
    if (!it->value().is_object()) bad("summary", "expected object");
    j.summary = it->value().get_object();
  }
  const auto& p = need(o, "payload");
  if (!p.is_object()) bad("payload", "expected object");
  j.payload = p.get_object();
  if (auto it = o.find("outcome"); it != o.end() && it->value().is_object()) {
    const auto& oc = it->value().get_object();
    f.outcome = Outcome{need_string(oc, "state"), need_string(oc, "run")};
  }
  if (auto it = o.find("claim"); it != o.end() && it->value().is_object()) {
    const auto& c = it->value().get_object();
    f.claim = ClaimRecord{need_string(c, "run"), need_string(c, "lease")};
  }
  f.generation = static_cast<int>(std::clamp<std::int64_t>(opt_int(o, "generation"), 0, 1000000));
  // The updates, in the order they were appended.
  std::size_t pos = first_end;
  while (pos != std::string_view::npos && pos < whole.size()) {
    std::size_t end = whole.find('\n', pos + 1);
    std::string_view line = whole.substr(pos + 1, end == std::string_view::npos ? std::string_view::npos
                                                                                : end - pos - 1);
    pos = end;
    if (line.empty() || end == std::string_view::npos) continue;  // blank, or torn (no newline)
    std::error_code uec;
    json::value u = json::parse(line, uec, {}, opts);
    if (uec || !u.is_object() || !u.get_object().contains("update")) continue;
    try {
      apply_mutable(u.get_object(), f);
    } catch (const QueueError&) {
      // A malformed update is ignored like a torn one.
    }
  }
  return f;
}

std::string encode_lease(const LeaseFile& l) {
  json::object o;
  o["host"] = l.lease.host;
  o["pid"] = l.lease.pid;
  o["time_ns"] = to_ns(l.lease.time);
  o["run"] = l.run;
  if (!l.lease.label.empty()) o["label"] = l.lease.label;
  // "alive_domain": the flock is on leases/<name>.alive. Versions that kept
  // it on the lease itself wrote (and read) "domain": neither reads the
  // other's, so a process of one never takes a live one of the other for
  // gone by a free flock on the wrong file; each judges the other by age.
  if (!l.lease.domain.empty()) o["alive_domain"] = l.lease.domain;
  return json::serialize(o);
}

std::optional<LeaseFile> decode_lease(std::string_view text) {
  std::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec || !v.is_object()) return std::nullopt;
  try {
    const auto& o = v.get_object();
    LeaseFile l;
    l.lease.host = need_string(o, "host");
    l.lease.pid = static_cast<long>(need_int(o, "pid"));
    l.lease.time = from_ns(need_int(o, "time_ns"));
    l.run = need_string(o, "run");
    if (auto label = o.if_contains("label"); label && label->is_string()) l.lease.label = label->get_string();
    if (auto d = o.if_contains("alive_domain"); d && d->is_string()) l.lease.domain = d->get_string();
    return l;
  } catch (const QueueError&) {
    return std::nullopt;
  }
}

}  // namespace iaserve::queue::record
