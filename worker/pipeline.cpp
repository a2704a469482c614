#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <exception>
#include <fstream>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/json/serialize.hpp>

#include "iaapi/decode.hpp"
#include "iaapi/dzi.hpp"
#include "iaapi/log.hpp"
#include "iaapi/messages.hpp"
#include "iaapi/result_builder.hpp"
#include "iaapi/version.hpp"
#include "worker/analysis/analysis.hpp"
#include "worker/job.hpp"
#include "worker/metrics.hpp"
#include "worker/slide/draw.hpp"
#include "worker/slide/image_io.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::worker {
namespace fs = std::filesystem;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;
using iaapi::CallbackError;
using iaapi::CallbackErrorKind;

std::string_view to_string(JobStatus s) {
  switch (s) {
    case JobStatus::done: return "done";
    case JobStatus::failed: return "failed";
    case JobStatus::retry: return "retry";
    case JobStatus::cancelled: return "cancelled";
    case JobStatus::released: return "released";
  }
  return "?";
}

fs::path slide_folder(const fs::path& data_dir, std::string_view slide_key) {
  if (slide_key.empty() || slide_key == "." || slide_key == ".." ||
      slide_key.find_first_of("/\\") != std::string_view::npos ||
      std::any_of(slide_key.begin(), slide_key.end(),
                  [](char c) { return static_cast<unsigned char>(c) < 0x20; }))
    throw std::invalid_argument("slide key \"" + std::string(slide_key) +
                                "\" is not a plain folder name");
  return data_dir / std::string(slide_key);
}

namespace {

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

std::string eta_text(double seconds_left) {
  if (!(seconds_left >= 0) || seconds_left > 48 * 3600) return {};
  long s = std::lround(seconds_left);
  if (s < 60) return " (ETA " + std::to_string(s) + " s)";
  if (s < 3600) return " (ETA " + std::to_string(s / 60) + " min " + std::to_string(s % 60) + " s)";
  return " (ETA " + std::to_string(s / 3600) + " h " + std::to_string((s % 3600) / 60) + " min)";
}

// Under a temporary name of its own: two jobs of the slide (two apps) may
// write at once.
void write_file(const fs::path& path, std::string_view data) {
  static std::atomic<unsigned> counter{0};
  fs::path tmp = path;
  tmp += "." + std::to_string(::getpid()) + "." + std::to_string(counter++) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(data.data(), static_cast<std::streamsize>(data.size()));
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw std::runtime_error("write " + tmp.string() + ": failed");
    }
  }
  fs::rename(tmp, path);
}

// The analysis ended with an error: permanent, its message goes on the slide.
struct AnalysisFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// PUT over the app's newest result on the slide; false when it has none yet.
// A 409 (someone updated it meanwhile) re-lists once.
bool put_over_newest(iaapi::CallbackClient& client, const JobRequest& request, const iaapi::Result& r) {
  for (int attempt = 0;; ++attempt) {
    auto list = client.list_results(request.app_id, request.slide_id);
    if (list.empty()) return false;
    auto newest = std::max_element(list.begin(), list.end(),
                                   [](const auto& a, const auto& b) { return a.id < b.id; });
    iaapi::StoredResult s;
    static_cast<iaapi::Result&>(s) = r;
    s.id = newest->id;
    s.version_id = newest->version_id;
    try {
      client.update_result(request.app_id, s);
      return true;
    } catch (const CallbackError& e) {
      if (e.kind() != CallbackErrorKind::conflict || attempt >= 2) throw;
    }
  }
}

// Progress goes only over an existing result (the server's frame): a
// progress word never becomes a second result beside a frame still on its way.
// Whatever the worker puts on the slide keeps DPAT's context, as the
// server's frame before it did.
iaapi::Result with_context(const JobRequest& request, iaapi::Result r) {
  r.data.context = request.context;
  return r;
}

void put_progress(iaapi::CallbackClient& client, const JobRequest& request, const iaapi::Result& progress) {
  const iaapi::Result r = with_context(request, progress);
  if (!request.expect_frame) {
    client.upsert_result(request.app_id, request.slide_id, r);
    return;
  }
  put_over_newest(client, request, r);
}

