#include "iaapi/dzi.hpp"

#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>

using namespace iaserve::iaapi;

TEST_CASE("large slide: max level 17, level 9 is 342 x 299 in 2 x 2 tiles", "[iaapi][dzi]") {
  const Dzi dzi(87647, 76723, 240);
  CHECK(dzi.max_level() == 17);
  CHECK(dzi.level_count() == 18);
  CHECK(dzi.level_size(17) == LevelSize{87647, 76723});
  CHECK(dzi.level_size(9) == LevelSize{342, 299});
  const TileGrid g = dzi.grid(9);
  CHECK(g.cols == 2);
  CHECK(g.rows == 2);
  CHECK(g.last_col_width == 342 - 240);
  CHECK(g.last_row_height == 299 - 240);
  CHECK(dzi.tile_rect(9, 1, 1) == PixelRect{240, 240, 102, 59});
  CHECK(dzi.tile_rect(9, 0, 0) == PixelRect{0, 0, 240, 240});
  CHECK(dzi.downsample(9) == 256);
  CHECK(dzi.tile_rect_level0(9, 1, 0) == PixelRect{240 * 256, 0, 102 * 256, 240 * 256});
  CHECK(dzi.level_size(0) == LevelSize{1, 1});
  const TileGrid full = dzi.grid(17);
  CHECK(full.cols == 366);  // ceil(87647 / 240)
  CHECK(full.rows == 320);  // ceil(76723 / 240)
  CHECK(full.last_col_width == 87647 - 365 * 240);
}

TEST_CASE("1x1 image has one level of one tile", "[iaapi][dzi]") {
  const Dzi dzi(1, 1, 254);
  CHECK(dzi.max_level() == 0);
  CHECK(dzi.level_size(0) == LevelSize{1, 1});
  CHECK(dzi.grid(0).cols == 1);
  CHECK(dzi.grid(0).last_col_width == 1);
  CHECK(dzi.tile_rect_level0(0, 0, 0) == PixelRect{0, 0, 1, 1});
}

TEST_CASE("power-of-two sizes halve exactly", "[iaapi][dzi]") {
  const Dzi dzi(1024, 512, 256);
  CHECK(dzi.max_level() == 10);
  CHECK(dzi.level_size(10) == LevelSize{1024, 512});
  CHECK(dzi.level_size(8) == LevelSize{256, 128});
  CHECK(dzi.level_size(1) == LevelSize{2, 1});
  CHECK(dzi.level_size(0) == LevelSize{1, 1});
  CHECK(dzi.grid(10).cols == 4);
  CHECK(dzi.grid(10).rows == 2);
  CHECK(dzi.grid(10).last_col_width == 256);
  CHECK(Dzi(1025, 3, 256).max_level() == 11);
  CHECK(dzi_max_level(2, 1) == 1);
}

TEST_CASE("CMU-1-Small-Region size", "[iaapi][dzi]") {
  const Dzi dzi(2220, 2967, 240);
  CHECK(dzi.max_level() == 12);  // 2^12 = 4096 >= 2967 > 2048
  CHECK(dzi.level_size(11) == LevelSize{1110, 1483});
  CHECK(dzi.level_size(10) == LevelSize{555, 741});
  CHECK(dzi.grid(12).cols == 10);
  CHECK(dzi.grid(12).rows == 13);
  CHECK(dzi.grid(12).last_col_width == 60);
  CHECK(dzi.grid(12).last_row_height == 87);
  // Level-0 rectangles stay inside the image even where levels rounded down.
  const PixelRect r = dzi.tile_rect_level0(10, 2, 3);
  CHECK(r == PixelRect{1920, 2880, 300, 84});
  CHECK(dzi.tile_rect(10, 2, 3) == PixelRect{480, 720, 75, 21});
}

TEST_CASE("every tile of a level covers it exactly once", "[iaapi][dzi]") {
  const Dzi dzi(2220, 2967, 240);
  for (int level = 0; level <= dzi.max_level(); ++level) {
    const LevelSize s = dzi.level_size(level);
    const TileGrid g = dzi.grid(level);
    std::int64_t area = 0;
    for (std::int64_t row = 0; row < g.rows; ++row)
      for (std::int64_t col = 0; col < g.cols; ++col) {
        const PixelRect t = dzi.tile_rect(level, col, row);
        CHECK(t.width > 0);
        CHECK(t.height > 0);
        CHECK(t.x + t.width <= s.width);
        CHECK(t.y + t.height <= s.height);
        area += t.width * t.height;
      }
    CHECK(area == s.width * s.height);
  }
}

TEST_CASE("level for a wanted resolution", "[iaapi][dzi]") {
  const Dzi dzi(2220, 2967, 240);  // level 12 at 0.499 um/px
  CHECK(dzi.level_mpp(12, 0.499) == 0.499);
  CHECK(dzi.level_mpp(10, 0.499) == Approx(1.996));
  CHECK(dzi.level_closest_mpp(0.499, 0.5) == 12);
  CHECK(dzi.level_closest_mpp(0.499, 2.0) == 10);
  CHECK(dzi.level_closest_mpp(0.499, 0.1) == 12);
  CHECK(dzi.level_closest_mpp(0.499, 1e6) == 0);
  CHECK(dzi.level_not_finer_than(0.499, 0.499) == 12);
  CHECK(dzi.level_not_finer_than(0.499, 0.5) == 11);
  CHECK(dzi.level_not_finer_than(0.499, 2.0) == 9);
  CHECK(dzi.level_not_finer_than(0.499, 0.01) == 12);
  CHECK(dzi.level_not_finer_than(0.499, 1e6) == 0);
}

TEST_CASE("bad levels, tiles and sizes name the value", "[iaapi][dzi]") {
  const Dzi dzi(87647, 76723, 240);
  CHECK_THROWS_WITH(dzi.level_size(18), "level 18 out of range [0,18)");
  CHECK_THROWS_WITH(dzi.level_size(-1), "level -1 out of range [0,18)");
  CHECK_THROWS_WITH(dzi.tile_rect(9, 2, 0), "tile 2,0 out of range 2x2 at level 9");
  CHECK_THROWS_WITH(Dzi(0, 5, 240), "image width 0 is not positive");
  CHECK_THROWS_WITH(Dzi(5, 5, 0), "tile size 0 is not positive");
  CHECK_THROWS_AS(dzi.level_closest_mpp(0, 1), std::invalid_argument);
}
