#pragma once
// Internal to slide/: the TIFF side of the fast path (tile tables read once
// with libtiff, tiles then read with pread from any thread) and a reusable
// per-thread libjpeg-turbo decoder with DCT scaling.
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

namespace iaserve::slide::detail {

struct TiffLevel {
  int level = -1;  // OpenSlide level this directory serves, -1 if none
  std::uint32_t width = 0, height = 0;
  std::uint32_t tile_width = 0, tile_height = 0;
  std::uint32_t tiles_across = 0, tiles_down = 0;
  bool jpeg = false;  // tiled, 8-bit, 3 samples, contiguous, JPEG-compressed
  bool rgb = false;   // photometric RGB (JPEG data holds RGB components)
  std::vector<std::uint64_t> offsets, byte_counts;
  std::vector<std::uint8_t> tables;  // JPEGTables (SOI ... EOI), may be empty
};

class TiffSource {
 public:
  // nullptr when the file is not a TIFF or libtiff cannot read it.
  // level_sizes: OpenSlide's levels, to map tiled directories onto them.
  static std::unique_ptr<TiffSource> open(const std::filesystem::path& path,
                                          const std::vector<std::pair<std::int64_t, std::int64_t>>& level_sizes);
  ~TiffSource();

  std::optional<double> mpp_x, mpp_y;  // from level 0's resolution tags
  // The JPEG directory serving an OpenSlide level, or nullptr.
  const TiffLevel* level(int openslide_level) const;
  // A complete JPEG stream for tile (col, row), JPEGTables spliced in;
  // false when the tile is absent, oversized or unreadable.
  bool read_tile(const TiffLevel& level, std::uint32_t col, std::uint32_t row, std::vector<std::uint8_t>& out) const;

 private:
  TiffSource() = default;
  int fd_ = -1;
  std::uint64_t file_size_ = 0;
  std::vector<TiffLevel> levels_;  // indexed by OpenSlide level when mapped
};

// What a file OpenSlide did not recognise looks like to libtiff: a TIFF
// whose directories cannot be read, or a tiled/Aperio one, is a damaged
// slide rather than "not a slide".
enum class TiffProbe { not_tiff, unreadable, slide_like, other_tiff };
TiffProbe probe_tiff(const std::filesystem::path& path);

// Decodes a JPEG stream at 1/denom into out (RGB8, resized as needed),
// reusing the calling thread's decoder. rgb: the components are RGB even
// without an Adobe marker (Aperio's photometric RGB tiles). Fails (false) on
// any error or warning, or when the image exceeds max_width x max_height.
bool decode_jpeg_scaled(const std::uint8_t* data, std::size_t size, int denom, bool rgb, std::uint32_t max_width,
                        std::uint32_t max_height, std::vector<std::uint8_t>& out, int& width, int& height);

// Runs fn(0..n-1) on the shared decode pool plus the calling thread;
// rethrows the first exception after all started items finished.
void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn, unsigned threads);

}  // namespace iaserve::slide::detail
