#pragma once
// One job, start to end: the per-job pipeline of DESIGN.md ("The path of one
// request", step 5). It knows nothing of the queue: the worker loop (and
// `iaworker process`) maps its JobReport onto Claim::complete / fail / release.
//
//   info -> "analysis started" -> thumbnail + label (DZI tiles in parallel,
//   beside the download) -> WSI download into <data>/<slide_key>/ ->
//   Slide::open -> analysis (progress, cancel checks, time limit) ->
//   result.<app key>.json, overlay.<app key>.png (one pair per app) ->
//   final result upserted over the progress frame.
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <semaphore>
#include <string>
#include <string_view>

#include "iaapi/client.hpp"

namespace iaserve::worker {

class Metrics;

// What one app of the configuration asks the worker to run.
struct AppSettings {
  std::string analysis = "tissue";
  boost::json::object params;
};

struct JobSettings {
  std::filesystem::path data_dir;
  iaapi::ClientOptions client;  // timeouts, retries, TLS (cancelled is set per job)
  std::map<std::string, AppSettings, std::less<>> apps;  // by applicationId
  // Used when the job's app is not in `apps` (iaworker process without a config).
  AppSettings default_app;
  bool unknown_app_uses_default = false;
  unsigned tile_connections = 4;         // parallel, kept-alive clients for DZI tiles
  int thumbnail_max_side = 1024;         // pixels, the longer side
  std::chrono::milliseconds progress_interval{1000};  // at most one upsert per job per interval
  std::chrono::milliseconds cancel_poll{1000};        // how often the cancel mark is read
  std::chrono::milliseconds analysis_time_limit{0};   // 0: none
  int max_attempts = 3;  // the queue's: the last retry also tells the slide
  std::string host_id;   // in logs and metadata.json
};

// The job as the queue holds it, decoded from its payload.
struct JobRequest {
  std::string job_id;
  std::string slide_key;  // the slide's folder name under data_dir
  std::string app_id;
  std::string slide_id;
  iaapi::CallbackInfo callback;
  std::string input_type = "wholeSlide";
  boost::json::value input_content;  // null for wholeSlide
  boost::json::object context;       // DPAT's invocation context, echoed in the result
  // A modify with a pressed patchCollection button: its action id, and the
  // stored result's content as DPAT sent it (the button's state 1).
  std::optional<std::string> action_id;
  boost::json::value action_content;
  int attempts = 0;                  // failed runs before this one
  // The server put an "analysis queued" frame on the slide when it queued
  // the job (create, modify): progress and the result go over that frame,
  // never beside it, even when the job starts before the frame is stored.
  // False for image notifications (no frame) and jobs run by hand.
  bool expect_frame = true;
};

enum class JobStatus {
  done,       // final result on the slide
  failed,     // for good: to failed/ (the slide says "analysis failed: ...")
  retry,      // transient: back to pending with attempts + 1
  cancelled,  // cancel mark seen: "analysis cancelled" on the slide
  released,   // worker stopping: back to pending, attempt not counted
};
std::string_view to_string(JobStatus s);

struct JobReport {
  JobStatus status = JobStatus::failed;
  std::string reason;           // failed / retry: why
  boost::json::object summary;  // done: what the queue records (displayResult, seconds, bytes)
  double seconds = 0;
};

// How the caller steers a running job. Both are polled (cancel_requested
// reads the disk: at most every JobSettings::cancel_poll).
struct JobControl {
  std::function<bool()> cancel_requested;
  std::function<bool()> stop_requested;  // cheap: an atomic flag
  // Bounds the analyses running at once (downloads of other jobs overlap them).
  std::counting_semaphore<>* analysis_slots = nullptr;
  Metrics* metrics = nullptr;
  // Step changes and progress, for a terminal progress bar: step name,
  // fraction 0..1 (negative: unknown), the text shown on the slide.
  std::function<void(std::string_view step, double fraction, std::string_view text)> on_progress;
};

// Reads the queue payload (server/job_payload.hpp); throws std::invalid_argument
// naming the field when it is not a job this worker can run.
JobRequest request_from_payload(const boost::json::object& payload);

// Runs the pipeline; never throws (everything ends in the report).
JobReport run_job(const JobSettings& settings, const JobRequest& request, const JobControl& control);

// The slide folder of a job: data_dir / slide_key, the key checked to be one
// plain path component.
std::filesystem::path slide_folder(const std::filesystem::path& data_dir, std::string_view slide_key);

}  // namespace iaserve::worker
