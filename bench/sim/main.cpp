// bench_sim: how fast dpatsim serves what apps download.
//  - /files: a multi-file slide with one large file, fetched over loopback
//    into a counting sink (libcurl), best of N rounds; target >= 1 GB/s.
//  - tiles: every tile of the top DZI levels of an mkslide slide, once
//    rendered (cache cold) and once from the tile cache, on T client threads.
// Prints figures and their ratio to the target. Starts dpatsim and mkslide
// from the folder this program lives in.
#include <curl/curl.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

fs::path self_dir() { return fs::read_symlink("/proc/self/exe").parent_path(); }

pid_t spawn(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
  return pid;
}

int run(const std::vector<std::string>& argv, const fs::path& log) {
  pid_t pid = spawn(argv, log, log.string() + ".err");
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string first_line(const fs::path& p, pid_t pid) {
  for (int i = 0; i < 400; ++i) {
    std::ifstream in(p);
    std::string line;
    if (std::getline(in, line) && in.good()) return line;
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) throw std::runtime_error("dpatsim exited at start");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("dpatsim did not print its URL");
}

size_t count_sink(char*, size_t size, size_t n, void* user) {
  *static_cast<std::uint64_t*>(user) += size * n;
  return size * n;
}

struct Fetch {
  long status = 0;
  std::uint64_t bytes = 0;
};

Fetch fetch(CURL* c, const std::string& url, const std::string& auth) {
  Fetch f;
  curl_slist* hl = curl_slist_append(nullptr, auth.c_str());
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, count_sink);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &f.bytes);
  curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  if (curl_easy_perform(c) == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &f.status);
  curl_slist_free_all(hl);
  return f;
}

