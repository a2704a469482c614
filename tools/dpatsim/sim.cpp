#include "tools/dpatsim/sim.hpp"
#include "iaapi/timestamp.hpp"

#include <boost/json.hpp>
#include <spdlog/spdlog.h>

#include <ctime>
#include <deque>
#include <list>
#include <mutex>
#include <random>
#include <regex>
#include <thread>
#include <unordered_map>

#include "iaapi/dzi.hpp"
#include "iaapi/log.hpp"
#include "iaapi/messages.hpp"
#include "iaapi/thread_pool.hpp"
#include "iaapi/version.hpp"
#include "server/http/server.hpp"
#include "tools/dpatsim/catalog.hpp"
#include "tools/dpatsim/store.hpp"
#include "worker/slide/image_io.hpp"

namespace iaserve::dpatsim {
namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using http::Request;
using http::Responder;
using http::Response;

namespace {

Response json_answer(unsigned status, const json::value& v) { return Response::json(status, json::serialize(v)); }

Response error_answer(unsigned status, const std::string& message, const std::string& field = {}) {
  json::object o{{"error", message}};
  if (!field.empty()) o["field"] = field;
  return json_answer(status, o);
}

std::vector<std::string> split_path(std::string_view p) {
  std::vector<std::string> out;
  std::size_t i = 0;
  while (i <= p.size()) {
    auto j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    if (j > i) out.emplace_back(p.substr(i, j - i));
    i = j + 1;
  }
  return out;
}


bool parse_int(std::string_view s, std::int64_t& out) {
  if (s.empty() || s.size() > 12) return false;
  std::int64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  out = v;
  return true;
}

// Least recently used tiles, bounded by their bytes.
class TileCache {
 public:
  explicit TileCache(std::size_t max_bytes) : max_bytes_(max_bytes) {}
  std::shared_ptr<const std::string> get(const std::string& key) {
    std::lock_guard lock(mutex_);
    auto it = map_.find(key);
    if (it == map_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }
  void put(const std::string& key, std::shared_ptr<const std::string> value) {
    std::lock_guard lock(mutex_);
    if (value->size() > max_bytes_ || map_.count(key)) return;
    order_.emplace_front(key, value);
    map_[key] = order_.begin();
    bytes_ += value->size();
    while (bytes_ > max_bytes_ && !order_.empty()) {
      bytes_ -= order_.back().second->size();
      map_.erase(order_.back().first);
      order_.pop_back();
    }
  }

 private:
  using Item = std::pair<std::string, std::shared_ptr<const std::string>>;
  std::size_t max_bytes_, bytes_ = 0;
  std::mutex mutex_;
  std::list<Item> order_;
  std::unordered_map<std::string, std::list<Item>::iterator> map_;
};

struct Call {
  std::string method, path, time;
  unsigned status = 0;
  double elapsed_ms = 0;
};

}  // namespace

struct Simulator::Impl {
  SimOptions opt;
  std::shared_ptr<spdlog::logger> log = iaserve::log::get("sim");
  Catalog catalog;
  Store store;
  TileCache tiles;
  ThreadPool pool;
  std::optional<std::regex> fault_filter;

  std::mutex mutex;  // tokens, dice, calls, hung
  std::unordered_map<std::string, std::optional<Clock::time_point>> tokens;
  std::mt19937_64 dice;
  std::mt19937_64 token_rng{std::random_device{}()};
  std::deque<Call> calls;
  std::vector<Responder> hung;

  std::unique_ptr<http::Server> server;

