// bench_e2e: what a pathologist waits for, against what it is made of.
//   1. create -> final result on a ~1 GB mkslide slide (dpatsim + iaserve +
//      one iaworker on loopback), against the sum of a raw
//      `curl -o /dev/null` of the slide's /files and `iaworker analyse` of
//      the same file, measured in the same run. Target: ratio <= 1.2.
//   2. (--big-gb N, default 4; 0 skips) the worker's peak RSS while it
//      downloads an N GB slide: a small mkslide slide extended sparsely to
//      N GB (TIFF readers ignore the tail; the download moves every byte).
//      Target: VmHWM <= 64 MB.
// Slides are generated once into the cache folder (--cache).
#include <CLI/CLI.hpp>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <thread>

#include "tests/support/http.hpp"
#include "tests/support/process.hpp"

using namespace iaserve::test;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

long status_kb(pid_t pid, const char* key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(std::string(key).size()));
  return -1;
}

void make_slide(const fs::path& out, int w, int h, int quality) {
  if (fs::exists(out)) return;
  std::cerr << "bench_e2e: making " << out << " (" << w << "x" << h << ", quality " << quality
            << "), once\n";
  fs::path tmp = out;
  tmp += ".tmp.svs";
  auto r = run({bin("mkslide"), "--width", std::to_string(w), "--height", std::to_string(h), "--quality",
                std::to_string(quality), "--seed", "42", tmp.string()},
               std::chrono::hours(2));
  if (r.code != 0) throw std::runtime_error("mkslide: " + r.err);
  fs::rename(tmp, out);
  fs::path truth = tmp;
  truth += ".truth.json";
  fs::remove(truth);
}

