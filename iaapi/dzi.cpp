#include "iaapi/dzi.hpp"

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace iaserve::iaapi {

int dzi_max_level(std::int64_t width, std::int64_t height) {
  const std::int64_t side = std::max(width, height);
  int level = 0;
  while (level < 62 && (std::int64_t{1} << level) < side) ++level;
  return level;
}

Dzi::Dzi(std::int64_t width, std::int64_t height, std::int64_t tile_size)
    : width_(width), height_(height), tile_size_(tile_size), max_level_(0) {
  if (width <= 0)
    throw std::invalid_argument("image width " + std::to_string(width) + " is not positive");
  if (height <= 0)
    throw std::invalid_argument("image height " + std::to_string(height) + " is not positive");
  if (tile_size <= 0)
    throw std::invalid_argument("tile size " + std::to_string(tile_size) + " is not positive");
  max_level_ = dzi_max_level(width, height);
}

void Dzi::check_level(int level) const {
  if (level < 0 || level > max_level_)
    throw std::out_of_range("level " + std::to_string(level) + " out of range [0," +
                            std::to_string(level_count()) + ")");
}

std::int64_t Dzi::downsample(int level) const {
  check_level(level);
  return std::int64_t{1} << (max_level_ - level);
}

LevelSize Dzi::level_size(int level) const {
  const std::int64_t ds = downsample(level);
  return {std::max<std::int64_t>(1, width_ / ds), std::max<std::int64_t>(1, height_ / ds)};
}

TileGrid Dzi::grid(int level) const {
  const LevelSize s = level_size(level);
  TileGrid g;
  g.cols = (s.width + tile_size_ - 1) / tile_size_;
  g.rows = (s.height + tile_size_ - 1) / tile_size_;
  g.last_col_width = s.width - (g.cols - 1) * tile_size_;
  g.last_row_height = s.height - (g.rows - 1) * tile_size_;
  return g;
}

PixelRect Dzi::tile_rect(int level, std::int64_t col, std::int64_t row) const {
  const TileGrid g = grid(level);
  if (col < 0 || row < 0 || col >= g.cols || row >= g.rows)
    throw std::out_of_range("tile " + std::to_string(col) + "," + std::to_string(row) +
                            " out of range " + std::to_string(g.cols) + "x" +
                            std::to_string(g.rows) + " at level " + std::to_string(level));
  return {col * tile_size_, row * tile_size_, col + 1 == g.cols ? g.last_col_width : tile_size_,
          row + 1 == g.rows ? g.last_row_height : tile_size_};
}

PixelRect Dzi::tile_rect_level0(int level, std::int64_t col, std::int64_t row) const {
  const PixelRect r = tile_rect(level, col, row);
  const std::int64_t ds = downsample(level);
  PixelRect out{r.x * ds, r.y * ds, r.width * ds, r.height * ds};
  // Levels round down, and a 1-pixel level of a thin image may reach past it.
  out.width = std::max<std::int64_t>(0, std::min(out.width, width_ - out.x));
  out.height = std::max<std::int64_t>(0, std::min(out.height, height_ - out.y));
  return out;
}

double Dzi::level_mpp(int level, double base_mpp) const {
  return base_mpp * static_cast<double>(downsample(level));
}

namespace {
void check_mpp(double base_mpp, double wanted_mpp) {
  if (!(base_mpp > 0) || !std::isfinite(base_mpp))
    throw std::invalid_argument("microns per pixel " + std::to_string(base_mpp) +
                                " is not positive");
  if (!(wanted_mpp > 0) || !std::isfinite(wanted_mpp))
    throw std::invalid_argument("wanted microns per pixel " + std::to_string(wanted_mpp) +
                                " is not positive");
}
}  // namespace

int Dzi::level_closest_mpp(double base_mpp, double wanted_mpp) const {
  check_mpp(base_mpp, wanted_mpp);
  int best = max_level_;
  double best_distance = std::numeric_limits<double>::infinity();
  for (int l = max_level_; l >= 0; --l) {  // finer first, so ties go to the finer
    const double d = std::abs(std::log2(level_mpp(l, base_mpp) / wanted_mpp));
    if (d < best_distance - 1e-12) {
      best = l;
      best_distance = d;
    }
  }
  return best;
}

int Dzi::level_not_finer_than(double base_mpp, double wanted_mpp) const {
  check_mpp(base_mpp, wanted_mpp);
  for (int l = max_level_; l >= 0; --l)
    if (level_mpp(l, base_mpp) >= wanted_mpp * (1 - 1e-9)) return l;
  return 0;
}

}  // namespace iaserve::iaapi
