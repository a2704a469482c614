// bench_invoke: C concurrent clients creating against iaserve, with dpatsim
// adding L ms to every callback. Starts both programs itself (beside this
// one in bin/), on ephemeral ports, in a temporary folder it removes.
//
// Prints invocations/s, p50/p99 latency, p99 as a multiple of L and the
// server's peak RSS (VmHWM), against the targets:
//   p99 <= 3 L + 5 ms (C=64, L=5); >= 2,000 invocations/s (L=0); RSS <= 50 MB.
//
// Then, in the same run, the floor: C threads of this program making a
// create's two callbacks themselves (list the app's results on the slide,
// then PUT over the newest or POST the frame: the callback client iaserve
// uses), against the same dpatsim, with no iaserve. Its rate and p99 are
// what the callbacks alone cost on this machine at this concurrency; the
// figures above are also printed as ratios to them.
#include <CLI/CLI.hpp>
#include <curl/curl.h>
#include <boost/json/serialize.hpp>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/common/fs_cost.hpp"
#include "iaapi/curl_loop.hpp"
#include "iaapi/decode.hpp"
#include "iaapi/messages.hpp"
#include "iaapi/version.hpp"
#include "iaapi/result_builder.hpp"

extern char** environ;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// The CPUs this program may use, split: the last one for iaserve, the rest
// for DPAT's side (dpatsim and the clients).
struct CpuSplit {
  cpu_set_t server, dpat;

  static std::optional<CpuSplit> make() {
    cpu_set_t all;
    CPU_ZERO(&all);
    if (::sched_getaffinity(0, sizeof all, &all) != 0 || CPU_COUNT(&all) < 2) return std::nullopt;
    CpuSplit s;
    CPU_ZERO(&s.server);
    s.dpat = all;
    for (int c = CPU_SETSIZE - 1; c >= 0; --c)
      if (CPU_ISSET(c, &all)) {
        CPU_SET(c, &s.server);
        CPU_CLR(c, &s.dpat);
        break;
      }
    return s;
  }
  void use(const cpu_set_t& set) const {
    if (::sched_setaffinity(0, sizeof set, &set) != 0)
      throw std::runtime_error(std::string("sched_setaffinity: ") + std::strerror(errno));
  }
  static std::string names(const cpu_set_t& set) {
    std::string out;
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) out += (out.empty() ? "" : ",") + std::to_string(c);
    return out;
  }
};

struct Child {
  pid_t pid = -1;
  fs::path out, err;

  Child(const std::vector<std::string>& argv, const fs::path& dir, const std::string& name) {
    out = dir / (name + ".out");
    err = dir / (name + ".err");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ) != 0)
      throw std::runtime_error("cannot start " + argv[0]);
    posix_spawn_file_actions_destroy(&fa);
  }
  ~Child() {
    if (pid > 0) {
      ::kill(pid, SIGTERM);
      int st = 0;
      for (int i = 0; i < 100; ++i) {
        if (::waitpid(pid, &st, WNOHANG) == pid) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &st, 0);
    }
  }
  std::string first_line() const {
    for (int i = 0; i < 300; ++i) {
      std::ifstream in(out);
      std::string line;
      if (std::getline(in, line) && in.good()) return line;
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::ifstream e(err);
    std::stringstream ss;
    ss << e.rdbuf();
    throw std::runtime_error("no listening line from " + out.string() + ": " + ss.str());
  }
  std::string url() const {
    std::string l = first_line();
    const std::string p = "listening on ";
    if (l.rfind(p, 0) != 0) throw std::runtime_error("unexpected first line: " + l);
    return l.substr(p.size());
  }
  // CPU seconds (user + system) the process used so far.
  double cpu_seconds() const {
    std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto close = text.rfind(')');
    if (close == std::string::npos) return 0;
    std::istringstream rest(text.substr(close + 2));
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i)
      if (i == 14 || i == 15) ticks += std::stod(field);
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  long peak_rss_kb() const {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
    return -1;
  }
};