// The ceiling of this machine for the same client: a bare server that
// answers every request with a header and one sendfile() of the file.
class BareServer {
 public:
  explicit BareServer(const fs::path& file) : file_(file) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 8) != 0)
      throw std::runtime_error("bare server: bind/listen failed");
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~BareServer() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/file"; }

 private:
  void loop() {
    for (;;) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        req.append(buf, static_cast<std::size_t>(n));
      }
      int f = ::open(file_.c_str(), O_RDONLY | O_CLOEXEC);
      auto size = fs::file_size(file_);
      std::string head = "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\nConnection: close\r\n\r\n";
      (void)!::send(c, head.data(), head.size(), MSG_NOSIGNAL);
      off_t off = 0;
      while (static_cast<std::uint64_t>(off) < size)
        if (::sendfile(c, f, &off, size - static_cast<std::uint64_t>(off)) <= 0) break;
      ::close(f);
      ::close(c);
    }
  }
  fs::path file_;
  int fd_ = -1;
  unsigned short port_ = 0;
  std::thread thread_;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_sim: dpatsim /files throughput and tiles per second over loopback"};
  int file_mb = 512, rounds = 5, slide_px = 8192, threads = 2, levels = 4;
  unsigned tile_threads = 0;
  app.add_option("--file-mb", file_mb, "Size of the large file of the multi-file slide")->capture_default_str();
  app.add_option("--rounds", rounds, "Downloads of it (best is reported)")->capture_default_str();
  app.add_option("--slide-px", slide_px, "Side of the mkslide slide for tiles")->capture_default_str();
  app.add_option("--threads", threads, "Client threads fetching tiles")->capture_default_str();
  app.add_option("--levels", levels, "Top DZI levels fetched")->capture_default_str();
  app.add_option("--tile-threads", tile_threads, "dpatsim --tile-threads (0: one per core)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  curl_global_init(CURL_GLOBAL_DEFAULT);
  char tmpl[] = "/tmp/bench-sim-XXXXXX";
  if (!mkdtemp(tmpl)) return 1;
  fs::path dir = tmpl, slides = dir / "slides";
  fs::create_directories(slides / "big");
  pid_t sim = -1;
  int code = 0;
  try {
    auto bin = self_dir();
    // The slide for tiles, and the multi-file slide (a small slide plus one large file).
    if (run({(bin / "mkslide").string(), (slides / "tiles.svs").string(), "--width", std::to_string(slide_px),
             "--height", std::to_string(slide_px * 3 / 4)},
            dir / "mkslide.log") != 0 ||
        run({(bin / "mkslide").string(), (slides / "big" / "scan.svs").string(), "--width", "512", "--height", "512"},
            dir / "mkslide2.log") != 0)
      throw std::runtime_error("mkslide failed");
    {
      std::ofstream big(slides / "big" / "data.dat", std::ios::binary);
      std::vector<char> block(1 << 20);
      std::mt19937 rng(1);
      for (auto& c : block) c = static_cast<char>(rng());
      for (int i = 0; i < file_mb; ++i) big.write(block.data(), static_cast<std::streamsize>(block.size()));
    }
    std::uint64_t total = fs::file_size(slides / "big" / "data.dat") + fs::file_size(slides / "big" / "scan.svs");

    sim = spawn({(bin / "dpatsim").string(), "serve", "--slides", slides.string(), "--token", "bench", "--tile-threads",
                 std::to_string(tile_threads), "--io-threads", "2"},
                dir / "sim.out", dir / "sim.err");
    std::string url = first_line(dir / "sim.out", sim);
    url = url.substr(url.find("http"));
    const std::string auth = "Authorization: Bearer bench";

    CURL* c = curl_easy_init();
    double best = 0;
    for (int r = 0; r < rounds; ++r) {
      auto t0 = Clock::now();
      auto f = fetch(c, url + "/slides/big/files", auth);
      double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (f.status != 200 || f.bytes < total) throw std::runtime_error("/files: status " + std::to_string(f.status));
      double gbs = static_cast<double>(f.bytes) / s / 1e9;
      std::printf("files: round %d: %.0f MB in %.3f s = %.2f GB/s\n", r + 1, static_cast<double>(f.bytes) / 1e6, s, gbs);
      best = std::max(best, gbs);
    }
    double bare = 0;
    {
      BareServer b(slides / "big" / "data.dat");
      CURL* bc = curl_easy_init();
      for (int r = 0; r < rounds; ++r) {
        auto t0 = Clock::now();
        auto f = fetch(bc, b.url(), auth);
        double s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (f.status == 200) bare = std::max(bare, static_cast<double>(f.bytes) / s / 1e9);
      }
      curl_easy_cleanup(bc);
    }
    std::printf("files: best %.2f GB/s, ratio to the 1 GB/s target %.2f; a bare sendfile server, same client, "
                "same run: %.2f GB/s, ratio dpatsim/bare %.2f\n",
                best, best / 1.0, bare, bare > 0 ? best / bare : 0.0);

    // Tiles: every tile of the top levels, cold then cached.
    int L = static_cast<int>(std::ceil(std::log2(static_cast<double>(slide_px))));
    std::vector<std::string> urls;
    std::int64_t w = slide_px, h = slide_px * 3 / 4;
    for (int l = L; l > L - levels && l >= 0; --l) {
      std::int64_t lw = std::max<std::int64_t>(1, w >> (L - l)), lh = std::max<std::int64_t>(1, h >> (L - l));
      for (std::int64_t row = 0; row < (lh + 255) / 256; ++row)
        for (std::int64_t col = 0; col < (lw + 255) / 256; ++col)
          urls.push_back(url + "/images/tiles_files/" + std::to_string(l) + "/" + std::to_string(col) + "_" +
                         std::to_string(row) + ".jpg");
    }
    for (const char* pass : {"rendered", "cached"}) {
      std::atomic<std::size_t> next{0}, failed{0};
      std::atomic<std::uint64_t> bytes{0};
      auto t0 = Clock::now();
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; ++t)
        pool.emplace_back([&] {
          CURL* tc = curl_easy_init();
          for (std::size_t i; (i = next++) < urls.size();) {
            auto f = fetch(tc, urls[i], auth);
            if (f.status != 200) ++failed;
            bytes += f.bytes;
          }
          curl_easy_cleanup(tc);
        });
      for (auto& t : pool) t.join();
      double s = std::chrono::duration<double>(Clock::now() - t0).count();
      if (failed) throw std::runtime_error(std::to_string(failed.load()) + " tile requests failed");
      std::printf("tiles %s: %zu tiles (%.1f MB) in %.3f s = %.0f tiles/s, %d client threads\n", pass, urls.size(),
                  static_cast<double>(bytes.load()) / 1e6, s, static_cast<double>(urls.size()) / s, threads);
    }
    curl_easy_cleanup(c);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_sim: %s\n", e.what());
    code = 1;
  }
  if (sim > 0) {
    kill(sim, SIGTERM);
    int status;
    waitpid(sim, &status, 0);
  }
  fs::remove_all(dir);
  curl_global_cleanup();
  return code;
}
