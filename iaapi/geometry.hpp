#pragma once
// Coordinates of IA-API results and inputs. DPAT uses image-width units:
// x = px / width, y = py / width (level-0 pixels), so x runs 0..1 and y runs
// 0..height/width. Analyses work in level-0 pixels; these convert.
#include "iaapi/messages.hpp"

#include <cstdint>
#include <span>
#include <vector>

namespace iaserve::iaapi {

// A point in level-0 pixels.
struct PixelPoint {
  double x = 0;
  double y = 0;
  friend bool operator==(const PixelPoint&, const PixelPoint&) = default;
};
using PixelPolygon = std::vector<PixelPoint>;

// Axis-aligned bounds; empty polygons give an all-zero box.
struct Box {
  double x0 = 0, y0 = 0, x1 = 0, y1 = 0;
  double width() const { return x1 - x0; }
  double height() const { return y1 - y0; }
};

// Conversions; width is the level-0 image width (> 0, else
// std::invalid_argument "image width 0 is not positive").
Point to_units(PixelPoint p, std::int64_t width);
PixelPoint to_pixels(Point p, std::int64_t width);
Polygon polygon_from_pixels(std::span<const PixelPoint> pts, std::int64_t width);
PixelPolygon polygon_to_pixels(const Polygon& poly, std::int64_t width);

// The frame round the whole slide: (0,0) (1,0) (1,h/w) (0,h/w).
Polygon frame_polygon(std::int64_t width, std::int64_t height);
// A rectangle given in pixels, as a polygon in image-width units.
Polygon rect_polygon(double px, double py, double pw, double ph, std::int64_t width);

Box bounds(const Polygon& poly);
Box bounds(std::span<const PixelPoint> poly);

// Where to put a polygon's label: at the top-left corner of its bounds,
// nudged inwards by `inset` (same units as the polygon).
Point label_position(const Polygon& poly, double inset = 0);

// Even-odd rule; points on an edge may land either way.
bool contains(std::span<const PixelPoint> poly, PixelPoint p) noexcept;
bool contains(const Polygon& poly, Point p) noexcept;

// Absolute (shoelace) area. area(Polygon) is in squared image-width units.
double area(std::span<const PixelPoint> poly) noexcept;
double area(const Polygon& poly) noexcept;
// Area of a polygon in image-width units, in level-0 pixels and in mm^2
// given microns per pixel.
double area_pixels(const Polygon& poly, std::int64_t width);
double area_mm2(const Polygon& poly, std::int64_t width, double microns_per_pixel);

}  // namespace iaserve::iaapi
