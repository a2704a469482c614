// The disk queue over SMB: a private smbd on loopback serves one share, which
// smbnetfs (a FUSE client on libsmbclient) mounts twice, as two hosts would.
// This kernel may have no cifs module, so the FUSE client is the SMB client.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>

#include "tests/integration/queue/common.hpp"

using namespace iaserve;
using namespace iaserve::test;
using namespace iaserve::test::queue_support;
using namespace std::chrono_literals;
namespace json = boost::json;

namespace {

constexpr const char* kSmbd = "/usr/sbin/smbd";
constexpr const char* kSmbpasswd = "/usr/bin/smbpasswd";
constexpr const char* kSmbnetfs = "/usr/bin/smbnetfs";
constexpr const char* kUser = "root";  // smbpasswd maps an SMB user onto a Unix one
constexpr const char* kPassword = "iaserve-smb-test";
constexpr unsigned long kFuseMagic = 0x65735546UL;

std::string fusermount() {
  for (const char* p :
       {"/usr/bin/fusermount3", "/usr/bin/fusermount", "/bin/fusermount3", "/bin/fusermount"})
    if (::access(p, X_OK) == 0) return p;
  return {};
}

// Why this machine cannot run the test, or empty.
std::string cannot_run() {
  if (::access("/dev/fuse", R_OK | W_OK) != 0) return "/dev/fuse is absent or not usable";
  if (::access(kSmbd, X_OK) != 0 || ::access(kSmbpasswd, X_OK) != 0)
    return "samba (smbd, smbpasswd) is not installed (scripts/setup)";
  if (::access(kSmbnetfs, X_OK) != 0) return "smbnetfs is not installed (scripts/setup)";
  if (fusermount().empty()) return "fusermount3 is not installed (fuse3, scripts/setup)";
  if (::geteuid() != 0) return "smbd needs root to serve a share as a Unix user";
  return {};
}


void write_text(const fs::path& p, const std::string& text,
                fs::perms perms = fs::perms::owner_read | fs::perms::owner_write) {
  std::ofstream(p) << text;
  fs::permissions(p, perms);
}

// Children of pid, from every thread of it (smbnetfs forks one helper per
// SMB connection, from any of its threads).
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> kids;
  std::error_code ec;
  for (auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream in(task.path() / "children");
    for (long k = 0; in >> k;) kids.push_back(static_cast<pid_t>(k));
  }
  return kids;
}

// Waits up to 10 s for processes this test started (directly or not) to end,
// then kills those left. target < 0 names a process group.
void reap(const std::vector<pid_t>& targets) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  for (pid_t p : targets) {
    while (::kill(p, 0) == 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(20ms);
    if (::kill(p, 0) == 0) ::kill(p, SIGKILL);
  }
}