// The final word: over the frame; when the frame is not there yet (the job
// started before the server stored it) wait a little for it, then POST.
void put_final(iaapi::CallbackClient& client, const JobRequest& request, const iaapi::Result& final_result,
               const std::function<bool()>& stop) {
  const iaapi::Result r = with_context(request, final_result);
  if (!request.expect_frame) {
    client.upsert_result(request.app_id, request.slide_id, r);
    return;
  }
  const auto until = Clock::now() + std::chrono::seconds(5);
  while (!put_over_newest(client, request, r)) {
    if (Clock::now() >= until || (stop && stop())) {
      client.create_result(request.app_id, r);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
}

// A thrown-out-of-the-pipeline outcome that is not an error.
struct Stop {
  JobStatus status;
};

// Upserts progress on the slide from its own thread and client, so a slow
// DPAT never stalls the download or the analysis: the newest text wins and
// goes out at most once per interval. The same thread reads the queue's
// cancel mark (a disk read) at its own pace and publishes it as a flag.
class Reporter {
 public:
  Reporter(const JobSettings& settings, const JobRequest& request, const JobControl& control)
      : settings_(settings), request_(request), control_(control) {}
  ~Reporter() { stop(); }

  void start(iaapi::ClientOptions options) {
    client_.emplace(request_.callback, std::move(options));
    thread_ = std::thread([this] { loop(); });
  }
  void frame(std::int64_t w, std::int64_t h) {
    std::lock_guard lock(mutex_);
    width_ = w;
    height_ = h;
  }
  // text as shown on the slide; percent < 0: unknown.
  void post(std::string_view step, std::string text, int percent, double fraction) {
    if (control_.on_progress) control_.on_progress(step, fraction, text);
    {
      std::lock_guard lock(mutex_);
      text_ = std::move(text);
      percent_ = percent;
      dirty_ = true;
    }
    cv_.notify_all();
  }
  bool cancelled() const { return cancelled_.load(); }
  bool token_dead() const { return token_dead_.load(); }
  // Stops the thread after the upsert in flight; what is still unsent is dropped
  // (the final result replaces it anyway).
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    auto last_upsert = Clock::time_point{};
    auto last_poll = Clock::now();
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      if (stopping_) break;
      auto now = Clock::now();
      if (control_.cancel_requested && now - last_poll >= settings_.cancel_poll) {
        last_poll = now;
        lock.unlock();
        bool c = false;
        try {
          c = control_.cancel_requested();
        } catch (const std::exception& e) {
          log::get("worker")->warn("job {}: reading the cancel mark: {}", request_.job_id, e.what());
        }
        if (c) cancelled_.store(true);
        lock.lock();
        continue;
      }
      if (!dirty_ || token_dead_ || now - last_upsert < settings_.progress_interval) continue;
      auto result = iaapi::progress_result(request_.slide_id, width_, height_, text_, percent_,
                                           kSoftwareVersion);
      dirty_ = false;
      last_upsert = now;
      lock.unlock();
      try {
        put_progress(*client_, request_, result);
      } catch (const CallbackError& e) {
        if (e.kind() == CallbackErrorKind::token_expired) token_dead_.store(true);
        if (e.kind() != CallbackErrorKind::cancelled)
          log::get("worker")->warn("job {} slide {}: progress upsert: {}", request_.job_id,
                                   request_.slide_id, e.what());
      } catch (const std::exception& e) {
        log::get("worker")->warn("job {} slide {}: progress upsert: {}", request_.job_id,
                                 request_.slide_id, e.what());
      }
      lock.lock();
    }
  }

  const JobSettings& settings_;
  const JobRequest& request_;
  const JobControl& control_;
  std::optional<iaapi::CallbackClient> client_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::string text_;
  int percent_ = -1;
  std::int64_t width_ = 0, height_ = 0;
  bool dirty_ = false, stopping_ = false;
  std::atomic<bool> cancelled_{false}, token_dead_{false};
};