  explicit Impl(SimOptions o)
      : opt(std::move(o)),
        catalog(opt.slides, opt.tile_size),
        store(opt.state_file),
        tiles(opt.tile_cache_bytes),
        pool(opt.tile_threads ? opt.tile_threads : std::max(1u, std::thread::hardware_concurrency()), 512),
        dice(opt.seed ? *opt.seed : std::random_device{}()) {
    if (!opt.fault_routes.empty()) {
      try {
        fault_filter.emplace(opt.fault_routes, std::regex::ECMAScript);
      } catch (const std::regex_error& e) {
        throw std::runtime_error("--fault-routes " + opt.fault_routes + ": " + e.what());
      }
    }
    if (!opt.base.empty() && opt.base.front() != '/') opt.base = "/" + opt.base;
    while (!opt.base.empty() && opt.base.back() == '/') opt.base.pop_back();
    if (!opt.fixed_token.empty()) tokens[opt.fixed_token] = std::nullopt;

    http::Options ho;
    ho.listen = opt.listen;
    ho.io_threads = opt.io_threads;
    ho.body_limit = 64u << 20;
    ho.tls_cert = opt.tls_cert;
    ho.tls_key = opt.tls_key;
    ho.default_headers = {{"X-Sectra-ApiVersion", kApiVersion},
                          {"X-Sectra-SoftwareVersion", std::string("dpatsim ") + kSoftwareVersion}};
    ho.on_complete = [this](const http::Completed& c) { record(c); };
    server = std::make_unique<http::Server>(ho, [this](Request&& req, Responder r) { handle(std::move(req), r); });
  }

  std::string mint(std::optional<double> ttl) {
    std::lock_guard lock(mutex);
    char buf[65];
    std::snprintf(buf, sizeof buf, "%016llx%016llx%016llx%016llx", static_cast<unsigned long long>(token_rng()),
                  static_cast<unsigned long long>(token_rng()), static_cast<unsigned long long>(token_rng()),
                  static_cast<unsigned long long>(token_rng()));
    std::optional<Clock::time_point> expiry;
    if (ttl) expiry = Clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(*ttl * 1000));
    tokens[buf] = expiry;
    return buf;
  }

  // nullopt when the request carries a live token, else why not.
  std::optional<std::string> auth_problem(const Request& req) {
    auto h = req.header("Authorization");
    if (h.empty()) return "missing Authorization: Bearer token";
    constexpr std::string_view prefix = "Bearer ";
    if (h.size() <= prefix.size() || h.substr(0, prefix.size()) != prefix)
      return "Authorization is not a Bearer token";
    std::string token(h.substr(prefix.size()));
    std::lock_guard lock(mutex);
    auto it = tokens.find(token);
    if (it == tokens.end()) return "unknown bearer token";
    if (it->second && Clock::now() >= *it->second) return "bearer token expired";
    return std::nullopt;
  }

  void record(const http::Completed& c) {
    if (c.path.rfind("/_sim/", 0) == 0) return;
    std::lock_guard lock(mutex);
    calls.push_back({c.method, c.path, iaapi::utc_now_iso(), c.status, static_cast<double>(c.elapsed.count()) / 1000.0});
    if (calls.size() > 10000) calls.pop_front();
  }

  void handle(Request&& req, Responder r) {
    if (req.path.rfind("/_sim/", 0) == 0) return sim_route(req, r);
    std::string_view path = req.path;
    if (path.substr(0, opt.base.size()) != opt.base ||
        (path.size() > opt.base.size() && path[opt.base.size()] != '/'))
      return r(error_answer(404, "no route " + req.path + " (the callback API is under " + opt.base + ")"));
    std::string rel(path.substr(opt.base.size()));
    if (auto problem = auth_problem(req)) {
      auto answer = error_answer(401, *problem);
      answer.header("WWW-Authenticate", "Bearer");
      return r(std::move(answer));
    }
    bool faulty = !fault_filter || std::regex_search(req.method + " " + rel, *fault_filter);
    if (faulty && (opt.hang_rate > 0 || opt.fail_rate > 0)) {
      double a, b;
      int which;
      {
        std::lock_guard lock(mutex);
        std::uniform_real_distribution<double> u(0, 1);
        a = u(dice);
        b = u(dice);
        which = static_cast<int>(dice() % opt.fail_statuses.size());
      }
      if (a < opt.hang_rate) {
        log->info("fault: hanging {} {}", req.method, rel);
        std::lock_guard lock(mutex);
        calls.push_back({req.method, req.path, iaapi::utc_now_iso(), 0, 0});
        std::erase_if(hung, [](const Responder& h) { return h.client_gone(); });
        hung.push_back(r);
        return;
      }
      if (b < opt.fail_rate) {
        unsigned status = opt.fail_statuses[static_cast<std::size_t>(which)];
        log->info("fault: {} for {} {}", status, req.method, rel);
        return later(faulty, r, error_answer(status, "injected fault"));
      }
    }
    if (faulty && opt.latency_ms > 0) {
      auto shared = std::make_shared<Request>(std::move(req));
      server->schedule(std::chrono::milliseconds(opt.latency_ms),
                       [this, shared, r, rel] { route(*shared, rel, r); });
      return;
    }
    route(req, rel, r);
  }

