#pragma once
// The disk queue: a folder (local or on a CIFS/SMB share mounted on every
// host) where the server writes jobs and workers on any host claim them.
//
// Layout (docs/queue.md): pending/ active/ done/ failed/ cancelled/ hold one
// JSON file per job, "<id>.json"; tmp/ holds files being written; locks/
// holds one empty lock file per job. The id sorts oldest-first with the
// priority honoured: "<priority inverted>-<ns timestamp>-<slide hash>-<random>".
// A job moves between states by rename; a claim is the rename
// pending -> active made while holding flock on locks/<id>.lock; the worker
// keeps a lease (active/<id>.lease, host, pid, time) fresh while it runs.
//
// Nothing here knows HTTP or the IA-API: the payload is opaque JSON. It may
// hold a bearer token, so job files are 0600, folders 0700, and the payload is
// never logged.
#include <boost/json/object.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace iaserve::queue {

enum class State { pending, active, done, failed, cancelled };
std::string_view to_string(State s);
// "pending", "active", ...; nullopt for anything else.
std::optional<State> state_from_string(std::string_view name);

// How a waiting worker hears of new jobs. automatic: inotify when the folder
// is on a local filesystem, polling on CIFS/SMB/NFS/FUSE (inotify does not
// see other hosts' writes there).
enum class Wakeup { automatic, inotify, poll };

enum class Commit { automatic, journal, fsync };

struct Options {
  // How often a claim refreshes its lease, and when a lease counts as stale.
  // Host clocks must agree to well within lease_timeout.
  std::chrono::milliseconds lease_interval{2000};
  std::chrono::milliseconds lease_timeout{30000};
  // A job that failed (or whose worker died) this many times goes to failed/.
  int max_attempts = 3;
  Wakeup wakeup = Wakeup::automatic;
  // Polling period (a random jitter of up to 50 % is added); with inotify it
  // is only the safety-net rescan period.
  std::chrono::milliseconds poll_interval{500};
  // wait_claim() sweeps for orphans at most this often (0 = never; then the
  // caller runs recover_orphans() itself).
  std::chrono::milliseconds recover_interval{15000};
  // Accept a folder where flock does not exclude (nolock/nobrl mounts):
  // claims then rely on the rename and the lease alone.
  bool lease_only = false;
  // Create the folder and its state folders when absent.
  bool create = true;
  // fsync job files and folders. Off only to measure the queue's own cost
  // in benchmarks: a power loss may then lose acknowledged jobs.
  bool fsync = true;
  // Also fsync when a job leaves active/ (complete, fail, release, orphan
  // recovery). Off by default: enqueue is always durable, and what a power
  // cut can undo here is a finished job found back in active/, which orphan
  // recovery then runs again. On costs two fsyncs per finished job.
  bool sync_finish = false;
  // How an enqueue is made durable before it returns.
  //  journal: the job file is written without fsync, and its record is
  //    appended to this process's journal (journal/<lease>.<0|1>.jnl) with
  //    one fdatasync shared by every enqueue that arrives meanwhile. Every
  //    checkpoint_interval a thread switches to the other file, makes the
  //    job files durable with one syncfs(2) and empties the old file. After
  //    a power cut, recovery (replay_journals, recover_orphans) writes again
  //    every journaled job whose file was lost or torn.
  //  fsync: each job file and pending/ are fsynced (pending/ shared by
  //    concurrent enqueues).
  //  automatic: journal on a local filesystem; fsync on a network one, where
  //    syncfs is not known to reach the server's disk.
  Commit commit = Commit::automatic;
  // How often the journal's checkpoint runs (switch files, syncfs, empty the
  // old one) while there are new records. Shorter: smaller bursts of
  // writeback competing with the journal's fdatasync.
  std::chrono::milliseconds checkpoint_interval{250};
  // A name for this process in its lease, for people (status pages): the
  // worker's host id, say. Host and pid stay what ownership checks use.
  std::string label;
  // Which apps' jobs this process claims (empty: all). A job of another app
  // stays pending, untouched, for a worker that has that app.
  std::function<bool(const std::string& app_id)> accept_app;
};

