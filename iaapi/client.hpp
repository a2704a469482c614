#pragma once
// The IA-API callback client: the app calling DPAT back (IA-API.md,
// "Outbound"). libcurl underneath, one easy handle per client so the
// connection to DPAT is kept alive between calls. Blocking and
// thread-compatible: one client per thread or job, never shared unlocked.
//
// Every request sends Authorization: Bearer <token>, X-Sectra-ApiVersion
// and Accept: application/json. Connection errors, timeouts, 5xx and 429 are
// retried with exponential backoff and jitter (Retry-After honoured),
// bounded by ClientOptions::max_attempts and ::max_retry_time; other 4xx
// never are. A POST (not idempotent) is retried only when DPAT cannot have
// acted on it: connection refused, 429, 503. Failures are CallbackError,
// whose message names the step and the status and never the token:
//   "PUT /applications/tissue/results/12: 409 Conflict: stale versionId".
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "iaapi/messages.hpp"

namespace iaserve::iaapi {

using Bytes = std::vector<std::uint8_t>;

enum class CallbackErrorKind {
  token_expired,  // 401: the invocation's token died; report, never retry
  not_found,      // 404
  conflict,       // 409 (stale versionId on PUT)
  throttled,      // 429, after the retries: DPAT asks for fewer requests; try later
  client,         // any other 4xx
  server,         // 5xx, after the retries
  transport,      // connection / timeout, after the retries
  protocol,       // an answer the client cannot use (malformed JSON, multipart, file name)
  cancelled,      // ClientOptions::cancelled said stop
};
const char* to_string(CallbackErrorKind kind);

class CallbackError : public std::runtime_error {
 public:
  CallbackError(CallbackErrorKind kind, long status, const std::string& message)
      : std::runtime_error(message), kind_(kind), status_(status) {}
  CallbackErrorKind kind() const { return kind_; }
  long status() const { return status_; }  // HTTP status, 0 when none
 private:
  CallbackErrorKind kind_;
  long status_;
};

struct ClientOptions {
  std::chrono::milliseconds connect_timeout{10'000};
  // Whole request, JSON and image routes. Downloads have their own limit.
  std::chrono::milliseconds total_timeout{60'000};
  // 0 = no limit on the whole download; the low-speed limit still applies.
  std::chrono::milliseconds download_timeout{0};
  // Give up when fewer than low_speed_bytes a second arrive, on average,
  // for low_speed_time: a DPAT trickling a few bytes is as dead as a silent
  // one (a slide is hundreds of MB; 1 KiB/s would take days).
  long low_speed_bytes = 1024;
  std::chrono::seconds low_speed_time{30};
  int max_attempts = 4;                              // first try included
  std::chrono::milliseconds max_retry_time{60'000};  // most time one call waits between its attempts
  std::chrono::milliseconds backoff_initial{250};
  std::chrono::milliseconds backoff_max{8'000};
  std::size_t max_body_bytes = 64u << 20;  // JSON, label, tile answers
  bool verify_tls = true;
  std::string ca_file;  // empty: the system's CA store
  // Polled during transfers and between retries; true aborts with kind cancelled.
  std::function<bool()> cancelled;
};

// bytes_done so far, total when known (Content-Length of the answer) else 0.
using ProgressFn = std::function<void(std::uint64_t bytes_done, std::uint64_t total)>;

class CallbackClient {
 public:
  CallbackClient(CallbackInfo callback, ClientOptions options = {});
  ~CallbackClient();
  CallbackClient(CallbackClient&&) noexcept;
  CallbackClient& operator=(CallbackClient&&) noexcept;
  CallbackClient(const CallbackClient&) = delete;
  CallbackClient& operator=(const CallbackClient&) = delete;

  // Points the client at another invocation's callback URL and token while
  // keeping its connection: a server answering many invocations keeps one
  // client per thread instead of connecting anew for every request.
  void rebind(CallbackInfo callback);
  const CallbackInfo& callback() const;

  // GET /info: DPAT's {apiVersion, softwareVersion}.
  ApplicationInfo get_info();
  // GET /slides/{id}/info[?scope=extended][&includePHI=true]: an ImageInfo.
  ImageInfo get_image_info(std::string_view slide_id, bool extended = false,
                           bool include_phi = false);
  // GET /slides/{id}/label: image bytes, nullopt on 204 (no label).
  std::optional<Bytes> get_label(std::string_view slide_id);
  // GET /images/{id}_files/{level}/{col}_{row}[_{focal}].{ext}[?opticalPath=]
  Bytes get_tile(std::string_view slide_id, int level, int col, int row,
                 std::string_view ext = "jpg", std::optional<int> focal_plane = std::nullopt,
                 std::string_view optical_path = {});

  // Results of one app. A stored Result carries id (int) and versionId.
  std::vector<StoredResult> list_results(std::string_view app_id, std::string_view slide_id);
  StoredResult get_result(std::string_view app_id, std::int64_t id);
  // POST; DPAT answers 201 (200 accepted) with the stored result.
  StoredResult create_result(std::string_view app_id, const Result& result);
  // PUT /applications/{app}/results/{result.id}; result.version_id must be the
  // version it replaces (409 conflict otherwise).
  StoredResult update_result(std::string_view app_id, const StoredResult& result);
  // One result of the app per slide: list, PUT over the newest (highest id)
  // with its versionId, else POST. A 409 (someone updated it meanwhile)
  // re-lists and retries, twice at most.
  StoredResult upsert_result(std::string_view app_id, std::string_view slide_id,
                             const Result& result);

  // GET /requests/{accession}/images/info[?includePHI=true][&accessionNumberIssuerId=]
  std::vector<CaseImageInfo> get_case_images(std::string_view accession_number,
                                             bool include_phi = false,
                                             std::string_view issuer_id = {});
  // GET /slides/{id}/request/images/info
  std::vector<CaseImageInfo> get_slide_case_images(std::string_view slide_id);
  // PUT /slides/{id}/qualityControl {applicationVersion, qualityControl {status, versionId}}
  void put_quality_control(std::string_view slide_id, const QualityControl& qc);

  // GET /slides/{id}/files into `folder` (created if absent); the paths of
  // the slide's files, in the order DPAT sent them. Streams with constant
  // memory; each file is written as NAME.part, fsynced, then renamed.
  // A manifest (folder/.iaserve-download) records each finished file with its
  // size and, once all arrived, the slide id and "complete": a repeat call
  // for a complete, unchanged folder makes no request at all; a repeat after
  // an interrupted download re-requests but does not rewrite files the
  // manifest lists with their size. On any failure the .part files are
  // removed and no partial file stands under a final name. Errors: CallbackError
  // (bad answers, unsafe file names: kind protocol), std::system_error or
  // std::filesystem::filesystem_error for the local disk, naming the file.
  std::vector<std::filesystem::path> download_files(std::string_view slide_id,
                                                    const std::filesystem::path& folder,
                                                    const ProgressFn& progress = {});

  // The number of HTTP requests sent (retries included); for tests and logs.
  std::uint64_t requests_sent() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The outcome of an asynchronous call: the value, or the error (a
// CallbackError) that ended it.
template <class T>
struct CallOutcome {
  std::optional<T> value;
  std::exception_ptr error;
};

// Callbacks without a thread per request, for a server answering many
// invocations at once. Two lanes, each one thread: plain http:// calls go
// over Asio (Beast), https:// calls, and all calls when a proxy is set in
// the environment (http_proxy, all_proxy), over one curl multi handle. In
// each lane connections are kept alive and at most max_transfers requests
// run at once, all hosts together: more wait in line, their timeouts
// starting when their requests do. A call's completion runs on its lane's
// thread, so completions must be quick and must not block. Same headers,
// timeouts, TLS, retries (on a timer, no thread asleep) and error texts as
// CallbackClient; ClientOptions::cancelled is checked before each attempt.
// Thread-safe: any thread may start calls. A completion may start the next
// call of a sequence (taken even while stop() gives its grace) but must not
// stop or destroy the engine; nor may one thread destroy it while another
// still starts calls.
class CallbackEngine {
 public:
  template <class T>
  using Done = std::function<void(CallOutcome<T>)>;

  explicit CallbackEngine(ClientOptions options = {}, long max_transfers = 16);
  ~CallbackEngine();  // stop(0)
  CallbackEngine(const CallbackEngine&) = delete;
  CallbackEngine& operator=(const CallbackEngine&) = delete;

  // Takes no new calls (they complete at once, cancelled), lets those in
  // flight finish for up to `grace`, cancels the rest and ends the thread.
  void stop(std::chrono::milliseconds grace);

  // As CallbackClient's calls of the same names.
  void list_results(const CallbackInfo& cb, std::string_view app_id, std::string_view slide_id,
                    Done<std::vector<StoredResult>> done);
  void image_info(const CallbackInfo& cb, std::string_view slide_id, Done<ImageInfo> done);
  void create_result(const CallbackInfo& cb, std::string_view app_id, const Result& result,
                     Done<StoredResult> done);
  void update_result(const CallbackInfo& cb, std::string_view app_id, const StoredResult& result,
                     Done<StoredResult> done);

  // Calls started and not yet completed (a call counts until its completion returned).
  std::size_t in_flight() const;
  // HTTP requests sent (retries included); for tests and logs.
  std::uint64_t requests_sent() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Percent-encodes one path segment or query value (RFC 3986 unreserved kept).
std::string url_encode(std::string_view s);

}  // namespace iaserve::iaapi
