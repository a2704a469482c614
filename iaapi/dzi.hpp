#pragma once
// Deep Zoom (DZI) pyramid arithmetic as DPAT serves tiles (IA-API.md):
// max level L = ceil(log2(max(w, h))); level l is
// max(1, floor(w / 2^(L-l))) x max(1, floor(h / 2^(L-l))); square tiles of
// tile_size, edge tiles smaller, no overlap; level L is full resolution.
#include <cstdint>

namespace iaserve::iaapi {

struct LevelSize {
  std::int64_t width = 0;
  std::int64_t height = 0;
  friend bool operator==(const LevelSize&, const LevelSize&) = default;
};

struct TileGrid {
  std::int64_t cols = 0;
  std::int64_t rows = 0;
  std::int64_t last_col_width = 0;   // width of the tiles in the last column
  std::int64_t last_row_height = 0;  // height of the tiles in the last row
};

// A rectangle in pixels (of a level, or of level 0).
struct PixelRect {
  std::int64_t x = 0;
  std::int64_t y = 0;
  std::int64_t width = 0;
  std::int64_t height = 0;
  friend bool operator==(const PixelRect&, const PixelRect&) = default;
};

class Dzi {
 public:
  // Throws std::invalid_argument naming the value when width, height or
  // tile_size is not positive.
  Dzi(std::int64_t width, std::int64_t height, std::int64_t tile_size);

  std::int64_t width() const noexcept { return width_; }
  std::int64_t height() const noexcept { return height_; }
  std::int64_t tile_size() const noexcept { return tile_size_; }
  int max_level() const noexcept { return max_level_; }
  int level_count() const noexcept { return max_level_ + 1; }

  // Every function taking a level throws std::out_of_range
  // "level 18 out of range [0,18)" for a level outside [0, level_count()).
  // 2^(L-l): level-0 pixels per level pixel.
  std::int64_t downsample(int level) const;
  LevelSize level_size(int level) const;
  TileGrid grid(int level) const;
  // Tile (col, row) of a level in that level's pixels, and the same area in
  // level-0 pixels (clipped to the image). Throws std::out_of_range
  // "tile 3,0 out of range 2x2 at level 9" outside the grid.
  PixelRect tile_rect(int level, std::int64_t col, std::int64_t row) const;
  PixelRect tile_rect_level0(int level, std::int64_t col, std::int64_t row) const;

  // Microns per pixel of a level, given those of level L.
  double level_mpp(int level, double base_mpp) const;
  // The level whose mpp is closest to `wanted` (in ratio, ties to the finer).
  int level_closest_mpp(double base_mpp, double wanted_mpp) const;
  // The finest level whose mpp is not finer than `wanted` (mpp >= wanted);
  // level L when the slide is coarser than wanted, level 0 when even level 0
  // is finer. Throws std::invalid_argument for non-positive mpp values.
  int level_not_finer_than(double base_mpp, double wanted_mpp) const;

 private:
  void check_level(int level) const;
  std::int64_t width_;
  std::int64_t height_;
  std::int64_t tile_size_;
  int max_level_;
};

// ceil(log2(max(w, h))), 0 for a 1x1 image.
int dzi_max_level(std::int64_t width, std::int64_t height);

}  // namespace iaserve::iaapi
