// Slide reading speed: OpenSlide read_region against the libtiff+libjpeg-turbo
// fast path, both next to raw libjpeg-turbo decoding of the same tiles in the
// same run, on one thread and on the decode pool.
//   bench_slide SLIDE [--threads N] [--repeat R]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "worker/slide/slide.hpp"

namespace sl = iaserve::slide;

namespace {

template <class F>
double seconds(F&& f, int repeat) {
  double best = 1e300;
  for (int i = 0; i < repeat; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0) {
    std::printf("usage: bench_slide SLIDE [--threads N] [--repeat R]\n");
    return argc < 2 ? 2 : 0;
  }
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  int repeat = 3;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--threads") == 0) threads = static_cast<unsigned>(std::stoul(argv[i + 1]));
    if (std::strcmp(argv[i], "--repeat") == 0) repeat = std::stoi(argv[i + 1]);
  }
  try {
    auto slide = sl::Slide::open(argv[1]);
    std::printf("%s: %s %lldx%lld, %d levels\n", argv[1], slide.vendor().c_str(),
                static_cast<long long>(slide.width()), static_cast<long long>(slide.height()), slide.level_count());
    // A window of level 0 of at most 16k x 16k.
    const std::int64_t w = std::min<std::int64_t>(slide.width(), 16384), h = std::min<std::int64_t>(slide.height(), 16384);
    const double mpix = static_cast<double>(w * h) / 1e6;
    auto fl = slide.fast_level(0);
    std::vector<std::vector<std::uint8_t>> tiles;
    if (fl) {
      std::vector<std::pair<int, int>> idx;
      for (int r = 0; r < std::min<int>(fl->tiles_down, static_cast<int>((h + fl->tile_height - 1) / fl->tile_height)); ++r)
        for (int c = 0; c < std::min<int>(fl->tiles_across, static_cast<int>((w + fl->tile_width - 1) / fl->tile_width)); ++c)
          idx.emplace_back(c, r);
      tiles = slide.raw_tiles(0, idx);
    }
    for (unsigned t : {1u, threads}) {
      sl::set_decode_threads(t);
      std::printf("-- %u thread(s), window %lldx%lld of level 0\n", t, static_cast<long long>(w), static_cast<long long>(h));
      double os = seconds([&] { slide.read(0, 0, w, h, 1.0, sl::Reader::openslide); }, repeat);
      std::printf("openslide read_region, full res : %8.1f MPix/s\n", mpix / os);
      if (!fl) continue;
      double fast = seconds([&] { slide.read(0, 0, w, h, 1.0, sl::Reader::fast); }, repeat);
      double raw = seconds([&] { sl::decode_tiles_raw(tiles, 1, t, fl->rgb_jpeg); }, repeat);
      std::printf("fast path, full res             : %8.1f MPix/s  (%.0f%% of raw decode, %.1fx OpenSlide)\n",
                  mpix / fast, 100 * raw / fast, os / fast);
      std::printf("raw libjpeg-turbo decode 1/1    : %8.1f MPix/s\n", mpix / raw);
      for (int d : {2, 4, 8}) {
        double fd = seconds([&] { slide.read(0, 0, w, h, d, sl::Reader::fast); }, repeat);
        double rd = seconds([&] { sl::decode_tiles_raw(tiles, d, t, fl->rgb_jpeg); }, repeat);
        std::printf("fast path ds %d (DCT 1/%d)        : %8.1f MPix/s decoded, %8.1f MPix/s level 0 (%.0f%% of raw 1/%d decode)\n",
                    d, d, mpix / d / d / fd, mpix / fd, 100 * rd / fd, d);
      }
    }
    auto st = slide.stats();
    std::printf("stats: fast reads %llu, openslide reads %llu, tiles %llu, fallback tiles %llu\n",
                static_cast<unsigned long long>(st.reads_fast), static_cast<unsigned long long>(st.reads_openslide),
                static_cast<unsigned long long>(st.tiles_decoded), static_cast<unsigned long long>(st.tiles_fallback));
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_slide: %s\n", e.what());
    return 1;
  }
}
