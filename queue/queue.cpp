#include "queue/queue.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <unordered_map>

#include "iaapi/log.hpp"
#include "queue/posix.hpp"
#include "queue/record.hpp"

namespace iaserve::queue {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using posix::Fd;

namespace {


// A job file whose content is not a job (torn, overwritten, too large): moved
// aside. Any other QueueError from reading one is the disk's or the share's.
class CorruptJob : public QueueError {
 public:
  using QueueError::QueueError;
};
constexpr std::size_t kMaxLeaseBytes = 4096;
// A journal file another process left is read up to this size.
constexpr std::size_t kMaxSegmentRead = 256u << 20;
constexpr State kStates[] = {State::pending, State::active, State::done, State::failed,
                             State::cancelled};

std::shared_ptr<spdlog::logger> logger() {
  static auto l = log::get("queue");
  return l;
}

std::chrono::system_clock::time_point mtime_of(const struct ::stat& st) {
  return std::chrono::system_clock::time_point(std::chrono::duration_cast<std::chrono::system_clock::duration>(
      std::chrono::seconds(st.st_mtim.tv_sec) + std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string strip(std::string_view name, std::string_view suffix) {
  return std::string(name.substr(0, name.size() - suffix.size()));
}

// A job id is a file name; refuse anything that could leave the folder.
bool safe_id(std::string_view id) {
  if (id.empty() || id.size() > 200 || id[0] == '.') return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
  });
}

// The slide-hash part of a well-formed id ("" otherwise), without parsing.
std::string_view hash_of(std::string_view id) {
  if (id.size() != 52 || id[5] != '-' || id[26] != '-' || id[43] != '-') return {};
  return id.substr(27, 16);
}

// Was id a enqueued after id b (time, then the random part)? Both well formed.
bool is_newer(std::string_view a, std::string_view b) {
  auto ta = a.substr(6, 20), tb = b.substr(6, 20);
  if (ta != tb) return ta > tb;
  return a.substr(44) > b.substr(44);
}

struct FsKind {
  std::string name;
  bool local = true;
};

FsKind filesystem_of(const fs::path& dir) {
  struct ::statfs s {};
  if (::statfs(dir.c_str(), &s) != 0) posix::fail(dir, "statfs", errno);
  switch (static_cast<unsigned long>(s.f_type)) {
    case 0xFF534D42UL: return {"cifs", false};
    case 0xFE534D42UL: return {"smb2", false};
    case 0x517BUL: return {"smb", false};
    case 0x6969UL: return {"nfs", false};
    case 0x65735546UL: return {"fuse", false};
    case 0x01021997UL: return {"9p", false};
    case 0x00C36400UL: return {"ceph", false};
    case 0xEF53UL: return {"ext4", true};
    case 0x58465342UL: return {"xfs", true};
    case 0x9123683EUL: return {"btrfs", true};
    case 0x01021994UL: return {"tmpfs", true};
    case 0x794C7630UL: return {"overlayfs", true};
    default: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "0x%lx", static_cast<unsigned long>(s.f_type));
      return {buf, true};
    }
  }
}

// A lock on locks/<id>.lock, held from the moment it is taken.
struct JobLock {
  Fd fd;
  explicit operator bool() const { return static_cast<bool>(fd); }
};

// flock(LOCK_EX|LOCK_NB) on the job's lock file, then check the path still
// names the locked inode (a lock on an unlinked file locks nothing).
JobLock try_lock(const fs::path& lock_path) {
  for (int round = 0; round < 3; ++round) {
    Fd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    if (!fd) {
      // On FUSE and network filesystems an O_CREAT open can fail with ENOENT
      // when the holder unlinks the file at that moment: the job has left.
      if (errno == ENOENT && posix::path_exists(lock_path.parent_path())) continue;
      posix::fail(lock_path, "open lock file", errno);
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK || errno == EAGAIN || errno == EACCES) return {};
      posix::fail(lock_path, "flock", errno);
    }
    struct ::stat held {};
    if (::fstat(fd.get(), &held) != 0) posix::fail(lock_path, "fstat", errno);
    auto now = posix::stat_path(lock_path);
    if (now && now->st_dev == held.st_dev && now->st_ino == held.st_ino) return {std::move(fd)};
    // Unlinked (or replaced) under us: the holder finished the job. Try the
    // current file; its job is most likely gone, which the caller sees next.
  }
  return {};
}

}  // namespace

std::string_view to_string(State s) {
  switch (s) {
    case State::pending: return "pending";
    case State::active: return "active";
    case State::done: return "done";
    case State::failed: return "failed";
    case State::cancelled: return "cancelled";
  }
  return "unknown";
}

std::optional<State> state_from_string(std::string_view name) {
  for (State s : kStates)
    if (to_string(s) == name) return s;
  return std::nullopt;
}

// ---------------------------------------------------------------------------

struct Queue::Impl : std::enable_shared_from_this<Queue::Impl> {
  fs::path dir;
  Options opt;
  Wakeup wake = Wakeup::poll;
  FsKind fskind;
  std::string host = posix::hostname();
  std::string domain;  // Lease::domain of this process; empty: never exact
  bool lease_locked = false;  // this process holds the shared flock on its lease (lease_m)
  Fd interrupt_fd;  // eventfd, written once by interrupt() and never read
  // One inotify instance per queue, kept open: closing one waits for an RCU
  // grace period (milliseconds under load), too slow to pay per claim. One
  // waiting thread polls it and wakes the others through wake_cv.
  Fd inotify_fd;
  std::once_flag watch_once;
  std::mutex poller;
  std::mutex wake_m;
  std::condition_variable wake_cv;
  std::uint64_t wake_gen = 0;
  std::atomic<bool> interrupted{false};
  std::atomic<std::int64_t> last_recover_ns{0};
  std::mutex rng_mutex;
  std::mt19937_64 rng{std::random_device{}()};

  // What a claiming process knows of pending/, in claim order. Where the
  // folder is local, inotify events keep it current and a listing is needed
  // only at the start, after an event overflow and every few seconds as a
  // safety net; on a share it is listed again when older than half the poll
  // period. A stale entry costs one stat: claim_one checks the file first.
  std::atomic<bool> watching{false};
  int wd_pending = -1;
  std::mutex drain_m;  // one reader of the inotify descriptor at a time
  std::mutex view_m;
  std::set<std::string> view;
  std::unordered_map<std::string, int> view_hashes;  // slide hash -> ids in view
  std::set<std::string> foreign;  // pending jobs of apps Options::accept_app refuses
  bool view_valid = false;
  std::int64_t view_listed_ns = 0;

  // What an enqueuing process knows: the newest pending job of each slide,
  // from one listing and then from its own enqueues, so that coalescing does
  // not list pending/ on every enqueue. A request it does not know of (from
  // another process, or a job put back by a worker) is caught when claimed:
  // claim_one supersedes a job whose slide has a newer pending request.
  struct Newest {
    std::string id, app_id, slide_key;  // app and slide empty: not read yet
  };
  std::mutex index_m;
  std::unordered_map<std::string, Newest> newest;
  bool index_loaded = false;
  std::size_t index_reload_at = 4096;

  std::mutex lease_m;
  Fd lease_fd;             // leases/<lease_name>.lease, once a claim made it
  Fd alive_fd;             // leases/<lease_name>.alive: its shared flock says this process lives
  std::string lease_name;
  int lease_failures = 0;  // refreshes failed in a row

  // One thread refreshes the lease and checks every claim this process holds.
  std::mutex hb_m;
  std::condition_variable hb_cv;
  std::set<Claim::Impl*> hb_claims;
  std::thread hb_thread;
  bool hb_stop = false;

  // The journal (Commit::journal): enqueues append their records to j_waiting;
  // whoever finds no writer busy writes everything waiting with one pwrite
  // and one fdatasync (group commit) and wakes the others.
  struct JournalFailure {
    std::uint64_t from, to;  // the records (from, to] of a batch that failed
    std::string what;
  };
  Commit commit_mode = Commit::fsync;
  std::mutex jm;
  std::condition_variable jcv;       // a batch became durable (or failed)
  std::condition_variable j_tick;    // wakes the checkpointer to stop
  std::string j_waiting;             // records not written yet
  std::uint64_t j_added = 0, j_durable = 0;
  std::deque<JournalFailure> j_failures;
  bool j_writing = false;
  bool j_switch_wanted = false;      // the checkpointer waits for the writer
  // Two files, journal/<lease>.0.jnl and .1.jnl, written in turn: records go
  // to j_file[j_cur]; a checkpoint switches j_cur, syncfs()es, then
  // truncates the other. They are never deleted while the process lives: on
  // ext4 without a journal every recently deleted inode slows each later
  // file creation near it. A slot is touched by the writer of the moment
  // (j_writing) while it is current, by the checkpointer once it is not.
  struct JournalFile {
    Fd fd;
    fs::path path;
    off_t size = 0;
  };
  JournalFile j_file[2];
  int j_cur = 0;
  std::string j_owner;  // this process's lease name
  std::thread j_thread;
  bool j_stop = false;

  ~Impl() {
    {
      std::lock_guard lk(jm);
      j_stop = true;
    }
    j_tick.notify_all();
    if (j_thread.joinable()) j_thread.join();  // its last checkpoint empties the journal
    {
      std::lock_guard lk(hb_m);
      hb_stop = true;
    }
    hb_cv.notify_all();
    if (hb_thread.joinable()) hb_thread.join();
    // Every claim has ended (each holds this object): the lease is no
    // longer anyone's.
    if (lease_fd) ::unlink(lease_path(lease_name).c_str());
    if (alive_fd) ::unlink(alive_path(lease_name).c_str());
  }
  void hb_add(Claim::Impl* c) {
    std::lock_guard lk(hb_m);
    hb_claims.insert(c);
    if (!hb_thread.joinable()) hb_thread = std::thread([this] { hb_loop(); });
  }
  // The heartbeat without a claim (an enqueuing process keeps its lease fresh
  // while it has a journal).
  void hb_ensure() {
    std::lock_guard lk(hb_m);
    if (!hb_thread.joinable()) hb_thread = std::thread([this] { hb_loop(); });
  }
  void hb_remove(Claim::Impl* c) {
    std::lock_guard lk(hb_m);
    hb_claims.erase(c);
  }
  void hb_loop();