  void later(bool faulty, Responder r, Response answer) {
    if (faulty && opt.latency_ms > 0)
      server->schedule(std::chrono::milliseconds(opt.latency_ms), [r, a = std::move(answer)]() mutable { r(std::move(a)); });
    else
      r(std::move(answer));
  }

  void sim_route(const Request& req, Responder r) {
    auto parts = split_path(req.path);
    std::string what = parts.size() >= 2 ? parts[1] : "";
    if (what == "token" && (req.method == "POST" || req.method == "GET")) {
      std::optional<double> ttl = opt.token_ttl;
      if (auto t = req.query_param("ttl")) {
        try {
          ttl = std::stod(*t);
        } catch (const std::exception&) {
          return r(error_answer(400, "ttl " + *t + " is not a number of seconds", "ttl"));
        }
      }
      auto token = mint(ttl);
      json::object o{{"token", token}};
      o["expiresInSeconds"] = ttl ? json::value(*ttl) : json::value(nullptr);
      return r(json_answer(200, o));
    }
    if (what == "slides" && req.method == "GET") {
      json::array list;
      for (const auto& s : catalog.slides()) {
        json::array files;
        for (const auto& f : s.files) files.push_back(json::string(f.string()));
        list.push_back(json::object{{"id", s.id},
                                    {"mainFile", s.main_file.string()},
                                    {"files", std::move(files)},
                                    {"width", s.width},
                                    {"height", s.height},
                                    {"micronsPerPixel", s.mpp},
                                    {"accessionNumber", s.case_data.accession_number}});
      }
      return r(json_answer(200, list));
    }
    if (what == "results" && req.method == "GET") return r(json_answer(200, store.all(req.query_param("slide").value_or(""))));
    if (what == "calls") {
      std::lock_guard lock(mutex);
      if (req.method == "DELETE") {
        calls.clear();
        return r(json_answer(200, json::object{}));
      }
      json::array list;
      for (const auto& c : calls)
        list.push_back(json::object{{"method", c.method},
                                    {"path", c.path},
                                    {"status", c.status},
                                    {"time", c.time},
                                    {"elapsedMs", c.elapsed_ms}});
      return r(json_answer(200, list));
    }
    r(error_answer(404, "no simulator route " + req.method + " " + req.path));
  }