std::size_t sink(char* ptr, std::size_t size, std::size_t n, void* userdata) {
  static_cast<std::string*>(userdata)->append(ptr, size * n);
  return size * n;
}

// CPU seconds (user + system) this process (the clients) used so far.
double self_cpu_seconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_usec) / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1) + 0.5);
  std::nth_element(v.begin(), v.begin() + static_cast<long>(k), v.end());
  return v[k];
}

struct Figures {
  double rate = 0, p50 = 0, p99 = 0, seconds = 0;
  // Each request on its own (an iteration may make several): from its send
  // to its answer. For the floor, one callback round trip.
  double trip_p50 = 0, trip_p99 = 0;
  std::size_t ok = 0;
  long failed = 0;
};

// One HTTP request of a client's flow.
struct Request {
  const char* method = "POST";
  std::string url, body;
};
// What a flow does with an answer: another request, done, or failed (why).
struct Next {
  std::optional<Request> request;
  std::string error;  // non-empty: the iteration failed
};

// Runs `clients` closed-loop clients on this one thread, over one curl multi
// handle driven by epoll (iaapi::CurlLoop; keep-alive connections, like a
// load generator on another machine that costs this one little). Client c's iteration k sends first(c, k),
// then then(c, status, answer) for each answer until it returns no request;
// the iteration's latency runs from its first request to its last answer.
// Counts iterations ending in the `seconds` after `warmup`; on_start runs
// when those begin.
template <class First, class Then, class Start>
Figures closed_loop(int clients, int warmup, int seconds, const std::vector<std::string>& headers, const First& first,
                    const Then& then, const Start& on_start) {
  struct Client {
    CURL* h = nullptr;
    std::string answer, body;
    int k = 0;
    Clock::time_point t0, sent;
  };
  iaserve::iaapi::CurlLoop loop;
  CURLM* multi = loop.multi();
  curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, static_cast<long>(clients) * 2);
  curl_slist* hdr = nullptr;
  for (const auto& h : headers) hdr = curl_slist_append(hdr, h.c_str());
  std::vector<Client> cs(static_cast<std::size_t>(clients));
  auto send = [&](Client& cl, const Request& r) {
    cl.answer.clear();
    cl.body = r.body;
    cl.sent = Clock::now();
    curl_easy_setopt(cl.h, CURLOPT_URL, r.url.c_str());
    if (std::string_view(r.method) == "GET") {
      curl_easy_setopt(cl.h, CURLOPT_HTTPGET, 1L);
      curl_easy_setopt(cl.h, CURLOPT_CUSTOMREQUEST, nullptr);
    } else {
      curl_easy_setopt(cl.h, CURLOPT_POSTFIELDS, cl.body.c_str());
      curl_easy_setopt(cl.h, CURLOPT_POSTFIELDSIZE, static_cast<long>(cl.body.size()));
      curl_easy_setopt(cl.h, CURLOPT_CUSTOMREQUEST, std::string_view(r.method) == "POST" ? nullptr : r.method);
    }
    curl_multi_add_handle(multi, cl.h);
  };
  for (std::size_t c = 0; c < cs.size(); ++c) {
    Client& cl = cs[c];
    cl.h = curl_easy_init();
    curl_easy_setopt(cl.h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(cl.h, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(cl.h, CURLOPT_WRITEDATA, &cl.answer);
    curl_easy_setopt(cl.h, CURLOPT_PRIVATE, &cl);
    curl_easy_setopt(cl.h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(cl.h, CURLOPT_TIMEOUT_MS, 30000L);
    cl.t0 = Clock::now();
    send(cl, first(static_cast<int>(c), 0));
  }
  std::vector<double> lat, trips;
  Figures f;
  std::string first_error;
  bool measuring = false;
  const auto t_start = Clock::now() + std::chrono::seconds(warmup);
  const auto t_end = t_start + std::chrono::seconds(seconds);
  for (;;) {
    auto now = Clock::now();
    if (!measuring && now >= t_start) {
      on_start();
      measuring = true;
    }
    if (now >= t_end) break;
    loop.turn(std::chrono::milliseconds(50));
    int left = 0;
    while (CURLMsg* m = curl_multi_info_read(multi, &left)) {
      if (m->msg != CURLMSG_DONE) continue;
      Client* cl = nullptr;
      curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &cl);
      CURLcode res = m->data.result;
      curl_multi_remove_handle(multi, m->easy_handle);
      long status = 0;
      curl_easy_getinfo(cl->h, CURLINFO_RESPONSE_CODE, &status);
      const int c = static_cast<int>(cl - cs.data());
      if (measuring && res == CURLE_OK)
        trips.push_back(std::chrono::duration<double, std::milli>(Clock::now() - cl->sent).count());
      Next n = res == CURLE_OK ? then(c, status, cl->answer)
                               : Next{std::nullopt, std::string("transport: ") + curl_easy_strerror(res)};
      if (n.request) {
        send(*cl, *n.request);
        continue;
      }
      if (measuring) {
        if (n.error.empty()) {
          lat.push_back(std::chrono::duration<double, std::milli>(Clock::now() - cl->t0).count());
        } else {
          ++f.failed;
          if (first_error.empty()) first_error = n.error;
        }
      }
      cl->t0 = Clock::now();
      send(*cl, first(c, ++cl->k));
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - t_start).count();
  for (auto& cl : cs) {
    curl_multi_remove_handle(multi, cl.h);
    curl_easy_cleanup(cl.h);
  }
  curl_slist_free_all(hdr);
  if (!first_error.empty()) std::cerr << "first failure: " << first_error << "\n";
  f.ok = lat.size();
  f.seconds = elapsed;
  f.rate = static_cast<double>(lat.size()) / elapsed;
  f.p50 = percentile(lat, 0.50);
  f.p99 = percentile(lat, 0.99);
  f.trip_p50 = percentile(trips, 0.50);
  f.trip_p99 = percentile(trips, 0.99);
  return f;
}

std::string slide_name(int c, int k, int clients, int slides) {
  char name[32];
  std::snprintf(name, sizeof name, "b%04d", (c + k * clients) % slides);
  return name;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_invoke: create invocations per second and latency of iaserve against dpatsim"};
  int clients = 64, latency = 5, seconds = 10, slides = 256, warmup = 2, rounds = 1;
  std::string commit = "auto";
  unsigned io_threads = 2, pool_threads = 0, connections = 0, sim_io_threads = 2;
  std::string log_level = "info";
  bool keep = false;
  bool pin = false;
  std::string queue_dir;
  app.add_option("--clients,-c", clients, "concurrent clients (C)")->capture_default_str();
  app.add_option("--latency-ms,-l", latency, "ms dpatsim adds to every callback (L)")->capture_default_str();
  app.add_option("--seconds", seconds, "measured seconds")->capture_default_str();
  app.add_option("--warmup", warmup, "seconds of warm-up, not measured")->capture_default_str();
  app.add_option("--rounds", rounds,
                 "measure iaserve and the floor this many times, in turn, against the same two programs, and "
                 "print each round and the medians (the machine's own drift shows as their spread)")
      ->check(CLI::Range(1, 100))
      ->capture_default_str();
  app.add_option("--slides", slides, "distinct slides the clients create on")->capture_default_str();
  app.add_option("--io-threads", io_threads, "iaserve server.io_threads")->capture_default_str();
  app.add_option("--sim-io-threads", sim_io_threads, "dpatsim --io-threads")->capture_default_str();
  app.add_option("--pool-threads", pool_threads, "iaserve server.callback_pool_threads (0: its default)");
  app.add_option("--connections", connections, "iaserve server.callback_connections (0: its default)");
  app.add_option("--commit", commit, "iaserve queue.commit: auto, journal or fsync")->capture_default_str();
  app.add_option("--log-level", log_level, "iaserve log level (its log goes to a file)")->capture_default_str();
  app.add_option("--queue-dir", queue_dir,
                 "queue folder (default: in the temporary folder; /dev/shm/... takes the disk's fsync out)");
  app.add_flag("--pin", pin,
               "iaserve on a CPU of its own; dpatsim, the clients and the floor on the others "
               "(DPAT's side, as on a host of its own)");
  app.add_flag("--keep", keep, "keep the temporary folder (logs of both programs) and print its path");
  CLI11_PARSE(app, argc, argv);

  fs::path bindir = fs::read_symlink("/proc/self/exe").parent_path();
  char tmpl[] = "/tmp/bench-invoke-XXXXXX";
  if (!::mkdtemp(tmpl)) return 1;
  fs::path dir = tmpl;
  int rc = 0;
  try {
    fs::create_directories(dir / "slides");
    std::string mk = (bindir / "mkslide").string() + " " + (dir / "master.svs").string() +
                     " --width 1024 --height 768 > /dev/null";
    if (std::system(mk.c_str()) != 0) throw std::runtime_error("mkslide failed");
    for (int i = 0; i < slides; ++i) {
      char name[32];
      std::snprintf(name, sizeof name, "b%04d.svs", i);
      fs::create_symlink(dir / "master.svs", dir / "slides" / name);
    }
    const std::string token = "bench-token-0123456789";
    std::vector<std::string> sim_argv{(bindir / "dpatsim").string(), "serve", "--slides", (dir / "slides").string(),
                                      "--listen", "127.0.0.1:0", "--token", token,
                                      "--io-threads", std::to_string(sim_io_threads)};
    if (latency > 0) {
      sim_argv.push_back("--latency-ms");
      sim_argv.push_back(std::to_string(latency));
    }
    // --pin: each child inherits this program's CPUs when it starts.
    const std::optional<CpuSplit> split = pin ? CpuSplit::make() : std::nullopt;
    if (pin && !split) throw std::runtime_error("--pin needs at least 2 CPUs to choose from");
    if (split) split->use(split->dpat);
    Child sim(sim_argv, dir, "dpatsim");
    fs::path qdir = queue_dir.empty() ? dir / "queue" : fs::path(queue_dir) / dir.filename();
    // Each create writes a file: what one costs on this filesystem now.
    const fs::path cost_dir = qdir.parent_path() / (dir.filename().string() + "-create-cost");
    double create_us = iaserve::bench::create_cost_us(cost_dir, 2000);
    std::string cb = sim.url();

    std::ofstream(dir / "iaserve.toml") << "[server]\nlisten = \"127.0.0.1:0\"\nio_threads = " << io_threads
                                        << (pool_threads ? "\ncallback_pool_threads = " + std::to_string(pool_threads) : "")
                                        << (connections ? "\ncallback_connections = " + std::to_string(connections) : "")
                                        << "\nmax_pending_callbacks = 4096\n[queue]\ndir = \"" << qdir.string()
                                        << "\"\ncommit = \"" << commit << "\"\n[data]\ndir = \"" << (dir / "data").string() << "\"\n[log]\nlevel = \""
                                        << log_level << "\"\n[callback]\nretries = 0\n"
                                        << "[[apps]]\nroute = \"/apps/bench\"\napplication_id = \"bench\"\n";
    if (split) split->use(split->server);
    Child serve({(bindir / "iaserve").string(), "--config", (dir / "iaserve.toml").string()}, dir, "iaserve");
    if (split) split->use(split->dpat);
    const std::string target = serve.url() + "/apps/bench";

    curl_global_init(CURL_GLOBAL_DEFAULT);
    // CPU seconds used so far by iaserve, dpatsim and this program (the clients).
    struct Cpu {
      double serve = 0, sim = 0, self = 0;
    };
    auto cpu_now = [&] { return Cpu{serve.cpu_seconds(), sim.cpu_seconds(), self_cpu_seconds()}; };
    auto cpu_since = [&](const Cpu& a) {
      Cpu b = cpu_now();
      return Cpu{b.serve - a.serve, b.sim - a.sim, b.self - a.self};
    };
    // Microseconds of `cpu` seconds per successful call of `f`.
    auto per_call_us = [](double cpu, const Figures& f) {
      return f.ok ? cpu * 1e6 / static_cast<double>(f.ok) : 0.0;
    };
    auto create = [&](int c, int k) {
      return Request{"POST", target,
                     "{\"action\":\"create\",\"applicationId\":\"bench\",\"slideId\":\"" +
                         slide_name(c, k, clients, slides) + "\",\"callbackInfo\":{\"url\":\"" + cb +
                         "\",\"token\":\"" + token + "\"},\"input\":{\"type\":\"wholeSlide\"}}"};
    };
    auto created = [](int, long status, const std::string& answer) {
      return Next{std::nullopt, status == 200 ? "" : "status " + std::to_string(status) + " " + answer};
    };

    // The floor: the two callbacks of a create, made here, without iaserve:
    // list the app's results on the slide, then PUT over the newest or POST
    // the frame, with the headers iaserve's callback client sends.
    namespace ia = iaserve::iaapi;
    std::vector<std::string> slide_of(static_cast<std::size_t>(clients));
    auto list = [&](int c, int k) {
      slide_of[static_cast<std::size_t>(c)] = slide_name(c, k, clients, slides);
      return Request{"GET", cb + "/applications/bench/results/slide/" + slide_of[static_cast<std::size_t>(c)], ""};
    };
    auto store = [&](int c, long status, const std::string& answer) -> Next {
      if (status == 200 && answer.front() == '[') {
        const std::string& slide = slide_of[static_cast<std::size_t>(c)];
        ia::Result frame = ia::progress_result(slide, 1024, 768, "analysis queued", 0, "bench");
        auto parsed = ia::parse_json(answer);
        if (!parsed) return {std::nullopt, "list: " + parsed.error.what()};
        auto listed = ia::decode<std::vector<ia::StoredResult>>(*parsed);
        if (!listed) return {std::nullopt, "list: " + listed.error.what()};
        if (listed->empty())
          return {Request{"POST", cb + "/applications/bench/results", boost::json::serialize(ia::to_json(frame))}, ""};
        const auto& newest = *std::max_element(listed->begin(), listed->end(),
                                               [](const auto& a, const auto& b) { return a.id < b.id; });
        ia::StoredResult update;
        static_cast<ia::Result&>(update) = frame;
        update.id = newest.id;
        update.version_id = newest.version_id;
        return {Request{"PUT", cb + "/applications/bench/results/" + std::to_string(newest.id),
                        boost::json::serialize(ia::to_json(update))},
                ""};
      }
      if (status == 200 || status == 201) return {};
      return {std::nullopt, "status " + std::to_string(status) + " " + answer};
    };
    // Each round: iaserve, then the floor, each after its own warm-up.
    struct Round {
      Figures run, floor;
      Cpu run_cpu, floor_cpu;
    };
    std::vector<Round> measured;
    for (int r = 0; r < rounds; ++r) {
      Round round;
      Cpu start;
      round.run = closed_loop(clients, warmup, seconds, {"Content-Type: application/json", "Expect:"}, create,
                              created, [&] { start = cpu_now(); });
      round.run_cpu = cpu_since(start);
      round.floor = closed_loop(clients, warmup, seconds,
                                {"Content-Type: application/json", "Expect:", "Accept: application/json",
                                 "Authorization: Bearer " + token,
                                 std::string("X-Sectra-ApiVersion: ") + iaserve::kApiVersion},
                                list, store, [&] { start = cpu_now(); });
      round.floor_cpu = cpu_since(start);
      measured.push_back(round);
    }
    const long rss_kb = serve.peak_rss_kb();
    if (rounds > 1) {
      std::printf("round  iaserve: creates/s   p50 ms   p99 ms  CPU us/create (iaserve dpatsim)   "
                  "floor: creates/s   p50 ms   p99 ms  dpatsim us/create\n");
      for (std::size_t r = 0; r < measured.size(); ++r) {
        const Round& m = measured[r];
        std::printf("%5zu  %18.0f %8.2f %8.2f  %24.0f %7.0f   %16.0f %8.2f %8.2f %18.0f\n", r + 1, m.run.rate,
                    m.run.p50, m.run.p99, per_call_us(m.run_cpu.serve, m.run), per_call_us(m.run_cpu.sim, m.run),
                    m.floor.rate, m.floor.p50, m.floor.p99, per_call_us(m.floor_cpu.sim, m.floor));
      }
      std::printf("(the lines below give each figure's median over the %d rounds, with its range)\n", rounds);
    }
    // The median over the rounds of one figure, with its range when there
    // are several rounds.
    auto median_of = [&](auto figure) {
      std::vector<double> v;
      for (const Round& m : measured) v.push_back(figure(m));
      std::sort(v.begin(), v.end());
      const std::size_t n = v.size();
      return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
    };
    auto range_of = [&](auto figure, const char* format) {
      if (measured.size() < 2) return std::string();
      double lo = figure(measured[0]), hi = lo;
      for (const Round& m : measured) {
        lo = std::min(lo, figure(m));
        hi = std::max(hi, figure(m));
      }
      char buf[96];
      std::snprintf(buf, sizeof buf, format, lo, hi);
      return std::string(buf);
    };
    // The figures printed below: medians (one round: its own).
    Figures run, floor;
    Cpu run_cpu;  // summed over the rounds
    run.rate = median_of([](const Round& m) { return m.run.rate; });
    run.p50 = median_of([](const Round& m) { return m.run.p50; });
    run.p99 = median_of([](const Round& m) { return m.run.p99; });
    floor.rate = median_of([](const Round& m) { return m.floor.rate; });
    floor.p50 = median_of([](const Round& m) { return m.floor.p50; });
    floor.p99 = median_of([](const Round& m) { return m.floor.p99; });
    floor.trip_p50 = median_of([](const Round& m) { return m.floor.trip_p50; });
    floor.trip_p99 = median_of([](const Round& m) { return m.floor.trip_p99; });
    for (const Round& m : measured) {
      run.ok += m.run.ok;
      run.failed += m.run.failed;
      run.seconds += m.run.seconds;
      floor.ok += m.floor.ok;
      floor.failed += m.floor.failed;
      run_cpu.serve += m.run_cpu.serve;
      run_cpu.sim += m.run_cpu.sim;
      run_cpu.self += m.run_cpu.self;
    }
    auto us_per = [&](double Cpu::*who, bool of_run) {
      return median_of([&](const Round& m) {
        return of_run ? per_call_us(m.run_cpu.*who, m.run) : per_call_us(m.floor_cpu.*who, m.floor);
      });
    };
    const int rounds_met = static_cast<int>(std::count_if(measured.begin(), measured.end(), [&](const Round& m) {
      return m.run.p99 <= 3 * latency + 5;
    }));
    auto or_default = [](unsigned v) { return v ? std::to_string(v) : std::string("default"); };
    std::printf("bench_invoke: C=%d clients, L=%d ms per callback, %.1f s measured (%d round%s), %u io threads, "
                "%s pool threads, %s callback connections\n",
                clients, latency, run.seconds, rounds, rounds > 1 ? "s" : "", io_threads,
                or_default(pool_threads).c_str(), or_default(connections).c_str());
    if (split)
      std::printf("pinned: iaserve on CPU %s; dpatsim, the clients and the floor on CPUs %s\n",
                  split->names(split->server).c_str(), split->names(split->dpat).c_str());
    std::printf("invocations: %zu ok, %ld failed; queue folder %s\n", run.ok, run.failed, qdir.c_str());
    std::printf("creating an empty file there before the run: %.0f us (about 12 us on a quiet ext4 here; far more\n"
                "  within minutes of mass deletions on ext4 without a journal: then use --queue-dir elsewhere)\n",
                create_us);
    std::error_code qec;
    if (!queue_dir.empty()) {
      fs::remove_all(qdir, qec);
      fs::remove_all(cost_dir, qec);
    }
    std::printf("invocations/s: %.0f%s (target >= 2000 at L=0 on 2 cores)\n", run.rate,
                range_of([](const Round& m) { return m.run.rate; }, " (%.0f-%.0f)").c_str());
    const double serve_us = us_per(&Cpu::serve, true);
    std::printf(
        "CPU used while measuring: iaserve %.2f s (%.0f invocations per iaserve CPU second, %.0f us each%s), "
        "dpatsim %.2f s (%.0f us per invocation), clients %.2f s\n",
        run_cpu.serve, serve_us > 0 ? 1e6 / serve_us : 0.0, serve_us,
        range_of([&](const Round& m) { return per_call_us(m.run_cpu.serve, m.run); }, "; %.0f-%.0f").c_str(),
        run_cpu.sim, us_per(&Cpu::sim, true), run_cpu.self);
    std::printf("latency p50: %.2f ms%s, p99: %.2f ms%s\n", run.p50,
                range_of([](const Round& m) { return m.run.p50; }, " (%.2f-%.2f)").c_str(), run.p99,
                range_of([](const Round& m) { return m.run.p99; }, " (%.2f-%.2f)").c_str());
    if (latency > 0) {
      std::printf("p99 / L: %.2f (target p99 <= 3L + 5 ms = %d ms: %s", run.p99 / latency, 3 * latency + 5,
                  run.p99 <= 3 * latency + 5 ? "met" : "missed");
      if (rounds > 1) std::printf("; met in %d of %d rounds", rounds_met, rounds);
      std::printf(")\n");
    }
    std::printf("floor, the two callbacks made directly (C=%d, no iaserve): %.0f/s, p50 %.2f ms, p99 %.2f ms%s, "
                "%ld failed; CPU per create: dpatsim %.0f us, callback client %.0f us\n",
                clients, floor.rate, floor.p50, floor.p99,
                range_of([](const Round& m) { return m.floor.p99; }, " (%.2f-%.2f)").c_str(), floor.failed,
                us_per(&Cpu::sim, false), us_per(&Cpu::self, false));
    if (floor.rate > 0 && floor.p99 > 0)
      std::printf("iaserve against the floor: rate x%.2f, p50 x%.2f, p99 x%.2f (p99 %+.2f ms)\n",
                  run.rate / floor.rate, floor.p50 > 0 ? run.p50 / floor.p50 : 0.0, run.p99 / floor.p99,
                  run.p99 - floor.p99);
    // DESIGN.md words the target as "p99 <= 3 callback round trips + 5 ms";
    // here a round trip is the floor's median one, measured in this run
    // against the same dpatsim under the same load (at least L). The issue's
    // 3L + 5 above takes a round trip as exactly L.
    if (latency > 0 && floor.trip_p50 > 0) {
      const auto limit = [](const Round& m) { return 3 * m.floor.trip_p50 + 5; };
      const int met = static_cast<int>(
          std::count_if(measured.begin(), measured.end(), [&](const Round& m) { return m.run.p99 <= limit(m); }));
      std::printf("a callback round trip in the floor: p50 %.2f ms, p99 %.2f ms; p99 <= 3 round trips (p50) + 5 ms "
                  "= %.2f ms: %s",
                  floor.trip_p50, floor.trip_p99, 3 * floor.trip_p50 + 5, run.p99 <= 3 * floor.trip_p50 + 5 ? "met" : "missed");
      if (rounds > 1) std::printf("; met in %d of %d rounds", met, rounds);
      std::printf("\n");
    }
    std::printf("iaserve peak RSS (VmHWM): %.1f MB (target <= 50 MB: %s)\n", static_cast<double>(rss_kb) / 1024.0,
                rss_kb >= 0 && rss_kb <= 50 * 1024 ? "met" : "missed");
    curl_global_cleanup();
  } catch (const std::exception& e) {
    std::cerr << "bench_invoke: " << e.what() << "\n";
    rc = 1;
  }
  std::error_code ec;
  if (keep) {
    for (const char* sub : {"slides", "queue", "data"}) fs::remove_all(dir / sub, ec);
    std::printf("kept: %s\n", dir.c_str());
  } else {
    fs::remove_all(dir, ec);
  }
  return rc;
}