// A loopback port nobody listens on now (smbd binds it a moment later).
int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// smbd with a private configuration: its own state, lock, cache, pid and
// passdb under `root`, one share "q" on `root/share`, listening on one
// loopback port only. The SMB user is root with a password in the private
// passdb. Stopped by its pid (SIGTERM; its helpers follow it). In its own
// process group: smbd signals its whole group when it stops.
class SambaServer {
 public:
  explicit SambaServer(const fs::path& root) : root_(root) {
    for (auto d : {"share", "state", "lock", "cache", "pid", "private", "ncalrpc", "log"})
      fs::create_directories(root / d);
    auto r = [&](const char* d) { return (root / d).string(); };
    std::string conf = "[global]\n";
    auto set = [&](const std::string& key, const std::string& value) {
      conf += "  " + key + " = " + value + "\n";
    };
    set("server role", "standalone server");
    set("interfaces", "127.0.0.1");
    set("bind interfaces only", "yes");
    set("disable netbios", "yes");
    set("private dir", r("private"));
    set("lock directory", r("lock"));
    set("state directory", r("state"));
    set("cache directory", r("cache"));
    set("pid directory", r("pid"));
    set("ncalrpc dir", r("ncalrpc"));
    set("log file", r("log") + "/smbd.log");
    set("passdb backend", "tdbsam:" + r("private") + "/passdb.tdb");
    set("map to guest", "never");
    set("load printers", "no");
    set("printcap name", "/dev/null");
    set("disable spoolss", "yes");
    // No samba-dcerpcd: nothing here lists shares, and it would outlive smbd.
    set("rpc start on demand helpers", "no");
    conf += "[q]\n";
    set("path", r("share"));
    set("read only", "no");
    set("create mask", "0600");
    set("directory mask", "0700");
    conf_ = root / "smb.conf";
    write_text(conf_, conf);
    auto pw = run({"/bin/sh", "-c",
                   std::string("printf '%s\\n%s\\n' \"$PW\" \"$PW\" | ") + kSmbpasswd + " -c '" +
                       conf_.string() + "' -s -a " + kUser},
                  30s, {{"PW", kPassword}});
    if (pw.code != 0)
      throw std::runtime_error("smbpasswd -a " + std::string(kUser) + ": " + pw.err + pw.out);
    // The port is free when picked, not when smbd binds it: a few tries.
    std::string why;
    for (int attempt = 0; attempt < 3; ++attempt) {
      port_ = free_port();
      smbd_ = std::make_unique<Process>(std::vector<std::string>{kSmbd, "-s", conf_.string(), "-p",
                                                                 std::to_string(port_), "-F",
                                                                 "--debug-stdout", "-d", "1"});
      auto deadline = std::chrono::steady_clock::now() + 20s;
      while (smbd_->running() && !accepts(port_) && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(20ms);
      if (smbd_->running() && accepts(port_)) return;
      why = "smbd on port " + std::to_string(port_) + ": " + log();
      stop();
    }
    throw std::runtime_error(why);
  }
  ~SambaServer() { stop(); }
  int port() const { return port_; }
  fs::path share() const { return root_ / "share"; }
  std::string log() const { return smbd_->stdout_text() + smbd_->stderr_text(); }

 private:
  void stop() {
    if (!smbd_) return;
    pid_t group = smbd_->pid();  // smbd -F makes its own session and group
    smbd_.reset();               // SIGTERM, then waits for it
    reap({-group});              // its helpers (notifyd, cleanupd, a child per client)
  }
  fs::path root_;
  int port_ = 0;
  fs::path conf_;
  std::unique_ptr<Process> smbd_;
};

// One smbnetfs mount (in the foreground, so this test owns its pid) of the
// whole SMB network; the share is at <mount>/127.0.0.1:<port>/q. Unmounted
// with fusermount -u at the end (a lazy unmount if that fails).
class SmbMount {
 public:
  SmbMount(const fs::path& root, const SambaServer& server) : mnt_(root / "mnt") {
    auto home = root / "home";
    fs::create_directories(home / ".smb");
    fs::create_directories(mnt_);
    fs::permissions(home / ".smb", fs::perms::owner_all);
    // smbnetfs ignores auth lines in a config others can read.
    config_ = home / ".smb" / "smbnetfs.conf";
    write_text(config_, std::string("auth \"") + kUser + "\" \"" + kPassword +
                            "\"\n"
                            "smb_query_browsers false\n");
    log_ = root / "smbnetfs.log";
    proc_ = std::make_unique<Process>(
        std::vector<std::string>{kSmbnetfs, mnt_.string(), "-f", "-o",
                                 "config=" + config_.string() + ",log_file=" + log_.string()},
        std::map<std::string, std::string>{{"HOME", home.string()}});
    share_ = mnt_ / ("127.0.0.1:" + std::to_string(server.port())) / "q";
    try {
      wait_for_share();
    } catch (...) {
      stop();
      throw;
    }
  }
  ~SmbMount() { stop(); }
  // The share's root folder as this "host" sees it.
  const fs::path& share() const { return share_; }

 private:
  void wait_for_share() {
    auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      struct ::statfs s {};
      std::error_code ec;
      if (::statfs(mnt_.c_str(), &s) == 0 && static_cast<unsigned long>(s.f_type) == kFuseMagic) {
        mounted_ = true;
        if (fs::is_directory(share_, ec)) break;
      }
      if (!proc_->running())
        throw std::runtime_error("smbnetfs exited: " + proc_->stderr_text() + read_file(log_));
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("smbnetfs: " + share_.string() +
                                 " does not appear: " + read_file(log_));
      std::this_thread::sleep_for(50ms);
    }
  }
  void stop() {
    if (!proc_) return;
    auto helpers = children_of(proc_->pid());
    if (mounted_ && run({fusermount(), "-u", mnt_.string()}, 5s).code != 0)
      ::umount2(mnt_.c_str(), MNT_DETACH);
    proc_->wait(10s);  // smbnetfs ends with its mount; ~Process stops it otherwise
    proc_.reset();
    reap(helpers);  // its helpers end when they see it gone
  }
  fs::path mnt_, config_, log_, share_;
  bool mounted_ = false;
  std::unique_ptr<Process> proc_;
};