// The thumbnail assembled from DZI tiles of the level that fits
// max_side, fetched in parallel over `connections` kept-alive clients.
slide::Image fetch_thumbnail(const JobSettings& settings, const JobRequest& request,
                             const iaapi::ImageInfo& info, const iaapi::ClientOptions& options,
                             std::uint64_t& tiles_fetched) {
  const std::int64_t tile = info.tile_size.width > 0 ? info.tile_size.width : 256;
  iaapi::Dzi dzi(info.image_size.width, info.image_size.height, tile);
  int level = 0;
  for (int l = dzi.max_level(); l >= 0; --l) {
    auto s = dzi.level_size(l);
    if (std::max(s.width, s.height) <= settings.thumbnail_max_side) {
      level = l;
      break;
    }
  }
  const auto size = dzi.level_size(level);
  const auto grid = dzi.grid(level);
  slide::Image canvas(static_cast<int>(size.width), static_cast<int>(size.height));
  const std::int64_t count = grid.cols * grid.rows;
  std::string ext = "jpg";
  if (info.stored_tile_format && (info.stored_tile_format->extension == "jpeg" ||
                                  info.stored_tile_format->extension == "jpg"))
    ext = info.stored_tile_format->extension;
  std::atomic<std::int64_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  auto worker = [&] {
    try {
      iaapi::CallbackClient client(request.callback, options);
      for (std::int64_t i = next++; i < count; i = next++) {
        {
          std::lock_guard lock(error_mutex);
          if (error) return;
        }
        const std::int64_t col = i % grid.cols, row = i / grid.cols;
        auto bytes = client.get_tile(request.slide_id, level, static_cast<int>(col),
                                     static_cast<int>(row), ext);
        auto r = dzi.tile_rect(level, col, row);
        // A tile is its rectangle (a few pixels of overlap at most): a header
        // claiming more is refused before its pixels are allocated.
        constexpr std::int64_t kSlack = 8;
        auto img = slide::decode_jpeg(bytes, static_cast<int>(r.width + kSlack), static_cast<int>(r.height + kSlack));
        const int w = std::min<int>(img.width, static_cast<int>(r.width));
        const int h = std::min<int>(img.height, static_cast<int>(r.height));
        for (int y = 0; y < h; ++y)
          std::copy_n(img.at(0, y), static_cast<std::size_t>(w) * 3,
                      canvas.at(static_cast<int>(r.x), static_cast<int>(r.y) + y));
      }
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!error) error = std::current_exception();
    }
  };
  const auto threads = static_cast<std::int64_t>(std::max(1u, settings.tile_connections));
  std::vector<std::thread> pool;
  for (std::int64_t t = 1; t < std::min(threads, count); ++t) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  tiles_fetched = static_cast<std::uint64_t>(count);
  return canvas;
}

slide::Image draw_overlay(slide::Image picture, std::int64_t slide_width,
                          const analysis::Outcome& outcome) {
  if (picture.empty() || slide_width <= 0) return picture;
  const double k = static_cast<double>(picture.width) / static_cast<double>(slide_width);
  slide::PolygonStyle style;
  style.stroke = {0, 200, 0, 255};
  style.thickness = 2;
  style.fill = slide::Rgba{0, 200, 0, 60};
  for (const auto& shape : outcome.overlay) {
    std::vector<slide::Ring> rings;
    for (const auto& ring : shape.rings) {
      slide::Ring r;
      r.reserve(ring.size());
      for (const auto& p : ring) r.push_back({p.x * k, p.y * k});
      rings.push_back(std::move(r));
    }
    slide::draw_polygon(picture, rings, style);
    if (!shape.label.empty())
      slide::draw_text(picture, static_cast<int>(shape.label_at.x * k),
                       static_cast<int>(shape.label_at.y * k), shape.label, {0, 90, 0, 255}, 1,
                       slide::Rgba{255, 255, 255, 180});
  }
  if (!outcome.display_result.empty())
    slide::draw_text(picture, 4, 4, outcome.display_result, {0, 0, 0, 255}, 2,
                     slide::Rgba{255, 255, 255, 200});
  return picture;
}

// Where a failure ends: the queue state, and the text for the slide.
struct Failure {
  JobStatus status;
  std::string reason;
  bool tell_slide;  // the token still works
};

Failure classify(const CallbackError& e, bool stopping, bool cancelled) {
  switch (e.kind()) {
    case CallbackErrorKind::token_expired: return {JobStatus::failed, "token expired", false};
    case CallbackErrorKind::not_found:
      return {JobStatus::failed, std::string("slide not found: ") + e.what(), true};
    case CallbackErrorKind::client: return {JobStatus::failed, e.what(), true};
    case CallbackErrorKind::cancelled:
      if (cancelled) return {JobStatus::cancelled, "cancelled", true};
      if (stopping) return {JobStatus::released, "worker stopping", false};
      return {JobStatus::retry, e.what(), false};
    case CallbackErrorKind::conflict:
    case CallbackErrorKind::throttled:
    case CallbackErrorKind::server:
    case CallbackErrorKind::transport:
    case CallbackErrorKind::protocol: return {JobStatus::retry, e.what(), true};
  }
  return {JobStatus::retry, e.what(), true};
}

