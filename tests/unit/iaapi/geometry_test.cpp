#include "iaapi/geometry.hpp"

#include <catch2/catch.hpp>

#include <stdexcept>

using namespace iaserve::iaapi;

TEST_CASE("image-width units", "[iaapi][geometry]") {
  CHECK(to_units({2220, 2967}, 2220) == Point{1.0, 2967.0 / 2220.0});
  CHECK(to_pixels({0.5, 1.0}, 2220) == PixelPoint{1110, 2220});
  const PixelPolygon px{{0, 0}, {100, 0}, {100, 50}};
  const Polygon units = polygon_from_pixels(px, 200);
  CHECK(units.points[1] == Point{0.5, 0});
  CHECK(units.points[2] == Point{0.5, 0.25});
  CHECK(polygon_to_pixels(units, 200) == px);
  CHECK_THROWS_WITH(to_units({1, 1}, 0), "image width 0 is not positive");
}

TEST_CASE("frame round the whole slide", "[iaapi][geometry]") {
  const Polygon f = frame_polygon(2220, 2967);
  REQUIRE(f.points.size() == 4);
  CHECK(f.points[0] == Point{0, 0});
  CHECK(f.points[1] == Point{1, 0});
  CHECK(f.points[2] == Point{1, 2967.0 / 2220.0});
  CHECK(f.points[3] == Point{0, 2967.0 / 2220.0});
  CHECK(area_pixels(f, 2220) == Approx(2220.0 * 2967.0));
  CHECK_THROWS_WITH(frame_polygon(10, -1), "image height -1 is not positive");
}

TEST_CASE("rectangles, bounds and labels", "[iaapi][geometry]") {
  const Polygon r = rect_polygon(100, 200, 300, 400, 1000);
  const Box b = bounds(r);
  CHECK(b.x0 == Approx(0.1));
  CHECK(b.y0 == Approx(0.2));
  CHECK(b.x1 == Approx(0.4));
  CHECK(b.y1 == Approx(0.6));
  const Point l = label_position(r, 0.01);
  CHECK(l.x == Approx(0.11));
  CHECK(l.y == Approx(0.21));
  CHECK(bounds(Polygon{}).width() == 0);
}

TEST_CASE("point in polygon and area", "[iaapi][geometry]") {
  // An L shape: the notch at the top right is outside.
  const PixelPolygon l{{0, 0}, {10, 0}, {10, 4}, {4, 4}, {4, 10}, {0, 10}};
  CHECK(contains(l, {2, 2}));
  CHECK(contains(l, {8, 2}));
  CHECK(contains(l, {2, 8}));
  CHECK_FALSE(contains(l, {8, 8}));
  CHECK_FALSE(contains(l, {-1, 5}));
  CHECK(area(l) == Approx(10 * 4 + 4 * 6));
  CHECK_FALSE(contains(PixelPolygon{}, {0, 0}));
  CHECK(area(PixelPolygon{{0, 0}, {1, 1}}) == 0);
  // Clockwise and counter-clockwise give the same area.
  PixelPolygon reversed(l.rbegin(), l.rend());
  CHECK(area(reversed) == area(l));

  const Polygon u = polygon_from_pixels(l, 1000);
  CHECK(contains(u, to_units({2, 8}, 1000)));
  CHECK_FALSE(contains(u, to_units({8, 8}, 1000)));
  CHECK(area_pixels(u, 1000) == Approx(64));
  // 64 px at 0.5 um/px = 16 um^2 = 1.6e-5 mm^2.
  CHECK(area_mm2(u, 1000, 0.5) == Approx(1.6e-5));
}