  // The callback API proper; rel is the path under the base.
  void route(const Request& req, const std::string& rel, Responder r) {
    auto raw = split_path(rel);
    std::vector<std::string> p;
    for (const auto& seg : raw) {
      auto d = http::percent_decode(seg);
      if (!d) return r(error_answer(400, "bad percent escape in path segment " + seg));
      p.push_back(std::move(*d));
    }
    const auto& m = req.method;
    bool get = m == "GET" || m == "HEAD";
    try {
      if (p.size() == 1 && p[0] == "info" && get)
        return r(json_answer(200, iaapi::to_json(iaapi::ApplicationInfo{
                                      kApiVersion, std::string("dpatsim ") + kSoftwareVersion})));
      if (p.size() >= 3 && p[0] == "slides") {
        const SlideEntry* s = catalog.find(p[1]);
        if (!s) return r(error_answer(404, "slide " + p[1] + " not found"));
        if (p.size() == 3 && p[2] == "info" && get) {
          bool extended = req.query_param("scope").value_or("") == "extended";
          bool phi = req.query_param("includePHI").value_or("") == "true";
          return r(json_answer(200, iaapi::to_json(catalog.image_info(*s, extended, phi, store.quality_control(s->id)))));
        }
        if (p.size() == 3 && p[2] == "label" && get) return label(*s, r);
        if (p.size() == 3 && p[2] == "files" && get) return files(*s, r);
        if (p.size() == 5 && p[2] == "request" && p[3] == "images" && p[4] == "info" && get)
          return case_images(s->case_data.accession_number, req.query_param("includePHI").value_or("") == "true", r);
        if (p.size() == 3 && p[2] == "qualityControl" && m == "PUT") return quality_control(*s, req, r);
      }
      if (p.size() == 4 && p[0] == "requests" && p[2] == "images" && p[3] == "info" && get)
        return case_images(p[1], req.query_param("includePHI").value_or("") == "true", r);
      if (p.size() == 4 && p[0] == "images" && get) return tile(p[1], p[2], p[3], req, r);
      if (p.size() >= 3 && p[0] == "applications" && p[2] == "results") {
        const std::string& app = p[1];
        if (p.size() == 3 && m == "POST") return create_result(app, req, r);
        if (p.size() == 5 && p[3] == "slide" && get) {
          return r(Response::json(200, store.list_text(app, p[4])));
        }
        std::int64_t id = 0;
        if (p.size() == 4 && parse_int(p[3], id)) {
          if (get) {
            auto o = store.get(app, id);
            if (!o) return r(error_answer(404, "result " + p[3] + " of application " + app + " not found"));
            return r(json_answer(200, *o));
          }
          if (m == "PUT") return update_result(app, id, req, r);
        }
        if (p.size() == 4 && !parse_int(p[3], id)) return r(error_answer(404, "result id " + p[3] + " is not a number"));
      }
    } catch (const StoreError& e) {
      return r(error_answer(e.status, e.what()));
    }
    r(error_answer(404, "no route " + m + " " + rel));
  }

  void case_images(const std::string& accession, bool phi, Responder r) {
    std::vector<iaapi::CaseImageInfo> list;
    for (const auto& s : catalog.slides())
      if (s.case_data.accession_number == accession) list.push_back(catalog.case_image_info(s, phi));
    if (list.empty()) return r(error_answer(404, "no request with accession number " + accession));
    r(json_answer(200, iaapi::to_json(list)));
  }

  void files(const SlideEntry& s, Responder r) {
    Response res;
    auto disposition = [](const fs::path& f) {
      return "attachment; filename=\"" + f.filename().string() + "\"";
    };
    std::error_code ec;
    if (s.files.size() == 1) {
      auto size = fs::file_size(s.files[0], ec);
      if (ec) return r(error_answer(500, "cannot read " + s.files[0].filename().string() + ": " + ec.message()));
      res.headers = {{"Content-Type", "application/octet-stream"}, {"Content-Disposition", disposition(s.files[0])}};
      res.body.emplace_back(http::FileRange{s.files[0], 0, size});
      return r(std::move(res));
    }
    // Several files: multipart/related, one part per file, each with its name.
    char boundary[48];
    std::snprintf(boundary, sizeof boundary, "dpatsim-%016llx",
                  static_cast<unsigned long long>(std::hash<std::string>{}(s.id) ^ 0x5eed5eedull));
    res.headers = {{"Content-Type", std::string("multipart/related; type=\"application/octet-stream\"; boundary=") + boundary}};
    std::string sep;
    for (const auto& f : s.files) {
      auto size = fs::file_size(f, ec);
      if (ec) return r(error_answer(500, "cannot read " + f.filename().string() + ": " + ec.message()));
      res.body.emplace_back(sep + "--" + boundary + "\r\nContent-Type: application/octet-stream\r\nContent-Disposition: " +
                            disposition(f) + "\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n");
      res.body.emplace_back(http::FileRange{f, 0, size});
      sep = "\r\n";
    }
    res.body.emplace_back("\r\n--" + std::string(boundary) + "--\r\n");
    r(std::move(res));
  }

