#include "tools/dpatsim/peer.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <boost/json.hpp>
#include <stdexcept>

#include "tools/dpatsim/command.hpp"

namespace iaserve::dpatsim {
namespace json = boost::json;
namespace {

constexpr std::size_t kMaxReply = 256u << 20;

size_t on_body(char* data, size_t size, size_t n, void* user) {
  auto* s = static_cast<std::string*>(user);
  if (s->size() + size * n > kMaxReply) return 0;  // bounded: abort the transfer
  s->append(data, size * n);
  return size * n;
}

size_t on_header(char* data, size_t size, size_t n, void* user) {
  auto* headers = static_cast<std::map<std::string, std::string>*>(user);
  std::string line(data, size * n);
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    std::string value = line.substr(colon + 1);
    auto b = value.find_first_not_of(" \t");
    auto e = value.find_last_not_of(" \t\r\n");
    (*headers)[name] = b == std::string::npos ? std::string() : value.substr(b, e - b + 1);
  }
  return size * n;
}

void pretty_into(std::string& out, const json::value& v, int indent) {
  std::string pad(static_cast<std::size_t>(indent) * 2, ' ');
  if (v.is_object()) {
    const auto& o = v.as_object();
    if (o.empty()) {
      out += "{}";
      return;
    }
    out += "{\n";
    bool first = true;
    for (const auto& kv : o) {
      if (!first) out += ",\n";
      first = false;
      out += pad + "  " + json::serialize(json::value(kv.key())) + ": ";
      pretty_into(out, kv.value(), indent + 1);
    }
    out += "\n" + pad + "}";
  } else if (v.is_array()) {
    const auto& a = v.as_array();
    if (a.empty()) {
      out += "[]";
      return;
    }
    out += "[\n";
    for (std::size_t i = 0; i < a.size(); ++i) {
      out += pad + "  ";
      pretty_into(out, a[i], indent + 1);
      out += i + 1 < a.size() ? ",\n" : "\n";
    }
    out += pad + "]";
  } else {
    out += json::serialize(v);
  }
}

}  // namespace

Reply call(const std::string& method, const std::string& url, const std::string& body,
           std::vector<std::string> headers, std::chrono::milliseconds timeout) {
  Reply a;
  CURL* c = curl_easy_init();
  if (!c) throw std::runtime_error("curl_easy_init failed");
  curl_slist* hl = nullptr;
  for (auto& h : headers) hl = curl_slist_append(hl, h.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (method == "HEAD") curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  if (!body.empty() || method == "POST" || method == "PUT") {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &a.headers);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  CURLcode rc = curl_easy_perform(c);
  if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.status);
  curl_slist_free_all(hl);
  curl_easy_cleanup(c);
  if (rc != CURLE_OK) throw std::runtime_error(method + " " + url + ": " + curl_easy_strerror(rc));
  return a;
}

std::string origin_of(const std::string& url) {
  auto scheme = url.find("://");
  auto slash = url.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  return slash == std::string::npos ? url : url.substr(0, slash);
}

std::string mint_token(const std::string& sim_url, std::optional<double> ttl) {
  std::string url = origin_of(sim_url) + "/_sim/token";
  if (ttl) url += "?ttl=" + std::to_string(*ttl);
  auto r = call("POST", url);
  if (r.status != 200) throw ProtocolError("POST " + url + ": " + std::to_string(r.status) + " " + r.body);
  auto v = parse_answer("POST " + url, r);
  auto* t = v.is_object() ? v.as_object().if_contains("token") : nullptr;
  if (!t || !t->is_string()) throw ProtocolError("POST " + url + ": no token in " + r.body);
  return std::string(t->as_string());
}

json::value parse_answer(const std::string& what, const Reply& reply) {
  auto parsed = iaapi::parse_json(reply.body);
  if (!parsed) throw ProtocolError(what + ": answer is not JSON: " + parsed.error.what());
  return *parsed.value;
}

std::string pretty(const json::value& v) {
  std::string out;
  pretty_into(out, v, 0);
  return out;
}

bool is_final(const iaapi::Result& r) {
  if (auto* st = r.data.context.if_contains("state"); st && st->is_string() && st->as_string() == "final") return true;
  return r.property("Progress") == nullptr;
}

bool is_failed(const iaapi::Result& r) {
  auto* s = r.property("Status");
  return s && std::holds_alternative<std::string>(*s) && std::get<std::string>(*s) == "failed";
}

}  // namespace iaserve::dpatsim