// What the server enqueues. (app_id, slide_key) is the coalescing key.
struct JobSpec {
  std::string slide_key;
  std::string app_id;
  int priority = 0;  // higher runs first; clamped to [-49999, 49999]
  boost::json::object payload;
};

struct Lease {
  std::string host;
  long pid = 0;
  std::chrono::system_clock::time_point time;
  std::string label;  // Options::label of that process; empty when it had none
  // Where its flocks are seen exactly: the kernel's boot id and the queue
  // folder's device, as that process saw them. A process with the same
  // domain sees that process's flocks (one kernel, one mount); elsewhere
  // (another host, another FUSE or CIFS mount) only the lease's age tells.
  // Empty in leases of older versions.
  std::string domain;
};

struct Job {
  std::string id;
  State state = State::pending;
  std::string slide_key;
  std::string app_id;
  int priority = 0;
  int attempts = 0;  // failed runs so far (fail with retry, or a lost worker)
  boost::json::object payload;
  std::chrono::system_clock::time_point enqueued;
  std::chrono::system_clock::time_point finished;  // epoch when not finished
  std::string last_error;                          // why the last run failed
  boost::json::object summary;                     // what complete() recorded
  std::optional<Lease> lease;                      // active jobs only
  bool cancel_requested = false;                   // active jobs only
};

struct Stats {
  std::size_t pending = 0, active = 0, done = 0, failed = 0, cancelled = 0;
  std::optional<std::chrono::milliseconds> oldest_pending_age;
  std::vector<Job> active_jobs;  // with lease (host, pid, time) when readable
};

// A process that holds a lease in leases/: a worker that claimed, or a
// server that enqueued. Its heartbeat thread rewrites the lease every
// lease_interval while it lives.
struct Process {
  std::string name;  // the lease's file name without ".lease"
  Lease lease;       // host, pid, last heartbeat
  bool stale = false;  // heartbeat older than lease_timeout
};

struct RecoverReport {
  std::size_t requeued = 0;  // back to pending, attempts + 1
  std::size_t failed = 0;    // past max_attempts
  std::size_t cancelled = 0; // had a cancel mark
  std::size_t cleaned = 0;   // leftovers of interrupted transitions removed
  std::size_t replayed = 0;  // journaled jobs of dead processes written again
};

struct SelfTest {
  bool flock_excludes = false;  // a second descriptor got EWOULDBLOCK
  bool writable = false;
  std::string filesystem;       // "ext4/local", "cifs", "fuse", ...
  bool local = false;           // inotify usable
  std::string message;          // human-readable verdict
};

// Every failure: names the file and the cause ("queue /q/pending/x.json:
// write: No space left on device").
class QueueError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A job whose record would be more than kMaxJobBytes: refused by enqueue
// (nothing written), since no reader would take it back.
class JobTooLarge : public QueueError {
 public:
  using QueueError::QueueError;
};

// What a job's record may be: its size in bytes (enqueue refuses more), and
// the nesting of its payload (JSON arrays and objects; the record is one
// level more). A record nested deeper is not read back: whoever builds
// payloads bounds their depth (iaserve's bodies, at most 64 levels, are
// one level in).
inline constexpr std::size_t kMaxJobBytes = 16u << 20;
// Room kept for what a job's record gains after its enqueue (claims, each
// failed run's reason, the summary): enqueue refuses records beyond
// kMaxJobBytes - kJobGrowth.
inline constexpr std::size_t kJobGrowth = 1u << 20;
inline constexpr unsigned kMaxPayloadDepth = 65;

class Queue;

// A claimed job. Movable, not copyable. While it lives it holds the job's
// lock and a thread refreshes the lease. Ending it: complete(), fail() or
// release(); destroying it without one of them releases the job (back to
// pending, attempts unchanged).
class Claim {
 public:
  Claim(Claim&&) noexcept;
  Claim& operator=(Claim&&) noexcept;
  ~Claim();

  const Job& job() const;
  // A cancel mark was set for this job, or the claim was lost (the job was
  // recovered by another host after the lease went stale). Checked on disk
  // at every call: call it at each step, not in a tight loop.
  bool cancel_requested() const;
  // The claim was lost: the job left active/ under it (another host
  // recovered it after the lease went stale). What this run does next is
  // not the job's: it should stop without telling anyone, and abandon().
  bool lost() const;
  // Lets go of a lost claim without moving the job (it is someone else's
  // now): held() turns false. Does nothing to a claim not lost.
  void abandon();
  // True until complete/fail/release/abandon.
  bool held() const;