struct System {
  TempDir dir{"iaserve-bench-e2e"};
  std::unique_ptr<Process> sim, server, worker;
  std::string callback, root, app_url;
  System(const fs::path& slide) {
    fs::create_directories(dir / "slides");
    fs::create_symlink(fs::absolute(slide), dir / "slides" / slide.filename());
    sim = std::make_unique<Process>(std::vector<std::string>{bin("dpatsim"), "serve", "--slides",
                                                             (dir / "slides").string(), "--listen",
                                                             "127.0.0.1:0", "--token", "bench"});
    callback = sim->listening_url();
    root = callback.substr(0, callback.find('/', callback.find("://") + 3));
    const std::string config = (source_dir() / "examples" / "iaserve.toml").string();
    server = std::make_unique<Process>(std::vector<std::string>{
        bin("iaserve"), "--config", config, "--listen", "127.0.0.1:0", "--queue-dir", (dir / "queue").string(),
        "--data-dir", (dir / "data").string(), "--log-level", "warn"});
    app_url = server->listening_url() + "/apps/tissue";
    worker = std::make_unique<Process>(std::vector<std::string>{
        bin("iaworker"), "run", "--config", config, "--queue-dir", (dir / "queue").string(), "--data-dir",
        (dir / "data").string(), "--set", "apps[0].params={}", "--set", "log.level=\"warn\""});
  }
  // create, then poll the simulator until the result is final; seconds.
  double create_to_final(const std::string& id, const std::function<void()>& sample = {}) {
    auto t = Clock::now();
    auto r = run({bin("dpatsim"), "invoke", "create", app_url, "--slide", id, "--sim", callback, "--quiet"});
    if (r.code != 0) throw std::runtime_error("create: " + r.out + r.err);
    while (true) {
      if (sample) sample();
      auto a = http_get(root + "/_sim/results?slide=" + id);
      if (a.status == 200 && a.body.find("\"Progress\"") == std::string::npos &&
          a.body.find("\"displayResult\"") != std::string::npos) {
        if (a.body.find("analysis failed") != std::string::npos)
          throw std::runtime_error("the job failed: " + a.body.substr(0, 400) + "\n" + worker->stderr_text());
        return since(t);
      }
      if (since(t) > 1800) throw std::runtime_error("no final result within 30 min");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bench_e2e: create -> final result against curl + analysis; worker RSS on a big download"};
  std::string cache = IASERVE_BENCH_CACHE;
  int width = 100000, height = 100000, quality = 100, big_gb = 4;
  app.add_option("--cache", cache, "Folder of the generated slides")->capture_default_str();
  app.add_option("--width", width, "Width of the ~1 GB slide")->capture_default_str();
  app.add_option("--height", height, "Height of the ~1 GB slide")->capture_default_str();
  app.add_option("--quality", quality, "JPEG quality of the ~1 GB slide")->capture_default_str();
  app.add_option("--big-gb", big_gb, "Size of the RSS slide in GB (0: skip that part)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  try {
    fs::create_directories(cache);
    // ---- 1. create -> final against curl + analysis
    const fs::path slide = fs::path(cache) / ("e2e-" + std::to_string(width) + "x" + std::to_string(height) + "-q" +
                                              std::to_string(quality) + ".svs");
    make_slide(slide, width, height, quality);
    const double gb = static_cast<double>(fs::file_size(slide)) / 1e9;
    const std::string id = slide.stem().string();
    double e2e = 0, curl_s = 0, curl_disk_s = 0, analyse_s = 0;
    {
      System sys(slide);
      auto t = Clock::now();
      auto c = run({"/usr/bin/curl", "-sS", "-o", "/dev/null", "-H", "Authorization: Bearer bench",
                    sys.callback + "/slides/" + id + "/files"},
                   std::chrono::minutes(30));
      curl_s = since(t);
      if (c.code != 0) throw std::runtime_error("curl: " + c.err);
      // The worker keeps the slide (and fsyncs it): the same bytes stored by
      // curl on the same disk show what the disk allows.
      const fs::path copy = sys.dir / "curl-copy.svs";
      t = Clock::now();
      auto cs = run({"/bin/sh", "-c",
                     "/usr/bin/curl -sS -o '" + copy.string() + "' -H 'Authorization: Bearer bench' '" +
                         sys.callback + "/slides/" + id + "/files' && sync '" + copy.string() + "'"},
                    std::chrono::minutes(30));
      curl_disk_s = since(t);
      if (cs.code != 0) throw std::runtime_error("curl to disk: " + cs.err);
      fs::remove(copy);
      t = Clock::now();
      auto a = run({bin("iaworker"), "analyse", slide.string(), "--analysis", "tissue"}, std::chrono::minutes(30));
      analyse_s = since(t);
      if (a.code != 0) throw std::runtime_error("iaworker analyse: " + a.err);
      e2e = sys.create_to_final(id);
    }
    const double ratio = e2e / (curl_s + analyse_s);
    std::printf("slide %s: %.2f GB\n", id.c_str(), gb);
    std::printf("curl -o /dev/null of /files: %.2f s (%.2f GB/s)\n", curl_s, gb / curl_s);
    std::printf("iaworker analyse (tissue):   %.2f s\n", analyse_s);
    std::printf("create -> final result:      %.2f s\n", e2e);
    std::printf("ratio to curl + analysis:    %.2f (target <= 1.20) %s\n", ratio, ratio <= 1.2 ? "PASS" : "MISS");
    const double disk_ratio = e2e / (curl_disk_s + analyse_s);
    std::printf("curl -o FILE + sync (same disk): %.2f s (%.2f GB/s)\n", curl_disk_s, gb / curl_disk_s);
    std::printf("ratio to curl-to-disk + analysis: %.2f\n", disk_ratio);

    // ---- 2. worker peak RSS while downloading a big slide
    if (big_gb > 0) {
      const fs::path small = fs::path(cache) / "rss-base-8000x6000.svs";
      make_slide(small, 8000, 6000, 80);
      const fs::path big = fs::path(cache) / ("rss-" + std::to_string(big_gb) + "gb.svs");
      if (!fs::exists(big) || fs::file_size(big) != static_cast<std::uintmax_t>(big_gb) << 30) {
        fs::copy_file(small, big, fs::copy_options::overwrite_existing);
        fs::resize_file(big, static_cast<std::uintmax_t>(big_gb) << 30);  // sparse tail
      }
      System sys(big);
      const pid_t pid = sys.worker->pid();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      const long idle = status_kb(pid, "VmRSS:");
      long peak_sampled = 0;
      auto t = Clock::now();
      const double s = sys.create_to_final(big.stem().string(), [&] {
        peak_sampled = std::max(peak_sampled, status_kb(pid, "VmRSS:"));
      });
      const long hwm = status_kb(pid, "VmHWM:");
      (void)t;
      std::printf("RSS slide %s: %d GB, create -> final %.1f s (%.2f GB/s)\n", big.filename().c_str(), big_gb, s,
                  big_gb * 1.073741824 / s);
      std::printf("worker RSS idle %.1f MB, sampled peak %.1f MB, VmHWM %.1f MB (target <= 64 MB) %s\n",
                  idle / 1024.0, peak_sampled / 1024.0, hwm / 1024.0, hwm <= 64 * 1024 ? "PASS" : "MISS");
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_e2e: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