class Pipeline {
 public:
  Pipeline(const JobSettings& settings, const JobRequest& request, const JobControl& control)
      : settings_(settings), request_(request), control_(control), reporter_(settings, request, control),
        log_(log::get("worker")) {}

  JobReport run();

 private:
  bool stopping() const { return control_.stop_requested && control_.stop_requested(); }
  bool cancelled() const { return reporter_.cancelled(); }
  void check() const {
    if (cancelled()) throw Stop{JobStatus::cancelled};
    if (stopping()) throw Stop{JobStatus::released};
  }
  void step_done(const char* step, Clock::time_point since, std::uint64_t bytes = 0) {
    const double s = seconds_since(since);
    log_->info("job {} slide {} step {} {} {} seconds {:.2f}", request_.job_id,
               request_.slide_id, step, std::string_view(step) == "thumbnail" ? "tiles" : "bytes", bytes, s);
    if (control_.metrics) control_.metrics->step_duration(step, std::chrono::duration<double>(s));
  }
  void write_metadata(const std::vector<fs::path>& files);
  void pipeline();
  void tell_slide(const iaapi::Result& r);

  const JobSettings& settings_;
  const JobRequest& request_;
  const JobControl& control_;
  Reporter reporter_;
  std::shared_ptr<spdlog::logger> log_;
  iaapi::ClientOptions options_;
  std::optional<iaapi::CallbackClient> client_;
  fs::path folder_;
  std::optional<iaapi::ImageInfo> info_;
  json::value info_json_;
  std::uint64_t bytes_ = 0;
  std::string display_result_;
  Clock::time_point start_ = Clock::now();
};

void Pipeline::write_metadata(const std::vector<fs::path>& files) {
  json::object m;
  m["slideId"] = request_.slide_id;
  m["slideKey"] = request_.slide_key;
  m["applicationId"] = request_.app_id;
  m["jobId"] = request_.job_id;
  m["host"] = settings_.host_id;
  m["imageInfo"] = info_json_;
  json::array names;
  for (const auto& f : files) names.push_back(json::value(f.filename().string()));
  m["files"] = std::move(names);
  write_file(folder_ / "metadata.json", json::serialize(m));
}

void Pipeline::tell_slide(const iaapi::Result& r) {
  try {
    iaapi::ClientOptions o = options_;
    o.cancelled = nullptr;
    o.max_attempts = 2;
    iaapi::CallbackClient c(request_.callback, o);
    put_final(c, request_, r, nullptr);
  } catch (const std::exception& e) {
    log_->warn("job {} slide {}: cannot put \"{}\" on the slide: {}", request_.job_id,
               request_.slide_id, r.display_result, e.what());
  }
}

