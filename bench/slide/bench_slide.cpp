// Slide reading speed: OpenSlide read_region against the libtiff+libjpeg-turbo
// fast path, both next to raw libjpeg-turbo decoding of the same tiles in the
// same run, on one thread and on the decode pool.
//   bench_slide SLIDE [--threads N] [--repeat R] [--window PX] [--x PX --y PX]
#include <algorithm>
#include <cmath>
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
    std::printf("usage: bench_slide SLIDE [--threads N] [--repeat R] [--window PX] [--x PX --y PX]\n");
    return argc < 2 ? 2 : 0;
  }
  unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  int repeat = 3;
  std::int64_t window = 8192, x = 0, y = 0;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--threads") == 0) threads = static_cast<unsigned>(std::stoul(argv[i + 1]));
    if (std::strcmp(argv[i], "--repeat") == 0) repeat = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--window") == 0) window = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--x") == 0) x = std::stoll(argv[i + 1]);
    if (std::strcmp(argv[i], "--y") == 0) y = std::stoll(argv[i + 1]);
  }
  try {
    auto slide = sl::Slide::open(argv[1]);
    std::printf("%s: %s %lldx%lld, %d levels\n", argv[1], slide.vendor().c_str(),
                static_cast<long long>(slide.width()), static_cast<long long>(slide.height()), slide.level_count());
    // A window of level 0, tile-aligned at (x, y).
    const std::int64_t w = std::min<std::int64_t>(slide.width() - x, window), h = std::min<std::int64_t>(slide.height() - y, window);
    const double mpix = static_cast<double>(w * h) / 1e6;
    auto fl = slide.fast_level(0);
    std::vector<std::vector<std::uint8_t>> tiles;
    if (fl) {
      std::vector<std::pair<int, int>> idx;
      const int c0 = static_cast<int>(x / fl->tile_width), r0 = static_cast<int>(y / fl->tile_height);
      const int c1 = std::min<int>(fl->tiles_across, static_cast<int>((x + w + fl->tile_width - 1) / fl->tile_width));
      const int r1 = std::min<int>(fl->tiles_down, static_cast<int>((y + h + fl->tile_height - 1) / fl->tile_height));
      for (int r = r0; r < r1; ++r)
        for (int c = c0; c < c1; ++c) idx.emplace_back(c, r);
      tiles = slide.raw_tiles(0, idx);
    }
    for (unsigned t : {1u, threads}) {
      sl::set_decode_threads(t);
      std::printf("-- %u thread(s), window %lldx%lld of level 0\n", t, static_cast<long long>(w), static_cast<long long>(h));
      double os = seconds([&] { slide.read(x, y, w, h, 1.0, sl::Reader::openslide); }, repeat);
      std::printf("openslide read_region, full res : %8.1f MPix/s\n", mpix / os);
      if (!fl) continue;
      double fast = seconds([&] { slide.read(x, y, w, h, 1.0, sl::Reader::fast); }, repeat);
      double raw = seconds([&] { sl::decode_tiles_raw(tiles, 1, t, fl->rgb_jpeg); }, repeat);
      std::printf("fast path, full res             : %8.1f MPix/s  (%.0f%% of raw decode, %.1fx OpenSlide)\n",
                  mpix / fast, 100 * raw / fast, os / fast);
      std::printf("raw libjpeg-turbo decode 1/1    : %8.1f MPix/s\n", mpix / raw);
      // The same window in 1024 x 1024 reads (as tiles or stripes are read):
      // the result buffers are reused by malloc instead of being faulted in anew.
      auto chunked = [&](sl::Reader reader) {
        for (std::int64_t cy = y; cy < y + h; cy += 1024)
          for (std::int64_t cx = x; cx < x + w; cx += 1024)
            slide.read(cx, cy, std::min<std::int64_t>(1024, x + w - cx), std::min<std::int64_t>(1024, y + h - cy), 1.0, reader);
      };
      double fast_chunks = seconds([&] { chunked(sl::Reader::fast); }, repeat);
      double os_chunks = seconds([&] { chunked(sl::Reader::openslide); }, repeat);
      std::printf("1024-px reads: fast %8.1f MPix/s (%.0f%% of raw decode), openslide %8.1f MPix/s\n", mpix / fast_chunks,
                  100 * raw / fast_chunks, mpix / os_chunks);
      for (int d : {2, 4, 8, 16, 32}) {
        // The tiles the fast path decodes for this downsample: OpenSlide's
        // level choice, then DCT scaling by the rest (as Slide::read does).
        const int level = slide.best_level_for_downsample(d);
        const double lds = slide.level_downsample(level);
        const auto lf = slide.fast_level(level);
        if (!lf) continue;
        int denom = 1;
        for (int k : {8, 4, 2})
          if (k <= d / lds * (1 + 1e-9)) {
            denom = k;
            break;
          }
        std::vector<std::pair<int, int>> li;
        const double lx0 = static_cast<double>(x) / lds, ly0 = static_cast<double>(y) / lds;
        const double lx1 = static_cast<double>(x + w) / lds, ly1 = static_cast<double>(y + h) / lds;
        for (int r = static_cast<int>(ly0 / lf->tile_height);
             r < std::min<int>(lf->tiles_down, static_cast<int>(std::ceil(ly1 / lf->tile_height))); ++r)
          for (int c = static_cast<int>(lx0 / lf->tile_width);
               c < std::min<int>(lf->tiles_across, static_cast<int>(std::ceil(lx1 / lf->tile_width))); ++c)
            li.emplace_back(c, r);
        auto ltiles = slide.raw_tiles(level, li);
        slide.reset_stats();
        double fd = seconds([&] { slide.read(x, y, w, h, d, sl::Reader::fast); }, repeat);
        const double decoded = static_cast<double>(slide.stats().pixels_decoded) / repeat / 1e6;
        double rd = seconds([&] { sl::decode_tiles_raw(ltiles, denom, t, lf->rgb_jpeg); }, repeat);
        std::printf("fast path ds %2d (level %d, DCT 1/%d): %8.1f MPix/s decoded, %8.1f MPix/s of level 0 (%.0f%% of raw decode of the same %zu tiles)\n",
                    d, level, denom, decoded / fd, mpix / fd, 100 * rd / fd, ltiles.size());
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