// A server and two client mounts of its share, in one temp folder.
struct TwoHosts {
  TempDir t{"iaserve-smb"};
  SambaServer server{t / "server"};
  SmbMount a{t / "host-a", server};
  SmbMount b{t / "host-b", server};
};

bool flock_shared(const fs::path& a, const fs::path& b) {
  int fa = ::open((a / "probe.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  int fb = ::open((b / "probe.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  REQUIRE(fa >= 0);
  REQUIRE(fb >= 0);
  REQUIRE(::flock(fa, LOCK_EX | LOCK_NB) == 0);
  bool shared = ::flock(fb, LOCK_EX | LOCK_NB) != 0;
  ::close(fa);
  ::close(fb);
  ::unlink((a / "probe.lock").c_str());
  return shared;
}

RunResult iaqueue(const fs::path& dir, std::vector<std::string> args) {
  std::vector<std::string> argv = {bin("iaqueue"), "--dir", dir.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 60s, kQuiet);
}

// The server and two mounts with the queue folder made over SMB (mkdir on
// host a), or nullptr after saying why this machine cannot run the test.
std::unique_ptr<TwoHosts> two_hosts_or_skip() {
  auto why = cannot_run();
  if (!why.empty()) {
    WARN("skipped: " << why);
    return nullptr;
  }
  log::setup("warn");
  auto h = std::make_unique<TwoHosts>();
  fs::create_directories(h->a.share() / "q");
  return h;
}

}  // namespace

TEST_CASE("one SMB share, two smbnetfs mounts: the queue polls, the other host reads it",
          "[queue][smb]") {
  auto hosts = two_hosts_or_skip();
  if (!hosts) return;
  TwoHosts& h = *hosts;
  auto qa_dir = h.a.share() / "q", qb_dir = h.b.share() / "q";
  REQUIRE(fs::is_directory(h.server.share() / "q"));
  REQUIRE(fs::is_directory(qb_dir));

  // smbnetfs keeps flock inside each mount: the two hosts do not share it,
  // while each mount alone passes the queue's self-test.
  CHECK_FALSE(flock_shared(h.a.share(), h.b.share()));
  auto r = iaqueue(qa_dir, {"selftest"});
  INFO(r.out << r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("flock excludes a second descriptor (fuse)"));
  CHECK_THAT(r.out, Catch::Contains("filesystem fuse (network: polling)"));
  WARN("queue on smbnetfs: " << r.out);

  std::vector<std::string> ids;
  {
    queue::Queue qa(qa_dir);
    CHECK(qa.wakeup() == queue::Wakeup::poll);  // inotify would not see the other host
    auto st = qa.selftest();
    CHECK(st.filesystem == "fuse");
    CHECK_FALSE(st.local);
    CHECK(st.flock_excludes);
    for (int i = 0; i < 3; ++i)
      ids.push_back(qa.enqueue({"slide-" + std::to_string(i), "smb", i, {}}));
  }
  // The jobs host a wrote are on the server's disk, and host b reads them.
  CHECK(fs::exists(h.server.share() / "q" / "pending" / (ids[0] + ".json")));
  r = iaqueue(qb_dir, {"stats", "--json"});
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  auto st = json::parse(r.out).as_object();
  CHECK(st.at("pending").as_int64() == 3);
  CHECK(st.at("active").as_int64() == 0);
  r = iaqueue(qb_dir, {"ls", "--json"});
  REQUIRE(r.code == 0);
  auto ls = json::parse(r.out).as_array();
  REQUIRE(ls.size() == 3);
  CHECK(ls[0].at("id").as_string() == ids[2]);  // highest priority first
  r = iaqueue(qb_dir, {"show", ids[1]});
  REQUIRE(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("\"slide_key\":\"slide-1\""));
  // Cancelling a pending job from host b is a rename over SMB.
  CHECK(iaqueue(qb_dir, {"cancel", ids[0]}).code == 0);
  CHECK(fs::exists(h.server.share() / "q" / "cancelled" / (ids[0] + ".json")));
  r = iaqueue(qa_dir, {"stats", "--json"});
  REQUIRE(r.code == 0);
  st = json::parse(r.out).as_object();
  CHECK(st.at("pending").as_int64() == 2);
  CHECK(st.at("cancelled").as_int64() == 1);
  // Purge (unlinks over SMB) and an orphan sweep with nothing to recover.
  r = iaqueue(qa_dir, {"purge", "--older-than", "0s"});
  INFO("purge: " << r.out << r.err);
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("removed 1"));
  CHECK_FALSE(fs::exists(h.server.share() / "q" / "cancelled" / (ids[0] + ".json")));
  r = iaqueue(qb_dir, {"recover"});
  CHECK(r.code == 0);
  CHECK_THAT(r.out, Catch::Contains("requeued 0"));
  // The self-test closes its descriptors before removing its lock file: SMB
  // refuses to delete a file that is open (EBUSY), which used to leave one
  // behind at every open of the queue.
  std::size_t left = 0;
  for (auto& e : fs::directory_iterator(h.server.share() / "q"))
    if (e.path().filename().string().rfind(".selftest-", 0) == 0) ++left;
  CHECK(left == 0);
}