  void label(const SlideEntry& s, Responder r) {
    bool queued = pool.post([this, &s, r] {
      try {
        auto sl = catalog.open(s);
        if (!sl->has_associated_image("label")) return r(Response{204, {}, {}});
        auto img = sl->associated_image("label");
        auto bytes = slide::encode_jpeg(img, opt.jpeg_quality);
        Response res = Response::text(200, "image/jpeg", std::string(bytes.begin(), bytes.end()));
        r(std::move(res));
      } catch (const std::exception& e) {
        log->error("label of {}: {}", s.id, e.what());
        r(error_answer(500, "label of " + s.id + ": " + e.what()));
      }
    });
    if (!queued) r(error_answer(503, "too many image requests queued"));
  }

  // /images/{slideId}_files/{level}/{col}_{row}[_{focalPlane}].{ext}
  void tile(const std::string& dir, const std::string& level_s, const std::string& name, const Request& req,
            Responder r) {
    constexpr std::string_view suffix = "_files";
    if (dir.size() <= suffix.size() || dir.substr(dir.size() - suffix.size()) != suffix)
      return r(error_answer(404, "tile folder " + dir + " does not end in _files"));
    std::string id = dir.substr(0, dir.size() - suffix.size());
    const SlideEntry* s = catalog.find(id);
    if (!s) return r(error_answer(404, "slide " + id + " not found"));
    auto dot = name.rfind('.');
    if (dot == std::string::npos) return r(error_answer(404, "tile " + name + ": no extension"));
    std::string ext = name.substr(dot + 1);
    if (ext != "jpg" && ext != "jpeg" && ext != "png")
      return r(error_answer(404, "tile format " + ext + " not available (jpg, jpeg, png)"));
    std::vector<std::string> nums;
    {
      std::string_view c = std::string_view(name).substr(0, dot);
      std::size_t i = 0;
      while (i <= c.size()) {
        auto j = c.find('_', i);
        if (j == std::string_view::npos) j = c.size();
        nums.emplace_back(c.substr(i, j - i));
        i = j + 1;
      }
    }
    std::int64_t level = 0, col = 0, row = 0, focal = 0;
    if (!parse_int(level_s, level) || nums.size() < 2 || nums.size() > 3 || !parse_int(nums[0], col) ||
        !parse_int(nums[1], row) || (nums.size() == 3 && !parse_int(nums[2], focal)))
      return r(error_answer(404, "tile " + level_s + "/" + name + ": expected {level}/{col}_{row}[_{focalPlane}].{ext}"));
    if (focal != 0) return r(error_answer(404, "focal plane " + std::to_string(focal) + " not found (only 0)"));
    if (auto op = req.query_param("opticalPath"); op && *op != "0")
      return r(error_answer(404, "optical path " + *op + " not found (only 0)"));
    iaapi::Dzi dzi(s->width, s->height, catalog.tile_size());
    iaapi::PixelRect rect, rect0;
    try {
      if (level > 64) throw std::out_of_range("level " + level_s + " out of range [0," + std::to_string(dzi.level_count()) + ")");
      rect = dzi.tile_rect(static_cast<int>(level), col, row);
      rect0 = dzi.tile_rect_level0(static_cast<int>(level), col, row);
    } catch (const std::out_of_range& e) {
      return r(error_answer(404, e.what()));
    }
    std::string key = s->id + "/" + std::to_string(level) + "/" + std::to_string(col) + "_" + std::to_string(row) +
                      (ext == "png" ? ".png" : ".jpg");
    std::string mime = ext == "png" ? "image/png" : "image/jpeg";
    if (auto cached = tiles.get(key)) return r(Response::text(200, mime, *cached));
    auto ds = static_cast<double>(dzi.downsample(static_cast<int>(level)));
    bool queued = pool.post([this, s, r, key, mime, rect, rect0, ds, png = ext == "png"] {
      if (r.client_gone()) return;
      try {
        auto sl = catalog.open(*s);
        auto img = sl->read(rect0.x, rect0.y, rect0.width, rect0.height, ds);
        if (img.width != rect.width || img.height != rect.height) {
          if (img.width >= rect.width && img.height >= rect.height)
            img = slide::crop(img, 0, 0, static_cast<int>(rect.width), static_cast<int>(rect.height));
          else
            img = slide::resize(img, static_cast<int>(rect.width), static_cast<int>(rect.height));
        }
        auto bytes = png ? slide::encode_png(img) : slide::encode_jpeg(img, opt.jpeg_quality);
        auto body = std::make_shared<const std::string>(bytes.begin(), bytes.end());
        tiles.put(key, body);
        r(Response::text(200, mime, *body));
      } catch (const std::exception& e) {
        log->error("tile {}: {}", key, e.what());
        r(error_answer(500, "tile " + key + ": " + e.what()));
      }
    });
    if (!queued) r(error_answer(503, "too many image requests queued"));
  }

