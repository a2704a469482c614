// bench_analysis: the whole-slide tissue analysis against raw libjpeg-turbo
// decoding of the same tiles at the same DCT scale, in the same run.
// Targets: analysis >= 70 % of the raw decode rate (MPix/s of decoded
// pixels), and under 1 s for a 60,000 x 40,000 slide on 2 cores.
//
// bench_analysis [--cache DIR] [--threads N] [--repeat N] [--width W --height H]
// The synthetic slide is made once with mkslide (beside this program) into
// DIR (default $TMPDIR or /tmp) and reused; the real slide is
// ../shared/data/CMU-1-Small-Region.svs beside the checkout, when present.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "worker/analysis/analysis.hpp"
#include "worker/slide/slide.hpp"

namespace fs = std::filesystem;
using namespace iaserve;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

int run_program(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    execv(args[0], args.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

struct Figures {
  double analysis_s = 0, analysis_mpix = 0, raw_s = 0, raw_mpix = 0;
};

// The analysis `repeat` times (best time kept), then the raw decode of the
// tiles it decoded, at the DCT scale it used, also best of `repeat`.
bool bench_slide(const std::string& label, const fs::path& path, unsigned threads, int repeat) {
  auto s = slide::Slide::open(path);
  std::printf("%s: %s, %lldx%lld, %d levels, mpp %.3f\n", label.c_str(), path.filename().c_str(),
              static_cast<long long>(s.width()), static_cast<long long>(s.height()), s.level_count(),
              s.mpp().value_or(0));
  const auto cold = Clock::now();
  analysis::run_analysis("tissue", s, {}, {});  // warms the page cache and the scratch buffers
  std::printf("  first run (cold): %.3f s\n", since(cold));
  double best = 1e9;
  slide::ReadStats stats;
  std::string display;
  double res_um = 0;
  for (int i = 0; i < repeat; ++i) {
    s.reset_stats();
    const auto t = Clock::now();
    auto r = analysis::run_analysis("tissue", s, {}, {});
    const double secs = since(t);
    if (r.status != analysis::RunStatus::ok) {
      std::printf("  analysis failed: %s\n", r.error.c_str());
      return false;
    }
    if (secs < best) {
      best = secs;
      stats = s.stats();
      display = r.outcome->display_result;
      for (const auto& [k, v] : r.outcome->display_properties)
        if (k.rfind("Resolution used", 0) == 0) res_um = std::get<double>(v);
    }
  }
  const double ds = res_um / s.mpp().value_or(0.25);
  const int level = s.best_level_for_downsample(std::round(ds));
  const auto fast = s.fast_level(level);
  std::printf("  %s at %.2f um/px (level %d), fast reads %llu, openslide reads %llu, tiles %llu, fallback %llu\n",
              display.c_str(), res_um, level, static_cast<unsigned long long>(stats.reads_fast),
              static_cast<unsigned long long>(stats.reads_openslide),
              static_cast<unsigned long long>(stats.tiles_decoded),
              static_cast<unsigned long long>(stats.tiles_fallback));
  const double decoded = static_cast<double>(stats.pixels_decoded + stats.pixels_openslide);
  std::printf("  analysis: %.3f s, %.1f MPix decoded, %.1f MPix/s\n", best, decoded / 1e6, decoded / 1e6 / best);
  if (!fast || stats.tiles_decoded == 0) {
    std::printf("  raw decode: no fast path for level %d, no baseline\n", level);
    return true;
  }
  // The DCT scale the reader used, from what it decoded.
  const double tile_px = static_cast<double>(fast->tile_width) * fast->tile_height;
  const int denom = static_cast<int>(std::lround(std::sqrt(tile_px * static_cast<double>(stats.tiles_decoded) /
                                                           static_cast<double>(stats.pixels_decoded))));
  std::vector<std::pair<int, int>> grid;
  for (int r = 0; r < fast->tiles_down; ++r)
    for (int c = 0; c < fast->tiles_across; ++c) grid.emplace_back(c, r);
  const auto tiles = s.raw_tiles(level, grid);
  double raw_best = 1e9;
  std::uint64_t raw_px = 0;
  for (int i = 0; i < repeat; ++i) {
    const auto t = Clock::now();
    raw_px = slide::decode_tiles_raw(tiles, denom, threads, fast->rgb_jpeg);
    raw_best = std::min(raw_best, since(t));
  }
  const double raw_rate = static_cast<double>(raw_px) / 1e6 / raw_best;
  const double rate = decoded / 1e6 / best;
  std::printf("  raw libjpeg-turbo: %zu tiles at 1/%d, %.3f s, %.1f MPix, %.1f MPix/s\n", tiles.size(), denom,
              raw_best, static_cast<double>(raw_px) / 1e6, raw_rate);
  std::printf("  ratio analysis/raw: %.2f (target >= 0.70)\n", rate / raw_rate);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  fs::path cache;
  if (const char* t = std::getenv("TMPDIR")) cache = t;
  if (cache.empty()) cache = "/tmp";
  unsigned threads = 2;
  int repeat = 3;
  long long width = 60000, height = 40000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bench_analysis: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--cache") cache = next();
    else if (a == "--threads") threads = static_cast<unsigned>(std::stoul(next()));
    else if (a == "--repeat") repeat = std::max(1, std::stoi(next()));
    else if (a == "--width") width = std::stoll(next());
    else if (a == "--height") height = std::stoll(next());
    else if (a == "--help") {
      std::printf("bench_analysis [--cache DIR] [--threads N] [--repeat N] [--width W --height H]\n");
      return 0;
    } else {
      std::fprintf(stderr, "bench_analysis: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  slide::set_decode_threads(threads);
  std::printf("bench_analysis: %u decode threads, best of %d\n", threads, repeat);

  const fs::path big = cache / ("iaserve-bench-" + std::to_string(width) + "x" + std::to_string(height) + "-s1.svs");
  if (!fs::exists(big)) {
    const fs::path mkslide = fs::canonical("/proc/self/exe").parent_path() / "mkslide";
    std::printf("generating %s with %s ...\n", big.c_str(), mkslide.c_str());
    std::fflush(stdout);
    const auto t = Clock::now();
    const int rc = run_program({mkslide.string(), (big.string() + ".part.svs"), "--width", std::to_string(width),
                                "--height", std::to_string(height), "--seed", "1", "--pen", "--dust"});
    if (rc != 0) {
      std::fprintf(stderr, "bench_analysis: mkslide failed (%d)\n", rc);
      return 1;
    }
    fs::rename(big.string() + ".part.svs", big);
    fs::rename(big.string() + ".part.svs.truth.json", big.string() + ".truth.json");
    std::printf("generated in %.1f s\n", since(t));
  }
  if (!bench_slide("synthetic", big, threads, repeat)) return 1;
  const fs::path real = fs::path(IASERVE_SOURCE_DIR) / ".." / "shared" / "data" / "CMU-1-Small-Region.svs";
  if (fs::exists(real)) {
    if (!bench_slide("real", real, threads, repeat)) return 1;
  } else {
    std::printf("real: %s absent, skipped\n", real.c_str());
  }
  return 0;
}