  void view_insert(const std::string& id) {  // view_m held
    if (view.insert(id).second)
      if (auto h = hash_of(id); !h.empty()) ++view_hashes[std::string(h)];
  }
  void view_erase(const std::string& id) {  // view_m held
    if (view.erase(id) == 0) return;
    auto h = hash_of(id);
    if (h.empty()) return;
    auto it = view_hashes.find(std::string(h));
    if (it != view_hashes.end() && --it->second <= 0) view_hashes.erase(it);
  }
  void view_forget(const std::string& id) {
    std::lock_guard lk(view_m);
    view_erase(id);
  }

  // Applies the inotify events read so far to the view.
  void drain_events() {
    if (!watching) return;
    std::lock_guard d(drain_m);
    alignas(struct inotify_event) char buf[16384];
    for (;;) {
      ssize_t n = ::read(inotify_fd.get(), buf, sizeof buf);
      if (n <= 0) break;
      std::lock_guard lk(view_m);
      for (char* p = buf; p < buf + n;) {
        auto* e = reinterpret_cast<struct inotify_event*>(p);
        p += sizeof(struct inotify_event) + e->len;
        if (e->mask & IN_Q_OVERFLOW) {
          view_valid = false;
          continue;
        }
        if (e->wd != wd_pending || e->len == 0) continue;
        std::string_view name(e->name);  // NUL-padded
        if (!ends_with(name, ".json") || name[0] == '.') continue;
        std::string id = strip(name, ".json");
        if (e->mask & (IN_MOVED_TO | IN_CREATE))
          view_insert(id);
        else
          view_erase(id);
      }
    }
  }

  void ensure_watch() {
    std::call_once(watch_once, [&] {
      watch();
      watching = true;
    });
  }

  // Lists pending/ again when the view may have missed something.
  void refresh_view() {
    bool inotify = wake == Wakeup::inotify;
    if (inotify) ensure_watch();  // before the listing: nothing is missed
    drain_events();
    std::int64_t now = posix::now_ns();
    std::int64_t max_age = inotify ? 5'000'000'000LL
                                   : std::chrono::duration_cast<std::chrono::nanoseconds>(opt.poll_interval).count() / 2;
    std::lock_guard lk(view_m);
    if (view_valid && (inotify || !view.empty()) && now - view_listed_ns < max_age) return;
    view.clear();
    view_hashes.clear();
    for (auto& id : job_ids(State::pending)) view_insert(id);
    view_valid = true;
    view_listed_ns = now;
  }

  // The newest id in the view for the same slide hash as id, if newer.
  std::optional<std::string> newer_in_view(const std::string& id) {
    auto h = hash_of(id);
    if (h.empty()) return std::nullopt;
    std::lock_guard lk(view_m);
    auto it = view_hashes.find(std::string(h));
    if (it == view_hashes.end() || it->second < 2) return std::nullopt;
    std::optional<std::string> best;
    for (auto& other : view)
      if (hash_of(other) == h && is_newer(other, best ? *best : id)) best = other;
    return best;
  }

  // Is job `id` in state s a request of this (app, slide)? The slide hash in
  // ids is only a hint; this reads the job. False when it is gone or corrupt
  // (the claim path moves a corrupt one aside).
  bool is_request_of(State s, const std::string& id, const std::string& app_id,
                     const std::string& slide_key) const {
    try {
      auto f = read_job(s, id);
      return f && f->job.app_id == app_id && f->job.slide_key == slide_key;
    } catch (const QueueError&) {
      return false;
    }
  }
  bool same_slide(const Newest& n, const std::string& app_id, const std::string& slide_key) const {
    if (!n.app_id.empty()) return n.app_id == app_id && n.slide_key == slide_key;
    return is_request_of(State::pending, n.id, app_id, slide_key);
  }

  // pending/<old_id> -> cancelled/, noting what replaced it. False when it
  // was no longer pending (claimed or cancelled meanwhile).
  bool supersede(const std::string& old_id, const std::string& by, State from = State::pending) const {
    if (!posix::rename_file(job_path(from, old_id), job_path(State::cancelled, old_id))) return false;
    try {
      posix::append_file(job_path(State::cancelled, old_id),
                         record::encode_note("superseded by " + by, std::chrono::system_clock::now()),
                         false);
    } catch (const QueueError& e) {
      logger()->warn("job {}: superseded by {}, but the note was not written: {}", old_id, by, e.what());
    }
    logger()->info("job {}: superseded by {}", old_id, by);
    return true;
  }

  void load_index(const std::string& exclude) {  // index_m held
    newest.clear();
    for (auto& other : job_ids(State::pending)) {
      auto h = hash_of(other);
      if (h.empty() || other == exclude) continue;
      auto& e = newest[std::string(h)];
      if (e.id.empty() || is_newer(other, e.id)) e = Newest{other, {}, {}};
    }
    index_loaded = true;
    index_reload_at = std::max<std::size_t>(4096, 2 * newest.size());
  }

  // Enqueue-time coalescing of the new job `id`: the older of it and the
  // newest known pending request of its slide goes to cancelled/.
  void coalesce(const std::string& id, const std::string& app_id, const std::string& slide_key) {
    auto h = std::string(hash_of(id));
    std::optional<Newest> older, newer;
    {
      std::lock_guard lk(index_m);
      if (!index_loaded || newest.size() > index_reload_at) load_index(id);
      auto [it, fresh] = newest.try_emplace(h, Newest{id, app_id, slide_key});
      if (!fresh && it->second.id != id) {
        if (is_newer(id, it->second.id)) {
          older = it->second;
          it->second = Newest{id, app_id, slide_key};
        } else {
          newer = it->second;
        }
      }
    }
    if (older && same_slide(*older, app_id, slide_key)) supersede(older->id, id);
    if (newer && same_slide(*newer, app_id, slide_key)) supersede(id, newer->id);
  }

  fs::path state_dir(State s) const { return dir / std::string(to_string(s)); }
  fs::path job_path(State s, const std::string& id) const { return state_dir(s) / (id + ".json"); }
  fs::path lock_path(const std::string& id) const { return dir / "locks" / (id + ".lock"); }
  // The claim marker of one generation of a job (see take_marker).
  fs::path marker_path(const std::string& id, int generation) const {
    return dir / "claims" / (id + "." + std::to_string(generation));
  }
  fs::path lease_path(const std::string& name) const { return dir / "leases" / (name + ".lease"); }
  // The flock that says a lease's process lives is on a file of its own,
  // never written: on a CIFS mount (Linux 5.5 on) a flock is a byte-range
  // lock, and a shared one refuses writes even through its own descriptor,
  // so the lease's heartbeat could not be written under it.
  fs::path alive_path(const std::string& name) const { return dir / "leases" / (name + ".alive"); }
  // The marker a journal replay of the job holds (one replayer per job).
  fs::path replay_marker_path(const std::string& id) const { return dir / "claims" / (id + ".replay"); }
  fs::path mark_path(const std::string& id) const { return dir / "active" / (id + ".cancel"); }
  fs::path tmp() const { return dir / "tmp"; }

  // Durable unless Options::fsync is off (benchmarks of the queue's own cost).
  void write_durable(const fs::path& dest, std::string_view content, bool sync_dir) const {
    posix::write_file_atomic(tmp(), dest, content, sync_dir && opt.fsync, opt.fsync);
  }
  void sync(const fs::path& folder) const {
    if (opt.fsync) posix::fsync_dir(folder);
  }

  // Group commit of pending/'s fsync: one fsync covers every rename into
  // pending/ made before it started, so concurrent enqueues (the server's
  // pool) share one instead of queueing one each.
  std::atomic<std::uint64_t> renamed_into_pending{0};
  std::mutex pending_sync_m;
  std::uint64_t pending_synced = 0;  // pending_sync_m held
  void sync_pending_after_rename() {
    if (!opt.fsync) return;
    std::uint64_t mine = ++renamed_into_pending;
    std::lock_guard lk(pending_sync_m);
    if (pending_synced >= mine) return;
    std::uint64_t upto = renamed_into_pending.load();
    posix::fsync_dir(state_dir(State::pending));
    pending_synced = upto;
  }

  // ------------------------------------------------------------ journal
  fs::path journal_dir() const { return dir / "journal"; }

  // Appends one record ("<id> <job line>\n") and returns once it is on disk.
  void journal_commit(const std::string& record) {
    std::unique_lock lk(jm);
    if (!j_thread.joinable()) {
      // The lease names the journal, and its heartbeat tells recovery on
      // other hosts that this process lives.
      j_owner = own_lease();
      hb_ensure();
      j_thread = std::thread([this] { checkpoint_loop(); });
    }
    std::uint64_t mine = ++j_added;
    j_waiting += record;
    for (;;) {
      if (j_durable >= mine) {
        for (const auto& f : j_failures)
          if (mine > f.from && mine <= f.to) throw QueueError(f.what);
        return;
      }
      if (j_writing || j_switch_wanted) {
        jcv.wait(lk);
        continue;
      }
      j_writing = true;
      std::string batch;
      batch.swap(j_waiting);
      std::uint64_t from = j_durable, upto = j_added;
      JournalFile& file = j_file[j_cur];
      lk.unlock();
      std::string failure;
      try {
        journal_write(file, batch);
      } catch (const std::exception& e) {
        failure = e.what();
      }
      lk.lock();
      j_writing = false;
      j_durable = upto;
      if (!failure.empty()) {
        j_failures.push_back({from, upto, std::move(failure)});
        if (j_failures.size() > 1024) j_failures.pop_front();
      }
      jcv.notify_all();
    }
  }