void Pipeline::pipeline() {
  folder_ = slide_folder(settings_.data_dir, request_.slide_key);
  fs::create_directories(folder_);
  fs::permissions(folder_, fs::perms::owner_all, fs::perm_options::replace);

  const AppSettings* app = nullptr;
  if (auto it = settings_.apps.find(request_.app_id); it != settings_.apps.end())
    app = &it->second;
  else if (settings_.unknown_app_uses_default)
    app = &settings_.default_app;
  else
    throw std::invalid_argument("application " + request_.app_id + " is not configured on this worker");

  // 1. slide info
  auto t = Clock::now();
  info_ = client_->get_image_info(request_.slide_id);
  info_json_ = iaapi::to_json(*info_);
  const std::int64_t width = info_->image_size.width, height = info_->image_size.height;
  reporter_.frame(width, height);
  if (control_.on_progress) control_.on_progress("started", 0.0, "analysis started");
  // The first word goes out at once, from this thread: the pathologist sees
  // the job was taken even when all of it takes less than a progress interval.
  put_progress(*client_, request_,
               iaapi::progress_result(request_.slide_id, width, height, "analysis started", 0,
                                      kSoftwareVersion));
  write_metadata({});
  step_done("info", t);
  check();

  // 2. thumbnail and label beside the download
  std::optional<slide::Image> thumbnail;
  std::exception_ptr thumb_error;
  std::thread side([&] {
    auto ts = Clock::now();
    try {
      iaapi::ClientOptions o = options_;
      std::uint64_t tiles = 0;
      thumbnail = fetch_thumbnail(settings_, request_, *info_, o, tiles);
      slide::write_jpeg(folder_ / "thumbnail.jpg", *thumbnail, 85);
      iaapi::CallbackClient c(request_.callback, o);
      if (auto label = c.get_label(request_.slide_id))
        write_file(folder_ / "label.jpg",
                   std::string_view(reinterpret_cast<const char*>(label->data()), label->size()));
      step_done("thumbnail", ts, tiles);
    } catch (...) {
      thumb_error = std::current_exception();
    }
  });
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{side};

  // 3. the WSI
  t = Clock::now();
  std::uint64_t last_bytes = 0;
  auto last_post = Clock::time_point{};
  std::vector<fs::path> files = client_->download_files(
      request_.slide_id, folder_, [&](std::uint64_t done, std::uint64_t total) {
        if (control_.metrics && done > last_bytes) control_.metrics->bytes_downloaded(done - last_bytes);
        last_bytes = done;
        auto now = Clock::now();
        if (now - last_post < std::chrono::milliseconds(200) && done != total) return;
        last_post = now;
        if (total > 0) {
          const double f = static_cast<double>(done) / static_cast<double>(total);
          const double el = seconds_since(t);
          std::string eta = f > 0.02 && el > 1 ? eta_text(el * (1 - f) / f) : std::string();
          const int pct = static_cast<int>(f * 100);
          reporter_.post("download", "downloading " + std::to_string(pct) + " %" + eta, pct, f);
        } else {
          reporter_.post("download", "downloading " + std::to_string(done >> 20) + " MB", 0, -1);
        }
      });
  bytes_ = last_bytes;
  step_done("download", t, bytes_);
  side.join();
  if (thumb_error) {
    try {
      std::rethrow_exception(thumb_error);
    } catch (const CallbackError& e) {
      if (e.kind() == CallbackErrorKind::token_expired || e.kind() == CallbackErrorKind::cancelled) throw;
      log_->warn("job {} slide {}: thumbnail from tiles: {} (drawn from the slide instead)",
                 request_.job_id, request_.slide_id, e.what());
    } catch (const std::exception& e) {
      log_->warn("job {} slide {}: thumbnail from tiles: {} (drawn from the slide instead)",
                 request_.job_id, request_.slide_id, e.what());
    }
  }
  write_metadata(files);
  check();

  // 4. open
  t = Clock::now();
  slide::Slide wsi = slide::Slide::open(slide::prepare_slide_files(files));
  step_done("open", t);
  if (!thumbnail) {
    thumbnail = wsi.thumbnail(settings_.thumbnail_max_side);
    slide::write_jpeg(folder_ / "thumbnail.jpg", *thumbnail, 85);
  }

  // 5. analysis, one of the bounded slots
  if (control_.analysis_slots) {
    reporter_.post("waiting", "analysis waiting", 0, 0.0);
    while (!control_.analysis_slots->try_acquire_for(std::chrono::milliseconds(200))) check();
  }
  struct SlotRelease {
    std::counting_semaphore<>* s;
    ~SlotRelease() {
      if (s) s->release();
    }
  } slot{control_.analysis_slots};
  reporter_.post("analysis", "analysing 0 %", 0, 0.0);
  t = Clock::now();
  analysis::Input input;
  try {
    json::value content = request_.input_content;
    input = analysis::input_from_json(request_.input_type, content,
                                      static_cast<double>(width > 0 ? width : wsi.width()));
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("input: ") + e.what());
  }
  if (request_.action_id) input.action = analysis::Input::Action{*request_.action_id, request_.action_content};
  analysis::Hooks hooks;
  hooks.cancelled = [this] { return cancelled() || stopping(); };
  hooks.time_limit = settings_.analysis_time_limit;
  hooks.scratch_dir = folder_;  // exec's scratch beside the slide, removed with it if a crash leaves it
  hooks.progress = [&, started = Clock::now()](int pct) {
    const double el = seconds_since(started);
    std::string eta = pct >= 5 && el > 1 ? eta_text(el * (100 - pct) / pct) : std::string();
    reporter_.post("analysis", "analysing " + std::to_string(pct) + " %" + eta, pct, pct / 100.0);
  };
  analysis::RunReport run = analysis::run_analysis(app->analysis, wsi, input, app->params, hooks);
  step_done("analysis", t);
  switch (run.status) {
    case analysis::RunStatus::ok: break;
    case analysis::RunStatus::cancelled: check(); throw Stop{JobStatus::cancelled};
    case analysis::RunStatus::failed:
      if (run.transient) throw std::runtime_error(run.error);  // this host's trouble: retried
      throw AnalysisFailed(run.error);
    case analysis::RunStatus::timed_out: throw AnalysisFailed(run.error);
  }
  const analysis::Outcome& outcome = *run.outcome;

  // 6. result, overlay, and the final answer over the progress frame
  t = Clock::now();
  json::object result_doc = analysis::result_json(outcome, request_.slide_id, request_.context);
  auto result = iaapi::decode<iaapi::Result>(result_doc);
  if (!result) throw AnalysisFailed("the analysis result is not a valid IA-API result: " + result.error.what());
  write_file(folder_ / iaapi::result_file_name(request_.app_id), json::serialize(result_doc));
  slide::write_png(folder_ / iaapi::overlay_file_name(request_.app_id), draw_overlay(*thumbnail, width > 0 ? width : wsi.width(), outcome));
  check();
  reporter_.stop();
  put_final(*client_, request_, *result, [this] { return stopping(); });
  display_result_ = outcome.display_result;
  step_done("result", t);
}