TEST_CASE("two hosts on one SMB share (smbnetfs, flock per mount): each job runs once",
          "[queue][smb]") {
  auto hosts = two_hosts_or_skip();
  if (!hosts) return;
  TwoHosts& h = *hosts;
  auto qa_dir = h.a.share() / "q", qb_dir = h.b.share() / "q";
  REQUIRE_FALSE(flock_shared(h.a.share(), h.b.share()));

  // One claim from host b first: every state change after a claim writes at
  // the end of the job file (not O_APPEND, which smbnetfs cannot open
  // write-only: its seek to the end fails, and the mount then fails every
  // request for seconds).
  {
    auto probe = h.b.share() / "probe";
    fs::create_directories(probe);
    queue::Queue q(probe);
    auto id = q.enqueue({"probe", "smb", 0, {}});
    auto c = q.try_claim();
    REQUIRE(c);
    CHECK(c->job().id == id);
    c->complete();
    CHECK(q.find(id)->state == queue::State::done);
  }

  const int jobs = 60;
  // Half the jobs from each host: a FUSE client may show a folder listing a
  // moment old, so jobs from one host alone could all be taken there before
  // the other host sees one.
  auto ids = enqueue_many(qa_dir, jobs / 2, 4, {}, "slide-a-");
  for (auto& id : enqueue_many(qb_dir, jobs / 2, 4, {}, "slide-b-")) ids.push_back(id);
  auto out = h.t / "out";  // local: the side files must not depend on the share
  fs::create_directories(out);
  std::vector<std::unique_ptr<Process>> workers;
  const std::vector<std::string> opts = {"--idle-ms",           "300", "--poll-ms",          "20",
                                         "--lease-interval-ms", "100", "--lease-timeout-ms", "5000",
                                         "--hold-max-ms",       "300"};
  // Jobs of up to 300 ms: the run lasts seconds, so a host whose workers
  // start late still gets some.
  const std::map<std::string, std::string> env{{"IASERVE_LOG", "info"}};
  for (int i = 0; i < 6; ++i)
    workers.push_back(std::make_unique<Process>(worker_argv(i % 2 ? qb_dir : qa_dir, out, opts), env));
  for (auto& w : workers) {
    auto code = w->wait(40s);
    if (!code) {  // say what is left before giving up
      std::string left;
      for (const char* state : {"pending", "active"})
        for (auto& e : fs::directory_iterator(h.server.share() / "q" / state))
          left += std::string(state) + "/" + e.path().filename().string() + "\n";
      // Where it waits: a kernel wait in a FUSE request means the SMB
      // client stalled, a running state means the worker loops.
      std::string state = read_file("/proc/" + std::to_string(w->pid()) + "/stat") + " wchan " +
                          read_file("/proc/" + std::to_string(w->pid()) + "/wchan");
      for (auto& other : workers) other->kill9();
      INFO("worker log:\n" << w->stderr_text() << "\nleft on the server:\n" << left << "\nworker state: " << state);
      FAIL("a worker did not end within 40 s");
    }
    INFO(w->stderr_text());
    CHECK(*code == 0);
  }
  check_each_ran_once(out, ids);
  queue::Queue qb(qb_dir);
  auto s = qb.stats();
  CHECK(s.done == static_cast<std::size_t>(jobs));
  CHECK(s.pending + s.active + s.failed == 0);
  std::size_t on_a = 0, on_b = 0;
  for (std::size_t i = 0; i < workers.size(); ++i) (i % 2 ? on_b : on_a) += completed_by(*workers[i]);
  std::string b_logs;
  for (std::size_t i = 1; i < workers.size(); i += 2) {
    auto err = workers[i]->stderr_text();
    b_logs += "host b worker: " + workers[i]->stdout_text() + "\n" +
              (err.size() > 1500 ? err.substr(err.size() - 1500) : err) + "\n";
  }
  INFO(b_logs);
  CHECK(on_a + on_b == static_cast<std::size_t>(jobs));
  CHECK(on_a > 0);
  CHECK(on_b > 0);
}