  // The body as a JSON object and as a decoded Result; a 400 naming the field otherwise.
  std::optional<json::object> result_body(const Request& req, Responder& r) {
    auto parsed = iaapi::parse_json(req.body);
    if (!parsed) {
      r(error_answer(400, parsed.error.what(), parsed.error.field.empty() ? "body" : parsed.error.field));
      return std::nullopt;
    }
    if (!parsed.value->is_object()) {
      r(error_answer(400, std::string("body: expected object, got ") + iaapi::json_kind_name(*parsed.value), "body"));
      return std::nullopt;
    }
    auto decoded = iaapi::decode<iaapi::Result>(*parsed.value);
    if (!decoded) {
      r(error_answer(400, decoded.error.what(), decoded.error.field));
      return std::nullopt;
    }
    if (!catalog.find(decoded->slide_id)) {
      r(error_answer(400, "field slideId: no slide " + decoded->slide_id, "slideId"));
      return std::nullopt;
    }
    return std::move(parsed.value->as_object());
  }

  void create_result(const std::string& app, const Request& req, Responder r) {
    auto body = result_body(req, r);
    if (!body) return;
    body->erase("id");
    r(Response::json(201, store.create_text(app, std::move(*body))));
  }

  void update_result(const std::string& app, std::int64_t id, const Request& req, Responder r) {
    auto body = result_body(req, r);
    if (!body) return;
    if (auto* bid = body->if_contains("id"); bid && !(bid->is_int64() && bid->as_int64() == id))
      return r(error_answer(400, "field id: " + json::serialize(*bid) + " does not match the route's " + std::to_string(id), "id"));
    r(Response::json(200, store.update_text(app, id, std::move(*body))));
  }

  void quality_control(const SlideEntry& s, const Request& req, Responder r) {
    auto decoded = iaapi::decode_body<iaapi::QualityControl>(req.body);
    if (!decoded) return r(error_answer(400, decoded.error.what(), decoded.error.field));
    auto q = store.set_quality_control(s.id, decoded->quality_control.status, decoded->quality_control.version_id,
                                       decoded->application_version);
    r(json_answer(200, json::object{{"status", iaapi::to_string(q.status)}, {"versionId", q.version_id}}));
  }
};

Simulator::Simulator(SimOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Simulator::~Simulator() { stop(); }

std::string Simulator::callback_url() const { return impl_->server->base_url() + impl_->opt.base; }

void Simulator::start() { impl_->server->start(); }

void Simulator::run_until_signal() {
  impl_->server->run_until_signal(std::chrono::seconds(5));
  stop();
}

void Simulator::stop() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->hung.clear();
  }
  impl_->server->stop(std::chrono::seconds(5));
  impl_->pool.stop();
  impl_->store.flush();
}

}  // namespace iaserve::dpatsim