JobReport Pipeline::run() {
  JobReport report;
  options_ = settings_.client;
  options_.cancelled = [this] { return cancelled() || stopping(); };
  log_->info("job {} slide {} app {}: started (attempt {})", request_.job_id, request_.slide_id,
             request_.app_id, request_.attempts + 1);
  std::optional<Failure> failure;
  try {
    client_.emplace(request_.callback, options_);
    reporter_.start(options_);
    pipeline();
    report.status = JobStatus::done;
  } catch (const Stop& s) {
    failure = Failure{s.status, s.status == JobStatus::cancelled ? "cancelled" : "worker stopping",
                      s.status == JobStatus::cancelled};
  } catch (const CallbackError& e) {
    failure = classify(e, stopping(), cancelled());
  } catch (const slide::SlideError& e) {
    if (e.kind() == slide::SlideError::Kind::io)
      failure = Failure{JobStatus::retry, e.what(), true};
    else
      failure = Failure{JobStatus::failed,
                        std::string(e.kind() == slide::SlideError::Kind::unsupported ? "unsupported slide: "
                                                                                      : "unreadable slide: ") +
                            e.what(),
                        true};
  } catch (const std::invalid_argument& e) {
    failure = Failure{JobStatus::failed, e.what(), true};
  } catch (const AnalysisFailed& e) {
    failure = Failure{JobStatus::failed, e.what(), true};
  } catch (const std::exception& e) {  // disk full, I/O: another try may do better
    failure = Failure{JobStatus::retry, e.what(), true};
  }
  reporter_.stop();
  report.seconds = seconds_since(start_);
  if (failure) {
    report.status = failure->status;
    report.reason = failure->reason;
    if (reporter_.token_dead() && failure->status != JobStatus::released) {
      report.status = JobStatus::failed;
      report.reason = "token expired";
      failure->tell_slide = false;
    }
    const bool last_try = report.status == JobStatus::retry && request_.attempts + 1 >= settings_.max_attempts;
    const std::int64_t w = info_ ? info_->image_size.width : 0, h = info_ ? info_->image_size.height : 0;
    if (failure->tell_slide && (report.status == JobStatus::failed || last_try))
      tell_slide(iaapi::failed_result(request_.slide_id, w, h, report.reason, kSoftwareVersion));
    else if (report.status == JobStatus::cancelled)
      tell_slide(iaapi::progress_result(request_.slide_id, w, h, "analysis cancelled", -1, kSoftwareVersion));
    log_->log(report.status == JobStatus::released ? spdlog::level::info : spdlog::level::warn,
              "job {} slide {}: {} after {:.2f} s: {}", request_.job_id, request_.slide_id,
              to_string(report.status), report.seconds, report.reason);
  } else {
    report.summary["displayResult"] = display_result_;
    report.summary["seconds"] = report.seconds;
    report.summary["bytes"] = bytes_;
    report.summary["host"] = settings_.host_id;
    log_->info("job {} slide {}: done in {:.2f} s: {}", request_.job_id, request_.slide_id,
               report.seconds, display_result_);
  }
  if (control_.metrics) control_.metrics->job_finished(request_.app_id, std::string(to_string(report.status)));
  return report;
}

}  // namespace

JobReport run_job(const JobSettings& settings, const JobRequest& request, const JobControl& control) {
  try {
    Pipeline p(settings, request, control);
    return p.run();
  } catch (const std::exception& e) {  // only allocation failures and the like get here
    JobReport r;
    r.status = JobStatus::retry;
    r.reason = e.what();
    return r;
  }
}

}  // namespace iaserve::worker