  // -> done/ with the summary. Throws QueueError (the job then stays
  // claimed; destroying the claim releases it).
  void complete(const boost::json::object& summary = {});
  // retry: back to pending with attempts + 1 (to failed/ once attempts reach
  // max_attempts); no retry: straight to failed/. The reason is recorded.
  void fail(const std::string& reason, bool retry);
  // Back to pending without counting an attempt (graceful shutdown). A job
  // whose cancel mark is set goes to cancelled/ instead.
  void release();

 private:
  friend class Queue;
  struct Impl;
  explicit Claim(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

class Queue {
 public:
  // Opens (and with Options::create makes) the queue folder, runs the flock
  // self-test and throws QueueError naming the folder and the cause.
  explicit Queue(std::filesystem::path dir, Options options = {});
  ~Queue();
  Queue(const Queue&) = delete;
  Queue& operator=(const Queue&) = delete;

  const std::filesystem::path& dir() const;
  const Options& options() const;
  // The wake-up in use after Wakeup::automatic was resolved.
  Wakeup wakeup() const;

  // Durable before it returns (Options::commit says how). Replaces any
  // pending job of the same (app_id, slide_key) (the newest payload wins).
  // Returns the job id.
  std::string enqueue(const JobSpec& spec);
  // The commit in use after Commit::automatic was resolved.
  Commit commit() const;
  // Journals of processes that are gone (lease stale, or on this host no
  // such pid): every job recorded there whose file is missing or does not
  // parse is written again to pending/; then the journal is removed.
  // Returns the jobs written again. recover_orphans() calls it too.
  std::size_t replay_journals();

  // The first claimable pending job, oldest first by priority; jobs whose
  // slide is active are skipped until that run ends. Corrupt job files are
  // moved to failed/ on the way (logged, never thrown).
  std::optional<Claim> try_claim();
  // Waits up to timeout for a claimable job (inotify or polling).
  std::optional<Claim> wait_claim(std::chrono::milliseconds timeout);
  // Wakes every wait_claim() of this object now (they return nullopt unless
  // a job is claimable): call it from a signal-handling thread to shut down.
  void interrupt();

  // Pending -> cancelled/, active -> a cancel mark its worker sees.
  // False when no pending or active job has that id.
  bool cancel(const std::string& job_id);
  // Every pending or active job of that slide; returns how many.
  std::size_t cancel_slide(const std::string& app_id, const std::string& slide_key);
  // Like cancel_slide for every app (iaqueue cancel --slide KEY).
  std::size_t cancel_slide_any_app(const std::string& slide_key);

  // done/, failed/ or cancelled/ -> pending with attempts 0. False when the
  // id is not in one of those.
  bool requeue(const std::string& job_id);

  Stats stats() const;
  // Jobs of one state, in id order (the claim order for pending).
  std::vector<Job> list(State state) const;
  // The newest (by enqueue time) at most n jobs of one state, newest
  // first. Reads only those files, so a large done/ costs one listing.
  std::vector<Job> recent(State state, std::size_t n) const;
  // Every process with a lease file, by name; unreadable leases are skipped.
  std::vector<Process> processes() const;
  // The job in whatever state it is.
  std::optional<Job> find(const std::string& job_id) const;

  // Active jobs whose lock is free and whose lease is older than
  // lease_timeout go back to pending with attempts + 1, or to failed/ past
  // max_attempts (cancelled/ when marked), recording why.
  RecoverReport recover_orphans();
  // Removes done/, failed/, cancelled/ entries finished longer ago than
  // older_than, and stale lock/temp files. Returns the jobs removed.
  std::size_t purge(std::chrono::seconds older_than);

  // Can a file be created, written, fsynced and removed in the folder now.
  bool writable() const;
  SelfTest selftest() const;
  // The self-test on a folder without opening a queue there (iaqueue).
  static SelfTest selftest(const std::filesystem::path& dir);

 private:
  friend class Claim;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace iaserve::queue