  // One pwrite and one fdatasync for a batch. After a failure the size is
  // not advanced: the next batch overwrites whatever part reached the file.
  void journal_write(JournalFile& f, const std::string& batch) {
    if (!f.fd) {
      f.path = journal_dir() / (j_owner + "." + std::to_string(&f - j_file) + ".jnl");
      Fd fd(::open(f.path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
      if (!fd) posix::fail(f.path, "create journal", errno);
      posix::fsync_dir(journal_dir());
      f.fd = std::move(fd);
      f.size = 0;
    }
    posix::write_at(f.fd.get(), f.path, batch, f.size);
    if (::fdatasync(f.fd.get()) != 0) posix::fail(f.path, "fdatasync", errno);
    f.size += static_cast<off_t>(batch.size());
  }

  // Every checkpoint_interval: switch files, make every job file written
  // before the switch durable with one syncfs, then empty the old file. At
  // the end (the queue closes) both files go.
  void checkpoint_loop() {
    bool old_unsynced = false;  // the other file still holds records not checkpointed
    for (;;) {
      bool stopping;
      {
        std::unique_lock lk(jm);
        j_tick.wait_for(lk, opt.checkpoint_interval, [this] { return j_stop; });
        stopping = j_stop;
        if (!old_unsynced && j_file[j_cur].size > 0) {
          j_switch_wanted = true;
          jcv.wait(lk, [this] { return !j_writing; });
          j_cur = 1 - j_cur;
          j_switch_wanted = false;
          old_unsynced = true;
          jcv.notify_all();
        }
      }
      if (old_unsynced && syncfs_queue()) {
        JournalFile& old = j_file[1 - j_cur];  // not current: only this thread touches it
        if (::ftruncate(old.fd.get(), 0) != 0)
          logger()->warn("{}: truncate: {}", old.path.string(), std::strerror(errno));
        old.size = 0;
        old_unsynced = false;
        // Removed under us (a replayer that took this process for dead after
        // its lease went stale on a share): made again when next written.
        struct ::stat st {};
        if (::fstat(old.fd.get(), &st) == 0 && st.st_nlink == 0) old.fd.reset();
      }
      if (stopping) {
        if (old_unsynced) return;  // kept: replayed once this process is gone
        for (auto& f : j_file)
          if (f.fd) {
            f.fd.reset();
            try {
              posix::unlink_file(f.path);
            } catch (const std::exception& e) {  // this thread must not throw: kept, replayed later (harmless)
              logger()->warn("journal {} kept: {}", f.path.string(), e.what());
            }
          }
        return;
      }
    }
  }

  bool syncfs_queue() const {
    Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (d && ::syncfs(d.get()) == 0) return true;
    logger()->error("queue {}: syncfs failed: {}; its journal is kept and the sync retried", dir.string(),
                    std::strerror(errno));
    return false;
  }

  // Does this process see the flocks of the process with lease `l`?
  // (The host name too: clones of one VM snapshot share a boot id.)
  bool flock_exact(const Lease& l) const { return !domain.empty() && l.domain == domain && l.host == host; }

  // The lease `name` has its alive file and no process holds its flock
  // (its owner keeps a shared one while it lives).
  bool lease_unlocked(const std::string& name) const {
    if (!safe_id(name)) return false;
    Fd af(::open(alive_path(name).c_str(), O_RDONLY | O_CLOEXEC));
    return af && ::flock(af.get(), LOCK_EX | LOCK_NB) == 0;
  }

  // Runs of this process whose claim was dropped without its job leaving
  // active/ (ending it failed): job id -> run and the failure. Recovery in
  // this process returns them without waiting for its own lease to age.
  std::mutex dropped_m;
  std::map<std::string, std::pair<std::string, std::string>> dropped;
  void note_dropped(const std::string& id, const std::string& run, const std::string& why) {
    std::lock_guard lk(dropped_m);
    if (dropped.size() >= 4096) {
      logger()->error("job {}: dropped, but 4096 dropped runs are already waiting: it waits for a restart", id);
      return;
    }
    dropped[id] = {run, why};
  }
  std::optional<std::string> dropped_reason(const std::string& id, const std::string& run) {
    std::lock_guard lk(dropped_m);
    auto it = dropped.find(id);
    if (it == dropped.end() || it->second.first != run || run.empty()) return std::nullopt;
    return it->second.second;
  }
  void forget_dropped(const std::string& id) {
    std::lock_guard lk(dropped_m);
    dropped.erase(id);
  }

  // Is the process whose lease is `owner` gone? Its shared flock on its
  // lease file says it lives, on this host and wherever flock is shared;
  // elsewhere only a stale lease (or, without a lease, a stale segment) says
  // it is gone.
  bool owner_gone(const std::string& owner, const fs::path& segment) const {
    auto lpath = lease_path(owner);
    Fd af(::open(alive_path(owner).c_str(), O_RDONLY | O_CLOEXEC));
    if (af && ::flock(af.get(), LOCK_EX | LOCK_NB) != 0) return false;
    auto now = std::chrono::system_clock::now();
    std::optional<record::LeaseFile> l = lease_named(owner);
    if (l) {
      if (af && flock_exact(l->lease)) return true;
      return now - l->lease.time >= opt.lease_timeout;
    }
    auto st = posix::stat_path(segment);
    if (!st) return false;
    auto t = mtime_of(*st);
    if (auto ls = posix::stat_path(lpath)) t = std::max(t, mtime_of(*ls));
    return now - t >= opt.lease_timeout;
  }

  std::size_t replay_journals() {
    if (!posix::path_exists(journal_dir())) return 0;
    std::string own;
    {
      std::lock_guard lk(lease_m);
      own = lease_name;
    }
    std::size_t n = 0;
    for (auto& name : posix::list_dir(journal_dir())) {
      if (!ends_with(name, ".jnl") || name[0] == '.') continue;
      std::string owner = name.substr(0, name.find('.'));
      if (owner == own || !safe_id(owner) || !owner_gone(owner, journal_dir() / name)) continue;
      n += replay_segment(journal_dir() / name, owner);
    }
    return n;
  }

  std::size_t replay_segment(const fs::path& seg, const std::string& owner) {
    Fd fd(::open(seg.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd) {
      if (errno == ENOENT) return 0;
      posix::fail(seg, "open journal", errno);
    }
    if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) return 0;  // another process replays it
    struct ::stat held {};
    if (::fstat(fd.get(), &held) != 0) posix::fail(seg, "fstat", errno);
    auto now = posix::stat_path(seg);
    if (!now || now->st_ino != held.st_ino) return 0;  // replayed and removed meanwhile
    // Read through the locked descriptor: on CIFS the exclusive flock is a
    // byte-range lock that refuses reads through any other.
    const std::string text = posix::read_fd(fd.get(), seg, kMaxSegmentRead);
    std::size_t n = 0, start = 0;
    bool deferred = false;  // a job another replayer is writing: the segment stays till it is there
    while (start < text.size()) {
      auto end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + start, end - start);
      start = end + 1;
      auto sp = line.find(' ');
      if (sp == std::string_view::npos) continue;
      std::string id(line.substr(0, sp));
      std::string job(line.substr(sp + 1));
      if (!safe_id(id)) continue;
      try {
        record::decode_job(job, id);
      } catch (const QueueError&) {
        continue;  // a record torn by the crash: never acknowledged
      }
      switch (restore(id, job, owner)) {
        case Restored::written: ++n; break;
        case Restored::deferred: deferred = true; break;
        case Restored::present: break;
      }
    }
    if (deferred) return n;  // the next sweep looks again
    posix::unlink_file(seg);
    if (n) logger()->warn("journal {}: {} jobs whose files were lost written again", seg.string(), n);
    return n;
  }

  enum class Restored { present, written, deferred };

  // Writes a journaled job again unless a readable file of it is anywhere
  // in the queue: to pending/, or, when a torn copy lies in done/, failed/
  // or cancelled/ (a power cut after the job ended), there, so that a job
  // that ended (a cancel answered yes) does not run again. A job moved
  // aside as corrupt (failed/<id>.corrupt) counts as lost: the journal has
  // its intact record. Deferred while another replayer holds its marker.
  Restored restore(const std::string& id, const std::string& job, const std::string& owner) {
    bool aside = posix::path_exists(state_dir(State::failed) / (id + ".corrupt"));
    std::vector<State> torn;
    for (State s : kStates) {
      if (aside && s == State::failed) continue;
      try {
        if (read_job(s, id)) return Restored::present;
      } catch (const CorruptJob&) {
        torn.push_back(s);
      }  // an unreadable file (QueueError) is not known to be lost: it propagates, replay waits
    }
    State to = State::pending;
    for (State s : torn)
      if (s == State::done || s == State::failed || s == State::cancelled) to = s;
    // One replayer per job even where flock is not shared between hosts; a
    // marker left by a replayer that died is taken over once stale.
    auto marker = replay_marker_path(id);
    if (::mkdir(marker.c_str(), 0700) != 0) {
      if (errno != EEXIST) posix::fail(marker, "create replay marker", errno);
      auto st = posix::stat_path(marker);
      if (!st || std::chrono::system_clock::now() - mtime_of(*st) < opt.lease_timeout) return Restored::deferred;
    }
    try {
      std::string text = job + "\n";
      if (to != State::pending)
        text += record::encode_note("its file was torn by a crash after it ended; restored from the journal",
                                    std::chrono::system_clock::now());
      write_durable(job_path(to, id), text, true);
    } catch (...) {
      ::rmdir(marker.c_str());  // the next sweep tries again, not after a stale marker's wait
      throw;
    }
    for (State s : torn)
      if (s != to) posix::unlink_file(job_path(s, id));
    if (aside) {
      posix::unlink_file(job_path(State::failed, id));
      posix::unlink_file(state_dir(State::failed) / (id + ".corrupt"));
    }
    logger()->warn("job {}: its file was lost or torn; written again from the journal of {} into {}/", id, owner,
                   to_string(to));
    return Restored::written;
  }

  std::vector<std::string> job_ids(State s) const {
    std::vector<std::string> ids;
    for (auto& n : posix::list_dir(state_dir(s)))
      if (ends_with(n, ".json") && n[0] != '.') ids.push_back(strip(n, ".json"));
    return ids;
  }

  // nullopt when the file is not there. Throws CorruptJob when what it read
  // is not a job, QueueError when it could not be read (EIO, EMFILE, a share
  // reconnecting): only the first may be moved aside; the second is tried
  // again later.
  std::optional<record::JobFile> read_job(State s, const std::string& id) const {
    std::optional<std::string> text;
    try {
      text = posix::read_file(job_path(s, id), kMaxJobBytes);
    } catch (const posix::FileTooLarge& e) {
      throw CorruptJob(e.what());
    }
    if (!text) return std::nullopt;
    try {
      auto f = record::decode_job(*text, id);
      f.job.state = s;
      return f;
    } catch (const QueueError& e) {
      throw CorruptJob("queue " + job_path(s, id).string() + ": corrupt job file: " + e.what());
    }
  }

  // The lease of the process that claimed the job last (its claim record
  // names it). nullopt when there is none or it does not parse.
  std::optional<record::LeaseFile> read_lease(const record::JobFile& f) const {
    if (!f.claim || !safe_id(f.claim->lease)) return std::nullopt;
    auto text = posix::read_file(lease_path(f.claim->lease), kMaxLeaseBytes);
    if (!text) return std::nullopt;
    return record::decode_lease(*text);
  }

  // A lease file by its name; nullopt when absent, oversized or malformed.
  std::optional<record::LeaseFile> lease_named(const std::string& name) const {
    try {
      if (auto text = posix::read_file(lease_path(name), kMaxLeaseBytes)) return record::decode_lease(*text);
    } catch (const QueueError&) {
    }
    return std::nullopt;
  }

  // One job of a listing: with its lease and cancel mark when active; a file
  // that does not parse as a job with only its id and the reason. nullopt
  // when it left the state meanwhile.
  std::optional<Job> listed_job(State state, const std::string& id) const {
    try {
      auto f = read_job(state, id);
      if (!f) return std::nullopt;
      if (state == State::active) {
        if (auto l = read_lease(*f)) f->job.lease = l->lease;
        f->job.cancel_requested = posix::path_exists(mark_path(id));
      }
      return std::move(f->job);
    } catch (const QueueError& e) {
      Job j;
      j.id = id;
      j.state = state;
      j.last_error = e.what();
      return j;
    }
  }

  // This process's lease, leases/<host>-<pid>-<random>.lease: made at its
  // first claim and rewritten in place by the heartbeat thread. One lease
  // per process, not per job: a job's claim record names it, so a claim
  // creates no file beyond the job's lock file (and deletes none).
  void write_own_lease() {  // lease_m held
    auto path = lease_path(lease_name);
    auto text_of = [&] {
      // The domain only while the shared flock is held: peers of the domain
      // take a free lease flock for a dead owner.
      record::LeaseFile l{{host, static_cast<long>(::getpid()), std::chrono::system_clock::now(),
                           opt.label.substr(0, 200), lease_locked ? domain : std::string()},
                          lease_name};
      return record::encode_lease(l);
    };
    struct ::stat st {};
    if (lease_fd && ::fstat(lease_fd.get(), &st) == 0 && st.st_nlink > 0) {
      const std::string text = text_of();
      posix::write_at_start(lease_fd.get(), path, text);
      if (st.st_size > static_cast<off_t>(text.size()) &&
          ::ftruncate(lease_fd.get(), static_cast<off_t>(text.size())) != 0)
        posix::fail(path, "truncate lease", errno);
      return;
    }
    // First write, or removed under us: new files. On FUSE an O_CREAT open
    // fails with ENOENT when another mount removed the name this mount
    // still has cached; the failure drops the cache.
    auto create = [](const fs::path& p, const char* what) {
      Fd fd;
      for (int round = 0; round < 3 && !fd; ++round) {
        fd = Fd(::open(p.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!fd && errno != ENOENT) break;
      }
      if (!fd) posix::fail(p, what, errno);
      return fd;
    };
    Fd fd = create(path, "create lease");
    Fd alive = create(alive_path(lease_name), "create lease's alive file");
    // Held while this process lives, taken before the lease is written: in
    // its domain an exclusive flock that succeeds says the owner is gone
    // (owner_gone, recover). A peer testing that holds it for an instant.
    lease_locked = false;
    for (int round = 0; round < 50 && !lease_locked; ++round) {
      lease_locked = ::flock(alive.get(), LOCK_SH | LOCK_NB) == 0;
      if (!lease_locked && errno != EWOULDBLOCK && errno != EINTR) break;
      if (!lease_locked) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    if (!lease_locked && !domain.empty())
      logger()->warn("lease {}: no shared flock ({}); peers will judge this process by the lease's age", path.string(),
                     std::strerror(errno));
    lease_fd = std::move(fd);
    alive_fd = std::move(alive);
    posix::write_at_start(lease_fd.get(), path, text_of());
  }
  std::string own_lease() {
    std::lock_guard lk(lease_m);
    if (lease_name.empty()) {
      std::string h;
      for (char c : host) h.push_back(std::isalnum(static_cast<unsigned char>(c)) || c == '-' ? c : '_');
      lease_name = h.substr(0, 64) + "-" + std::to_string(::getpid()) + "-" + posix::random_hex(4);
    }
    if (!lease_fd) write_own_lease();
    return lease_name;
  }
  void refresh_own_lease() {
    std::lock_guard lk(lease_m);
    if (lease_fd) write_own_lease();
  }

  // A newer pending request for the same (app, slide) than this job, if any.
  // (A listing: it runs only when a job goes back to pending.)
  std::optional<std::string> newer_pending(const Job& job) const {
    auto mine = hash_of(job.id);
    if (mine.empty()) return std::nullopt;
    for (auto& other : job_ids(State::pending))
      if (hash_of(other) == mine && is_newer(other, job.id) &&
          is_request_of(State::pending, other, job.app_id, job.slide_key))
        return other;
    return std::nullopt;
  }

  // Moves a job file this process holds the lock of out of active/: first
  // an update with the outcome it is heading for is appended, then one
  // rename moves it. Recovery finishes the move if we die between the two.
  // Returns where the job went: a job heading back to pending while a newer
  // request for its slide waits there is superseded (cancelled/) instead.
  State move_out_of_active(record::JobFile f, State to, const std::string& run) {
    const std::string& id = f.job.id;
    if (to == State::pending) {
      if (auto newer = newer_pending(f.job)) {
        to = State::cancelled;
        f.job.last_error = "superseded by " + *newer;
        f.job.finished = std::chrono::system_clock::now();
      }
    }
    f.outcome = record::Outcome{std::string(to_string(to)), run};
    bool durable = opt.fsync && opt.sync_finish;
    if (!posix::append_file(job_path(State::active, id), record::encode_update(f), durable))
      throw QueueError("queue " + job_path(State::active, id).string() +
                       ": gone before it could move to " + std::string(to_string(to)));
    if (!posix::rename_file(job_path(State::active, id), job_path(to, id)))
      throw QueueError("queue " + job_path(State::active, id).string() +
                       ": gone before it could move to " + std::string(to_string(to)));
    // One folder is enough: the rename is one journal transaction (ext4,
    // xfs) or one server operation (SMB).
    if (durable) posix::fsync_dir(state_dir(to));
    // A cancel that marked the job after `to` was chosen (it saw the job
    // still active) is not lost: back in pending/, it is cancelled now. If
    // another worker claimed it meanwhile, the mark stays for that run.
    if (to == State::pending && posix::path_exists(mark_path(id))) {
      if (!posix::rename_file(job_path(State::pending, id), job_path(State::cancelled, id))) return to;
      logger()->info("job {}: cancelled (requested while it left active/)", id);
      to = State::cancelled;
    }
    // Nothing is deleted on this path (the mark is almost never there): on
    // a filesystem that avoids reusing recently freed inodes (ext4 without a
    // journal) every deletion makes later file creations slower. The lock
    // file stays for the job's lifetime; purge removes it with the job.
    posix::unlink_file(mark_path(id));
    return to;
  }

  // A job file that does not parse leaves the queue: its bytes go to
  // failed/<id>.corrupt and a readable record to failed/<id>.json.
  void move_aside_corrupt(State from, const std::string& id, const std::string& why) {
    logger()->error("job {}: {}; moved to failed/", id, why);
    record::JobFile f;
    f.job.id = id;
    f.job.last_error = why;
    f.job.finished = std::chrono::system_clock::now();
    if (auto p = record::parse_id(id)) {
      f.job.priority = p->priority;
      f.job.enqueued = record::from_ns(p->time_ns);
    }
    write_durable(job_path(State::failed, id), record::encode_job(f) + "\n", false);
    posix::rename_file(job_path(from, id), state_dir(State::failed) / (id + ".corrupt"));
    sync(state_dir(State::failed));
    if (from == State::active) posix::unlink_file(mark_path(id));
    posix::unlink_file(lock_path(id));
  }

  // Claims of one generation of a job (the times it has left active/) are
  // told apart by making its marker folder: mkdir is atomic on every
  // filesystem and on SMB (O_EXCL is not: a FUSE SMB client may create with
  // O_TRUNC, and each mount checks existence in its own cache). The
  // job's flock is not shared between hosts everywhere (FUSE SMB clients,
  // Linux up to 5.4), and an SMB client's rename is an open by name, then a
  // rename of what it opened, which on a name collision deletes the target
  // and renames again: two hosts renaming one job at once could delete it.
  // Called with the job's lock held and the job read from pending/.
  bool take_marker(const std::string& id, int generation) {
    auto path = marker_path(id, generation);
    if (::mkdir(path.c_str(), 0700) == 0) return true;
    if (errno != EEXIST) posix::fail(path, "make claim marker", errno);
    // Taken: by a claim on another host (it renames within milliseconds), or
    // by one that died before its rename. Past lease_timeout the job starts
    // a new generation, which the next claim takes.
    auto st = posix::stat_path(path);
    if (!st) return false;
    auto age = std::chrono::system_clock::now() - mtime_of(*st);
    if (age < opt.lease_timeout) return false;
    posix::append_file(job_path(State::pending, id), record::encode_bump(), false);
    logger()->warn("job {}: a claim of it died before it started ({} ms ago); claimable again", id,
                   std::chrono::duration_cast<std::chrono::milliseconds>(age).count());
    return false;
  }

  // Slide hash -> the newest active job of that slide.
  std::map<std::string, std::string> active_slides() const {
    std::map<std::string, std::string> out;
    for (auto& id : job_ids(State::active)) {
      auto h = hash_of(id);
      if (h.empty()) continue;
      auto& newest_id = out[std::string(h)];
      if (newest_id.empty() || is_newer(id, newest_id)) newest_id = id;
    }
    return out;
  }

  // A pending job older than the active job of its slide is outdated (its
  // request came from a process that had not seen the newer one).
  void supersede_if_outdated(const std::string& pending_id, const std::string& active_id) {
    if (!is_newer(active_id, pending_id)) return;
    std::optional<record::JobFile> mine;
    try {
      mine = read_job(State::pending, pending_id);
    } catch (const QueueError&) {
      return;  // corrupt: the claim path moves it aside when its slide is free
    }
    if (mine && is_request_of(State::active, active_id, mine->job.app_id, mine->job.slide_key) &&
        supersede(pending_id, active_id))
      view_forget(pending_id);
  }

  std::uint64_t wake_generation() {
    std::lock_guard lk(wake_m);
    return wake_gen;
  }
  void bump_wake() {
    {
      std::lock_guard lk(wake_m);
      ++wake_gen;
    }
    wake_cv.notify_all();
  }

  void watch() {
    // Watches before any scan: nothing that lands after them is missed.
    inotify_fd = Fd(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    if (!inotify_fd) posix::fail(dir, "inotify_init1", errno);
    // Arrivals wake waiters; departures keep claimers' views of pending/ exact.
    wd_pending = ::inotify_add_watch(inotify_fd.get(), state_dir(State::pending).c_str(),
                                     IN_MOVED_TO | IN_CREATE | IN_MOVED_FROM | IN_DELETE);
    if (wd_pending < 0) posix::fail(state_dir(State::pending), "inotify_add_watch", errno);
    // A run that ends frees its slide's waiting job.
    if (::inotify_add_watch(inotify_fd.get(), state_dir(State::active).c_str(),
                            IN_MOVED_FROM | IN_DELETE) < 0)
      posix::fail(state_dir(State::active), "inotify_add_watch", errno);
  }

  // Until something changed since generation `seen`, or `step` passed.
  void wait_inotify(std::uint64_t seen, std::chrono::milliseconds step) {
    // Made by the first claim (a queue that only enqueues never needs it),
    // before its listing.
    ensure_watch();
    std::unique_lock mine(poller, std::try_to_lock);
    if (!mine) {  // another thread polls; it wakes us
      std::unique_lock lk(wake_m);
      wake_cv.wait_for(lk, step, [&] { return wake_gen != seen || interrupted; });
      return;
    }
    if (wake_generation() != seen) return;
    struct pollfd fds[2] = {{interrupt_fd.get(), POLLIN, 0}, {inotify_fd.get(), POLLIN, 0}};
    int r = ::poll(fds, 2, static_cast<int>(step.count()));
    if (r < 0 && errno != EINTR) posix::fail(dir, "poll", errno);
    if (r > 0 && (fds[1].revents & POLLIN)) drain_events();
    mine.unlock();
    bump_wake();
  }

  void wait_poll(std::chrono::milliseconds step) {
    struct pollfd fd = {interrupt_fd.get(), POLLIN, 0};
    if (::poll(&fd, 1, static_cast<int>(step.count())) < 0 && errno != EINTR)
      posix::fail(dir, "poll", errno);
  }

  std::optional<Claim> claim_one(const std::string& id);
  std::optional<Claim> try_claim();
  RecoverReport recover();
  std::chrono::milliseconds jittered(std::chrono::milliseconds base) {
    std::lock_guard lock(rng_mutex);
    std::uniform_int_distribution<long> d(0, std::max<long>(1, base.count() / 2));
    return base + std::chrono::milliseconds(d(rng));
  }
};

// ---------------------------------------------------------------------------

struct Claim::Impl {
  std::shared_ptr<Queue::Impl> q;
  record::JobFile file;
  std::string run;
  JobLock lock;
  bool is_held = true;
  bool beating = false;
  std::atomic<bool> lost{false};

  void start() {
    beating = true;
    q->hb_add(this);
  }

  // Whether active/ still holds the job with this claim as its last: a
  // recovery elsewhere (the lease went stale) may have moved it out, and
  // another worker may have claimed it again at once (the file is back,
  // under that worker's run). Unreadable for now (a share reconnecting):
  // taken as ours.
  bool still_ours() const {
    try {
      auto f = q->read_job(State::active, file.job.id);
      return f && f->claim && f->claim->run == run;
    } catch (const CorruptJob&) {
      return false;
    } catch (const QueueError&) {
      return true;
    }
  }

  // At every heartbeat (hb_m held): is the job still ours?
  void check() {
    if (lost) return;
    if (!still_ours() && !lost.exchange(true))
      logger()->error("job {}: no longer this run's (recovered elsewhere after a stale lease)", file.job.id);
  }

  void stop_heartbeat() {
    if (!beating) return;
    q->hb_remove(this);
    beating = false;
  }

  // The job's record changes (attempts too) only once the move is done: a
  // finish that throws can be tried again as it was.
  State finish(State to, const std::string& reason, const boost::json::object* summary,
               std::optional<int> attempts = std::nullopt) {
    if (!is_held) throw QueueError("job " + file.job.id + ": claim already ended");
    stop_heartbeat();
    if (lost || !still_ours()) {
      lost = true;
      throw QueueError("job " + file.job.id +
                       ": no longer this run's (recovered by another worker after its lease went stale)");
    }
    record::JobFile f = file;
    if (attempts) f.job.attempts = *attempts;
    f.job.finished = to == State::pending ? std::chrono::system_clock::time_point{}
                                          : std::chrono::system_clock::now();
    if (!reason.empty()) f.job.last_error = reason;
    if (summary) f.job.summary = *summary;
    const int counted = f.job.attempts;
    State went = q->move_out_of_active(std::move(f), to, run);
    file.job.attempts = counted;
    is_held = false;
    lock.fd.reset();
    return went;
  }
};

void Queue::Impl::hb_loop() {
  std::unique_lock lk(hb_m);
  auto next = std::chrono::steady_clock::now() + opt.lease_interval;
  while (!hb_stop) {
    hb_cv.wait_until(lk, next, [this] { return hb_stop; });
    if (hb_stop) break;
    auto now = std::chrono::steady_clock::now();
    next = std::max(next + opt.lease_interval, now);
    try {
      refresh_own_lease();
      lease_failures = 0;
    } catch (const std::exception& e) {
      if (++lease_failures == 1 || lease_failures % 10 == 0)
        logger()->warn("lease refresh failed ({} in a row): {}", lease_failures, e.what());
    }
    for (Claim::Impl* c : hb_claims) c->check();
  }
}

Claim::Claim(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Claim::Claim(Claim&&) noexcept = default;
Claim& Claim::operator=(Claim&& o) noexcept {
  if (this != &o) {
    Claim old(std::move(*this));
    impl_ = std::move(o.impl_);
  }
  return *this;
}

Claim::~Claim() {
  if (!impl_) return;
  if (impl_->is_held) {
    try {
      release();
    } catch (const std::exception& e) {
      logger()->error("job {}: release on drop failed: {} (recovery will return it)",
                      impl_->file.job.id, e.what());
      impl_->q->note_dropped(impl_->file.job.id, impl_->run, e.what());
    }
  }
  impl_->stop_heartbeat();
}

const Job& Claim::job() const { return impl_->file.job; }

bool Claim::held() const { return impl_ && impl_->is_held; }

bool Claim::lost() const { return impl_ && impl_->lost; }

void Claim::abandon() {
  if (!impl_ || !impl_->lost || !impl_->is_held) return;
  impl_->is_held = false;
  impl_->stop_heartbeat();
  logger()->warn("job {}: claim abandoned (the job was recovered elsewhere); this run's end is not recorded",
                 impl_->file.job.id);
}

bool Claim::cancel_requested() const {
  if (!impl_->is_held) return false;
  if (impl_->lost) return true;
  return posix::path_exists(impl_->q->mark_path(impl_->file.job.id));
}

void Claim::complete(const boost::json::object& summary) {
  impl_->finish(State::done, {}, &summary);
  logger()->info("job {}: done", impl_->file.job.id);
}

void Claim::fail(const std::string& reason, bool retry) {
  const auto& job = impl_->file.job;
  State to = State::failed;
  int attempts = job.attempts + 1;
  if (posix::path_exists(impl_->q->mark_path(job.id)))
    to = State::cancelled;
  else if (retry && attempts < impl_->q->opt.max_attempts)
    to = State::pending;
  to = impl_->finish(to, reason, nullptr, attempts);
  logger()->warn("job {}: failed (attempt {}), now {}: {}", job.id, attempts, to_string(to), reason);
}

void Claim::release() {
  const auto& job = impl_->file.job;
  State to = posix::path_exists(impl_->q->mark_path(job.id)) ? State::cancelled : State::pending;
  to = impl_->finish(to, {}, nullptr);
  logger()->info("job {}: released, now {}", job.id, to_string(to));
}

// ---------------------------------------------------------------------------

std::optional<Claim> Queue::Impl::claim_one(const std::string& id) {
  // A job another worker took since the view was made: no lock file for it.
  if (!posix::path_exists(job_path(State::pending, id))) {
    view_forget(id);
    return std::nullopt;
  }
  JobLock lock = try_lock(lock_path(id));
  if (!lock) return std::nullopt;
  std::optional<record::JobFile> f;
  try {
    f = read_job(State::pending, id);
  } catch (const CorruptJob& e) {
    view_forget(id);
    if (!posix::path_exists(job_path(State::pending, id))) return std::nullopt;
    move_aside_corrupt(State::pending, id, e.what());
    return std::nullopt;
  } catch (const QueueError& e) {  // unreadable for now: left where it is
    logger()->warn("job {}: not claimed: {}", id, e.what());
    return std::nullopt;
  }
  if (!f) {  // claimed or cancelled by someone else meanwhile
    view_forget(id);
    return std::nullopt;
  }
  if (opt.accept_app && !opt.accept_app(f->job.app_id)) {
    std::lock_guard lk(view_m);
    if (foreign.size() >= 4096) foreign.clear();  // a bound; they are read once more
    foreign.insert(id);  // a job's app never changes: not read again
    return std::nullopt;
  }
  // A newer request for the same slide waits too (enqueued by another
  // process, or this job came back from a run): the newest one runs.
  if (auto newer = newer_in_view(id)) {
    if (is_request_of(State::pending, *newer, f->job.app_id, f->job.slide_key)) {
      view_forget(id);
      if (supersede(id, *newer)) return std::nullopt;
    }
  }
  if (!take_marker(id, f->generation)) return std::nullopt;
  auto impl = std::make_unique<Claim::Impl>();
  impl->q = shared_from_this();
  impl->run = posix::random_hex(8);
  record::ClaimRecord mine{impl->run, own_lease()};
  // A mark left from an earlier run of this id would cancel this one.
  posix::unlink_file(mark_path(id));
  // The claim record goes in before the rename, so an active job always
  // names its lease.
  if (!posix::append_file(job_path(State::pending, id), record::encode_claim(mine), false) ||
      !posix::rename_file(job_path(State::pending, id), job_path(State::active, id))) {
    // Gone meanwhile: cancelled (the marker keeps other claims out).
    view_forget(id);
    return std::nullopt;
  }
  view_forget(id);
  f->claim = mine;
  f->job.state = State::active;
  impl->file = std::move(*f);
  impl->lock = std::move(lock);
  // Two workers may have claimed two jobs of one slide at the same moment;
  // whoever sees the other backs off (both may: they retry later). Should
  // this fail (a share dropping out), the run is noted as dropped: recovery
  // returns the job, which would otherwise wait in active/ under a lease
  // this process keeps fresh.
  try {
    if (auto slide = hash_of(id); !slide.empty()) {
      for (auto& other : job_ids(State::active)) {
        if (other == id || hash_of(other) != slide) continue;
        // A newer request of this slide runs already: this one is outdated.
        bool outdated = is_newer(other, id) &&
                        is_request_of(State::active, other, impl->file.job.app_id, impl->file.job.slide_key);
        if (!(outdated && supersede(id, other, State::active))) {
          // Back to pending as a new generation: this one's marker is taken.
          posix::append_file(job_path(State::active, id), record::encode_bump(), false);
          posix::rename_file(job_path(State::active, id), job_path(State::pending, id));
          // A cancel that marked it while it was active answered yes: it
          // holds (the next claim would remove the mark and run the job).
          if (posix::path_exists(mark_path(id)) &&
              posix::rename_file(job_path(State::pending, id), job_path(State::cancelled, id))) {
            logger()->info("job {}: cancelled (requested while it was briefly active)", id);
            posix::unlink_file(mark_path(id));
          }
        }
        return std::nullopt;
      }
    }
  } catch (const std::exception& e) {
    note_dropped(id, impl->run, std::string("claim not completed: ") + e.what());
    throw;
  }
  impl->start();
  logger()->info("job {}: claimed (app {}, attempts {})", id, impl->file.job.app_id,
                 impl->file.job.attempts);
  return Claim(std::move(impl));
}

std::optional<Claim> Queue::Impl::try_claim() {
  refresh_view();
  constexpr std::size_t kBatch = 32;
  std::optional<std::map<std::string, std::string>> busy;  // slides running now, listed once
  std::string after;
  for (bool first = true;; first = false) {
    std::vector<std::string> batch;
    {
      std::lock_guard lk(view_m);
      auto it = first ? view.begin() : view.upper_bound(after);
      for (; it != view.end() && batch.size() < kBatch; ++it) batch.push_back(*it);
    }
    if (batch.empty()) return std::nullopt;
    if (!busy) busy = active_slides();
    for (auto& id : batch) {
      if (!safe_id(id)) continue;
      {
        std::lock_guard lk(view_m);
        if (foreign.count(id)) continue;  // another app's: see Options::accept_app
      }
      auto h = hash_of(id);
      if (auto it = h.empty() ? busy->end() : busy->find(std::string(h)); it != busy->end()) {
        supersede_if_outdated(id, it->second);
        continue;
      }
      if (auto c = claim_one(id)) return c;
    }
    if (batch.size() < kBatch) return std::nullopt;
    after = batch.back();
  }
}

RecoverReport Queue::Impl::recover() {
  RecoverReport report;
  last_recover_ns = posix::now_ns();
  auto now = std::chrono::system_clock::now();
  auto names = posix::list_dir(state_dir(State::active));
  std::set<std::string> jobs;
  for (auto& n : names)
    if (ends_with(n, ".json")) jobs.insert(strip(n, ".json"));
  {
    std::lock_guard lk(dropped_m);
    std::erase_if(dropped, [&](const auto& e) { return !jobs.count(e.first); });
  }
  for (const auto& id : jobs) {
    // One job's trouble (its move fails: the share is full) does not stop
    // the sweep for the others, the leases and the journals.
    try {
      if (!safe_id(id)) continue;
      JobLock lock = try_lock(lock_path(id));
      if (!lock) continue;  // its worker is alive (on this host, or flock is shared)
      auto st = posix::stat_path(job_path(State::active, id));
      if (!st) continue;  // finished meanwhile
      std::optional<record::JobFile> f;
      try {
        f = read_job(State::active, id);
      } catch (const CorruptJob& e) {
        move_aside_corrupt(State::active, id, e.what());
        ++report.failed;
        continue;
      } catch (const QueueError& e) {  // unreadable for now: the next sweep looks again
        logger()->warn("job {}: not recovered: {}", id, e.what());
        continue;
      }
      if (!f) continue;
      std::optional<record::LeaseFile> lease;
      try {
        lease = read_lease(*f);
      } catch (const QueueError&) {
      }
      // No readable lease (being rewritten, or its process long gone): the
      // lease file's own time, else the job file's last change (the claim
      // record is appended just before the claim).
      auto file_time = [](const struct ::stat& s) {
        struct ::stat c = s;
        c.st_mtim = s.st_ctim;
        return std::max(mtime_of(s), mtime_of(c));
      };
      std::chrono::system_clock::time_point lease_time = file_time(*st);
      if (lease) {
        lease_time = lease->lease.time;
      } else if (f->claim && safe_id(f->claim->lease)) {
        if (auto ls = posix::stat_path(lease_path(f->claim->lease))) lease_time = file_time(*ls);
      }
      auto age = std::chrono::duration_cast<std::chrono::milliseconds>(now - lease_time);
      // Its lock is free. Where this process sees that claimant's flocks, that
      // alone says no run holds the job (its worker died, or its claim ended
      // without moving the job: an I/O error on the share), whatever the
      // lease's age; elsewhere a fresh lease may be a run whose flock is not
      // seen here.
      std::string run = f->claim ? f->claim->run : std::string();
      // Its lock is free. A run of this process whose claim could not be ended
      // (an I/O error on the share) is known here; a claimant in this
      // process's flock domain whose lease flock is free is gone (on this host
      // a worker killed now is seen now). Elsewhere a fresh lease may be a run
      // whose flock is not seen here: only its age tells.
      const std::optional<std::string> dropped_why = dropped_reason(id, run);
      const bool gone = lease && f->claim && flock_exact(lease->lease) && lease_unlocked(f->claim->lease);
      if (age < opt.lease_timeout && !dropped_why && !gone) continue;
      if (f->outcome && f->outcome->run == run) {
        // The worker (or an earlier sweep) died between writing the outcome and
        // the move: finish the move, count nothing.
        if (auto to = state_from_string(f->outcome->state); to && *to != State::active) {
          move_out_of_active(std::move(*f), *to, run);
          forget_dropped(id);
          ++report.cleaned;
          continue;
        }
      }
      f->job.attempts += 1;
      std::string who = lease ? lease->lease.host + " pid " + std::to_string(lease->lease.pid)
                              : std::string("unknown worker");
      if (dropped_why)
        f->job.last_error = "run dropped: ending it failed (" + *dropped_why + ")";
      else if (age < opt.lease_timeout)
        f->job.last_error = "worker lost (" + who + ", gone: its lease is unlocked)";
      else
        f->job.last_error = "worker lost (" + who + ", lease " + std::to_string(age.count()) + " ms old)";
      State to = State::pending;
      if (posix::path_exists(mark_path(id)))
        to = State::cancelled;
      else if (f->job.attempts >= opt.max_attempts)
        to = State::failed;
      if (to != State::pending) f->job.finished = now;
      std::string why = f->job.last_error;
      int attempts = f->job.attempts;
      to = move_out_of_active(std::move(*f), to, run);
      forget_dropped(id);
      if (to == State::cancelled) ++report.cancelled;
      else if (to == State::failed) ++report.failed;
      else ++report.requeued;
      logger()->warn("job {}: {}; attempts {}, now {}", id, why, attempts, to_string(to));
    } catch (const std::exception& e) {
      logger()->warn("job {}: not recovered this sweep: {}", id, e.what());
    }
  }
  // Leases of processes gone for a long time (a lease still named by an
  // active job only matters while it is fresh; without it the job file's
  // time counts, which is older).
  std::string own;
  {
    std::lock_guard lk(lease_m);
    own = lease_name;
  }
  for (auto& n : posix::list_dir(dir / "leases")) {
    // An alive file whose lease was swept (or never written: its process
    // died in between), made long enough ago.
    if (ends_with(n, ".alive") && strip(n, ".alive") != own &&
        !posix::path_exists(lease_path(strip(n, ".alive")))) {
      auto st = posix::stat_path(dir / "leases" / n);
      if (st && now - std::chrono::system_clock::time_point(std::chrono::seconds(st->st_mtim.tv_sec)) >
                    opt.lease_timeout) {
        posix::unlink_file(dir / "leases" / n);
        ++report.cleaned;
      }
      continue;
    }
    if (!ends_with(n, ".lease") || strip(n, ".lease") == own) continue;
    auto st = posix::stat_path(dir / "leases" / n);
    if (st && now - std::chrono::system_clock::time_point(std::chrono::seconds(st->st_mtim.tv_sec)) >
                  10 * opt.lease_timeout) {
      posix::unlink_file(dir / "leases" / n);
      ++report.cleaned;
    }
  }
  // Marks (and leases of an older layout) whose job left active/ long ago
  // (a run that ended between its moves).
  for (auto& n : names) {
    for (std::string_view suffix : {".lease", ".cancel"}) {
      if (!ends_with(n, suffix)) continue;
      std::string id = strip(n, suffix);
      if (jobs.count(id) || posix::path_exists(job_path(State::active, id))) continue;
      auto st = posix::stat_path(state_dir(State::active) / n);
      if (st && now - std::chrono::system_clock::time_point(std::chrono::seconds(st->st_mtim.tv_sec)) >
                    opt.lease_timeout) {
        posix::unlink_file(state_dir(State::active) / n);
        ++report.cleaned;
      }
    }
  }
  // After the sweep above moved torn active jobs aside: journals of dead
  // processes bring back what a power cut took.
  report.replayed = replay_journals();
  return report;
}

// ---------------------------------------------------------------------------

Queue::Queue(fs::path dir, Options options) : impl_(std::make_shared<Impl>()) {
  auto& q = *impl_;
  q.dir = std::move(dir);
  q.opt = options;
  if (q.opt.max_attempts < 1) q.opt.max_attempts = 1;
  if (q.opt.lease_interval <= 0ms) q.opt.lease_interval = 1ms;
  if (q.opt.poll_interval <= 0ms) q.opt.poll_interval = 1ms;
  if (q.opt.checkpoint_interval <= 0ms) q.opt.checkpoint_interval = 1ms;
  auto make = [&](const fs::path& p) {
    if (::mkdir(p.c_str(), 0700) != 0 && errno != EEXIST) posix::fail(p, "create folder", errno);
  };
  if (!posix::path_exists(q.dir)) {
    if (!q.opt.create) throw QueueError("queue " + q.dir.string() + ": no such folder");
    make(q.dir);
  }
  std::vector<fs::path> subs = {q.tmp(), q.dir / "locks", q.dir / "leases", q.dir / "claims"};
  for (State s : kStates) subs.push_back(q.state_dir(s));
  for (auto& p : subs) {
    if (q.opt.create) make(p);
    auto st = posix::stat_path(p);
    if (!st && errno == ENOENT)
      throw QueueError("queue " + p.string() + ": missing (not a queue folder?)");
    if (!st) posix::fail(p, "open folder", errno);
    if (!S_ISDIR(st->st_mode)) throw QueueError("queue " + p.string() + ": not a folder");
  }
  SelfTest t = selftest(q.dir);
  q.fskind = {t.filesystem, t.local};
  if (auto st = posix::stat_path(q.dir); st && !q.opt.lease_only) {
    if (std::string boot = posix::boot_id(); !boot.empty()) q.domain = boot + ":" + std::to_string(st->st_dev);
  }
  if (!t.flock_excludes && !q.opt.lease_only) throw QueueError(t.message);
  switch (q.opt.wakeup) {
    case Wakeup::automatic: q.wake = t.local ? Wakeup::inotify : Wakeup::poll; break;
    default: q.wake = q.opt.wakeup;
  }
  q.commit_mode = Commit::fsync;
  if (q.opt.fsync && (q.opt.commit == Commit::journal || (q.opt.commit == Commit::automatic && t.local))) {
    // A folder made before journals existed gets its journal/ now.
    if (::mkdir(q.journal_dir().c_str(), 0700) == 0 || errno == EEXIST)
      q.commit_mode = Commit::journal;
    else
      logger()->warn("queue {}: cannot make journal/ ({}); each enqueue is fsynced instead", q.dir.string(),
                     std::strerror(errno));
  }
  q.interrupt_fd = Fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!q.interrupt_fd) posix::fail(q.dir, "eventfd", errno);

  logger()->debug("queue {}: {} ({}), wake-up by {}, commit by {}, lease {} ms / {} ms{}", q.dir.string(),
                  t.filesystem, t.local ? "local" : "network",
                  q.wake == Wakeup::inotify ? "inotify" : "polling",
                  q.commit_mode == Commit::journal ? "journal" : "fsync", q.opt.lease_interval.count(),
                  q.opt.lease_timeout.count(), t.flock_excludes ? "" : ", lease-only");
}

Queue::~Queue() = default;

const fs::path& Queue::dir() const { return impl_->dir; }
const Options& Queue::options() const { return impl_->opt; }
Wakeup Queue::wakeup() const { return impl_->wake; }
Commit Queue::commit() const { return impl_->commit_mode; }
std::size_t Queue::replay_journals() { return impl_->replay_journals(); }

std::string Queue::enqueue(const JobSpec& spec) {
  auto& q = *impl_;
  std::string hash = record::slide_hash(spec.app_id, spec.slide_key);
  std::int64_t t = posix::now_ns();
  record::JobFile f;
  f.job.id = record::make_id(spec.priority, t, hash, posix::random_hex(4));
  f.job.app_id = spec.app_id;
  f.job.slide_key = spec.slide_key;
  f.job.priority = std::clamp(spec.priority, -record::kMaxPriority, record::kMaxPriority);
  f.job.enqueued = record::from_ns(t);
  f.job.payload = spec.payload;
  const std::string& id = f.job.id;
  std::string line = record::encode_job(f);
  if (line.size() + 1 > kMaxJobBytes - kJobGrowth)
    throw JobTooLarge("job of " + std::to_string(line.size() + 1) + " bytes: more than the queue's limit of " +
                      std::to_string(kMaxJobBytes - kJobGrowth) + " bytes a new job");
  if (q.commit_mode == Commit::journal) {
    // The file first, then its record: a record never names a job that was
    // not written (its replay would make a job nobody was told of).
    posix::write_file_atomic(q.tmp(), q.job_path(State::pending, id), line + "\n", false, false);
    try {
      q.journal_commit(id + " " + line + "\n");
    } catch (const std::exception&) {
      try {
        posix::unlink_file(q.job_path(State::pending, id));  // not acknowledged: not queued
      } catch (const QueueError&) {
      }
      throw;
    }
  } else {
    q.write_durable(q.job_path(State::pending, id), line + "\n", false);
    q.sync_pending_after_rename();
  }
  // Coalesce: the older of this job and the newest pending request of its
  // slide is superseded. A rename to cancelled/ races a claim's rename;
  // exactly one of them wins, and when the claim wins the new job waits for
  // that run.
  q.coalesce(id, spec.app_id, spec.slide_key);
  logger()->debug("job {}: enqueued (app {}, priority {})", id, spec.app_id, f.job.priority);
  return id;
}

std::optional<Claim> Queue::try_claim() { return impl_->try_claim(); }

void Queue::interrupt() {
  impl_->interrupted = true;
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(impl_->interrupt_fd.get(), &one, sizeof one);
  impl_->bump_wake();
}

std::optional<Claim> Queue::wait_claim(std::chrono::milliseconds timeout) {
  auto& q = *impl_;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    // Taken before the scan: a wake-up that lands during it is not missed.
    std::uint64_t seen = q.wake_generation();
    if (q.opt.recover_interval > 0ms &&
        posix::now_ns() - q.last_recover_ns >=
            std::chrono::duration_cast<std::chrono::nanoseconds>(q.opt.recover_interval).count()) {
      try {
        q.recover();
      } catch (const QueueError& e) {
        logger()->error("orphan sweep: {}", e.what());
      }
    }
    if (auto c = q.try_claim()) return c;
    auto now = std::chrono::steady_clock::now();
    if (q.interrupted || now >= deadline) return std::nullopt;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) + 1ms;
    if (q.wake == Wakeup::inotify)
      q.wait_inotify(seen, std::min(std::max(q.opt.poll_interval, 2000ms), left));
    else
      q.wait_poll(std::min(q.jittered(q.opt.poll_interval), left));
  }
}

bool Queue::cancel(const std::string& job_id) {
  auto& q = *impl_;
  if (!safe_id(job_id)) return false;
  bool marked = false;  // a mark of ours was there while the job left active/
  for (int round = 0; round < 5; ++round) {
    if (posix::rename_file(q.job_path(State::pending, job_id), q.job_path(State::cancelled, job_id))) {
      q.sync(q.state_dir(State::cancelled));
      logger()->info("job {}: cancelled while pending", job_id);
      return true;
    }
    if (posix::path_exists(q.job_path(State::active, job_id))) {
      Fd fd(::open(q.mark_path(job_id).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
      if (!fd) posix::fail(q.mark_path(job_id), "create cancel mark", errno);
      fd.reset();
      q.sync(q.state_dir(State::active));
      // Still active after the mark exists: its run, or whoever moves it out
      // of active/ next, sees the mark. Gone meanwhile: the mover may not
      // have seen it; take the mark back and look again.
      if (posix::path_exists(q.job_path(State::active, job_id))) {
        logger()->info("job {}: cancel requested while active", job_id);
        return true;
      }
      marked = true;
      posix::unlink_file(q.mark_path(job_id));
      continue;
    }
    // Neither: finished, unknown, or moving between the two right now.
    if (marked && posix::path_exists(q.job_path(State::cancelled, job_id))) return true;  // its mover saw our mark
    for (State s : {State::done, State::failed, State::cancelled})
      if (posix::path_exists(q.job_path(s, job_id))) return false;
    if (round >= 1 && !posix::path_exists(q.job_path(State::pending, job_id))) return false;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

std::size_t Queue::cancel_slide(const std::string& app_id, const std::string& slide_key) {
  auto& q = *impl_;
  std::string hash = record::slide_hash(app_id, slide_key);
  std::size_t n = 0;
  for (State s : {State::pending, State::active}) {
    for (auto& id : q.job_ids(s)) {
      auto p = record::parse_id(id);
      if (!p || p->slide_hash != hash) continue;
      try {
        auto f = q.read_job(s, id);
        if (!f || f->job.app_id != app_id || f->job.slide_key != slide_key) continue;
      } catch (const QueueError&) {
        continue;
      }
      if (cancel(id)) ++n;
    }
  }
  return n;
}

std::size_t Queue::cancel_slide_any_app(const std::string& slide_key) {
  auto& q = *impl_;
  std::set<std::string> apps;
  for (State s : {State::pending, State::active}) {
    for (auto& id : q.job_ids(s)) {
      try {
        if (auto f = q.read_job(s, id); f && f->job.slide_key == slide_key) apps.insert(f->job.app_id);
      } catch (const QueueError&) {
      }
    }
  }
  std::size_t n = 0;
  for (auto& app : apps) n += cancel_slide(app, slide_key);
  return n;
}

bool Queue::requeue(const std::string& job_id) {
  auto& q = *impl_;
  if (!safe_id(job_id)) return false;
  for (State s : {State::done, State::failed, State::cancelled}) {
    std::optional<record::JobFile> f;
    try {
      f = q.read_job(s, job_id);
    } catch (const QueueError&) {
      continue;  // a corrupt record has nothing to run
    }
    if (!f) continue;
    if (posix::path_exists(q.state_dir(s) / (job_id + ".corrupt"))) return false;
    f->job.attempts = 0;
    f->job.finished = {};
    f->outcome.reset();
    // The reset appended under the terminal name, then one rename into pending/.
    if (!posix::append_file(q.job_path(s, job_id), record::encode_update(*f), q.opt.fsync)) return false;
    if (!posix::rename_file(q.job_path(s, job_id), q.job_path(State::pending, job_id))) return false;
    q.sync(q.state_dir(State::pending));
    logger()->info("job {}: requeued from {}", job_id, to_string(s));
    return true;
  }
  return false;
}

std::vector<Job> Queue::list(State state) const {
  std::vector<Job> out;
  for (auto& id : impl_->job_ids(state))
    if (auto j = impl_->listed_job(state, id)) out.push_back(std::move(*j));
  return out;
}

std::vector<Job> Queue::recent(State state, std::size_t n) const {
  auto& q = *impl_;
  std::vector<std::pair<std::int64_t, std::string>> by_time;
  for (auto& id : q.job_ids(state))
    if (auto p = record::parse_id(id)) by_time.emplace_back(p->time_ns, std::move(id));
  n = std::min(n, by_time.size());
  std::partial_sort(by_time.begin(), by_time.begin() + static_cast<std::ptrdiff_t>(n), by_time.end(),
                    [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<Job> out;
  for (std::size_t i = 0; i < n; ++i)
    if (auto j = q.listed_job(state, by_time[i].second)) out.push_back(std::move(*j));
  return out;
}

std::vector<Process> Queue::processes() const {
  auto& q = *impl_;
  std::vector<Process> out;
  auto now = std::chrono::system_clock::now();
  for (auto& n : posix::list_dir(q.dir / "leases")) {
    if (!ends_with(n, ".lease") || n[0] == '.') continue;
    Process p;
    p.name = strip(n, ".lease");
    auto l = q.lease_named(p.name);
    if (!l) continue;
    p.lease = l->lease;
    p.stale = now - p.lease.time > q.opt.lease_timeout;
    out.push_back(std::move(p));
  }
  std::sort(out.begin(), out.end(), [](const Process& a, const Process& b) { return a.name < b.name; });
  return out;
}

std::optional<Job> Queue::find(const std::string& job_id) const {
  auto& q = *impl_;
  if (!safe_id(job_id)) return std::nullopt;
  for (State s : kStates) {
    auto f = q.read_job(s, job_id);
    if (!f) continue;
    if (s == State::active) {
      if (auto l = q.read_lease(*f)) f->job.lease = l->lease;
      f->job.cancel_requested = posix::path_exists(q.mark_path(job_id));
    }
    return std::move(f->job);
  }
  return std::nullopt;
}

Stats Queue::stats() const {
  auto& q = *impl_;
  Stats st;
  auto pending = q.job_ids(State::pending);
  st.pending = pending.size();
  std::optional<std::int64_t> oldest;
  for (auto& id : pending)
    if (auto p = record::parse_id(id); p && (!oldest || p->time_ns < *oldest)) oldest = p->time_ns;
  if (oldest)
    st.oldest_pending_age = std::chrono::milliseconds(std::max<std::int64_t>(0, (posix::now_ns() - *oldest) / 1000000));
  st.done = q.job_ids(State::done).size();
  st.failed = q.job_ids(State::failed).size();
  st.cancelled = q.job_ids(State::cancelled).size();
  st.active_jobs = list(State::active);
  st.active = st.active_jobs.size();
  return st;
}

RecoverReport Queue::recover_orphans() { return impl_->recover(); }

std::size_t Queue::purge(std::chrono::seconds older_than) {
  auto& q = *impl_;
  auto now = std::chrono::system_clock::now();
  // An age past the epoch keeps everything (rather than wrapping round to
  // a cutoff in the future that would take everything).
  const auto since_epoch = std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch());
  auto cutoff = older_than >= since_epoch ? std::chrono::system_clock::time_point{} : now - older_than;
  std::size_t removed = 0;
  auto mtime = [](const fs::path& p) {
    auto st = posix::stat_path(p);
    return st ? std::chrono::system_clock::time_point(std::chrono::seconds(st->st_mtim.tv_sec))
              : std::chrono::system_clock::time_point::max();
  };
  for (State s : {State::done, State::failed, State::cancelled}) {
    for (auto& id : q.job_ids(s)) {
      std::chrono::system_clock::time_point when;
      try {
        auto f = q.read_job(s, id);
        if (!f) continue;
        when = f->job.finished.time_since_epoch().count() != 0 ? f->job.finished : mtime(q.job_path(s, id));
      } catch (const QueueError&) {
        when = mtime(q.job_path(s, id));
      }
      if (when > cutoff) continue;
      posix::unlink_file(q.state_dir(s) / (id + ".corrupt"));
      int generation = 0;
      try {
        if (auto f = q.read_job(s, id)) generation = f->generation;
      } catch (const QueueError&) {
      }
      if (posix::unlink_file(q.job_path(s, id))) {
        ++removed;
        for (int g = 0; g <= generation; ++g) ::rmdir(q.marker_path(id, g).c_str());
        ::rmdir(q.replay_marker_path(id).c_str());
        posix::unlink_file(q.lock_path(id));
      }
    }
  }
  // Temp files of writers that died, and lock files whose job has left the
  // queue (unlinked under the lock: a later opener's inode check fails).
  auto hour_ago = now - std::chrono::hours(1);
  for (auto& n : posix::list_dir(q.tmp()))
    if (mtime(q.tmp() / n) < hour_ago) posix::unlink_file(q.tmp() / n);
  for (auto& n : posix::list_dir(q.dir / "locks")) {
    if (!ends_with(n, ".lock") || n[0] == '.') continue;
    std::string id = strip(n, ".lock");
    auto path = q.dir / "locks" / n;
    if (mtime(path) > hour_ago) continue;
    auto has_job = [&] {
      for (State st : kStates)
        if (posix::path_exists(q.job_path(st, id))) return true;
      return false;
    };
    if (has_job()) continue;
    if (JobLock l = try_lock(path)) {
      if (!has_job()) posix::unlink_file(path);
    }
  }
  if (removed) logger()->info("purged {} finished jobs older than {} s", removed, older_than.count());
  return removed;
}

bool Queue::writable() const {
  try {
    posix::write_file_atomic(impl_->tmp(), impl_->tmp() / (".probe-" + posix::random_hex(6)), "x",
                             false);
    for (auto& n : posix::list_dir(impl_->tmp()))
      if (n.rfind(".probe-", 0) == 0 && n.find(".tmp") == std::string::npos)
        posix::unlink_file(impl_->tmp() / n);
    return true;
  } catch (const QueueError& e) {
    logger()->warn("queue {} not writable: {}", impl_->dir.string(), e.what());
    return false;
  }
}

SelfTest Queue::selftest() const { return selftest(impl_->dir); }

SelfTest Queue::selftest(const fs::path& dir) {
  SelfTest t;
  FsKind k = filesystem_of(dir);
  t.filesystem = k.name;
  t.local = k.local;
  fs::path p = dir / (".selftest-" + posix::hostname() + "-" + std::to_string(::getpid()) + "-" +
                      posix::random_hex(4) + ".lock");
  // Removed after both descriptors are closed (declared first, destroyed
  // last): SMB refuses to delete a file that is open.
  struct Cleanup {
    const fs::path& path;
    bool made = false;
    ~Cleanup() {
      // A FUSE client closes its handle after close() returns: SMB refuses
      // the delete (EBUSY) for a moment.
      for (int round = 0; made && round < 40; ++round) {
        if (::unlink(path.c_str()) == 0 || errno != EBUSY) break;
        std::this_thread::sleep_for(5ms);
      }
    }
  } cleanup{p};
  Fd a(::open(p.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!a) posix::fail(p, "create self-test lock file", errno);
  cleanup.made = true;
  t.writable = true;
  Fd b(::open(p.c_str(), O_RDWR | O_CLOEXEC));
  if (!b) posix::fail(p, "open self-test lock file", errno);
  if (::flock(a.get(), LOCK_EX | LOCK_NB) != 0) posix::fail(p, "flock (first descriptor)", errno);
  int r = ::flock(b.get(), LOCK_EX | LOCK_NB);
  int err = errno;
  if (r != 0 && (err == EWOULDBLOCK || err == EACCES)) {
    t.flock_excludes = true;
    t.message = "queue " + dir.string() + ": flock excludes a second descriptor (" + k.name + ")";
  } else if (r == 0) {
    t.message = "queue " + dir.string() + ": flock does not exclude a second descriptor on " +
                k.name + " (a nolock/nobrl mount?): claims would not be exclusive; mount with "
                "locking, or run lease-only if every host agrees";
  } else {
    t.message = "queue " + dir.string() + ": flock on a second descriptor failed: " +
                std::strerror(err);
  }
  return t;
}

}  // namespace iaserve::queue
