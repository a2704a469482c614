#include <catch2/catch.hpp>

#include <numeric>

#include "worker/analysis/geometry.hpp"

using namespace iaserve::analysis;

namespace {
std::vector<std::uint8_t> box_mask(int w, int h, int x0, int y0, int x1, int y1) {
  std::vector<std::uint8_t> m(static_cast<std::size_t>(w) * h, 0);
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x) m[static_cast<std::size_t>(y) * w + x] = 1;
  return m;
}
std::size_t count(const std::vector<std::uint8_t>& m) { return std::accumulate(m.begin(), m.end(), std::size_t{0}); }
}  // namespace

TEST_CASE("rasterize fills cells whose centre is inside, holes by even-odd", "[geometry]") {
  PolygonPx outer{{2, 2}, {12, 2}, {12, 12}, {2, 12}};
  PolygonPx hole{{5, 5}, {9, 5}, {9, 9}, {5, 9}};
  auto m = geometry::rasterize({outer}, 20, 20);
  CHECK(count(m) == 100);
  CHECK(m[2 * 20 + 2] == 1);
  CHECK(m[1 * 20 + 2] == 0);
  auto mh = geometry::rasterize({outer, hole}, 20, 20);
  CHECK(count(mh) == 100 - 16);
  // scale: the same square in coordinates twice as large
  PolygonPx big{{4, 4}, {24, 4}, {24, 24}, {4, 24}};
  CHECK(count(geometry::rasterize({big}, 20, 20, 2.0)) == 100);
  // clipped at the edges
  PolygonPx off{{-5, -5}, {3, -5}, {3, 3}, {-5, 3}};
  CHECK(count(geometry::rasterize({off}, 20, 20)) == 9);
}

TEST_CASE("trace_contours finds outer rings and holes with their labels", "[geometry]") {
  const int w = 30, h = 20;
  auto m = box_mask(w, h, 2, 2, 14, 14);
  for (int y = 6; y < 9; ++y)
    for (int x = 6; x < 10; ++x) m[static_cast<std::size_t>(y) * w + x] = 0;  // a 4x3 hole
  for (int y = 3; y < 8; ++y)
    for (int x = 20; x < 29; ++x) m[static_cast<std::size_t>(y) * w + x] = 1;  // a second region
  m[19 * w + 0] = 1;  // a single cell in the corner
  std::vector<std::uint32_t> labels;
  std::vector<std::uint64_t> sizes;
  REQUIRE(geometry::label_components(m, w, h, labels, sizes) == 3);
  auto contours = geometry::trace_contours(labels, w, h);
  REQUIRE(contours.size() == 4);
  int outers = 0, holes = 0;
  for (const auto& c : contours) {
    const double a = geometry::signed_area(c.points);
    if (c.hole) {
      ++holes;
      // marching squares through cell-edge midpoints: a 4x3 hole loses its
      // four corner triangles of 1/8 cell... and gains nothing
      CHECK(-a == Approx(12 - 0.5));
      CHECK(c.label == labels[6 * w + 5]);
    } else {
      ++outers;
      CHECK(a > 0);
      CHECK(a == Approx(static_cast<double>(sizes[c.label]) + (c.label == labels[2 * w + 2] ? 12 : 0) - 0.5));
    }
  }
  CHECK(outers == 3);
  CHECK(holes == 1);
  // Rasterizing the rings gives the mask back.
  std::vector<PolygonPx> rings;
  for (const auto& c : contours) rings.push_back(c.points);
  auto back = geometry::rasterize(rings, w, h);
  CHECK(back == m);
}

TEST_CASE("diagonal neighbours are one region and one ring", "[geometry]") {
  const int w = 4, h = 4;
  std::vector<std::uint8_t> m(16, 0);
  m[0 * 4 + 0] = m[1 * 4 + 1] = m[2 * 4 + 2] = 1;
  std::vector<std::uint32_t> labels;
  std::vector<std::uint64_t> sizes;
  CHECK(geometry::label_components(m, w, h, labels, sizes) == 1);
  auto contours = geometry::trace_contours(labels, w, h);
  REQUIRE(contours.size() == 1);
  CHECK_FALSE(contours[0].hole);
}

TEST_CASE("simplify_ring keeps corners and drops collinear points", "[geometry]") {
  PolygonPx ring;
  for (int i = 0; i < 10; ++i) ring.push_back({double(i), 0});
  for (int i = 0; i < 10; ++i) ring.push_back({10, double(i)});
  for (int i = 10; i > 0; --i) ring.push_back({double(i), 10});
  for (int i = 10; i > 0; --i) ring.push_back({0, double(i)});
  auto s = geometry::simplify_ring(ring, 0.5);
  CHECK(s.size() == 4);
  CHECK(geometry::area(s) == Approx(100));
  CHECK(geometry::simplify_ring(ring, 0).size() == ring.size());
}

TEST_CASE("erode, dilate and fill_holes", "[geometry]") {
  const int w = 20, h = 20;
  auto m = box_mask(w, h, 5, 5, 15, 15);
  m[10 * w + 10] = 0;  // a one-cell hole
  m[0] = 1;            // a speck
  auto opened = m;
  geometry::erode(opened, w, h, 1);
  geometry::dilate(opened, w, h, 1);
  CHECK(opened[0] == 0);
  CHECK(opened[5 * w + 5] == 1);
  auto filled = m;
  geometry::fill_holes(filled, w, h, 2);
  CHECK(filled[10 * w + 10] == 1);
  CHECK(filled[1] == 0);  // background touching the border stays
  auto kept = m;
  geometry::fill_holes(kept, w, h, 1);  // only holes smaller than 1 cell: none
  CHECK(kept[10 * w + 10] == 0);
}
