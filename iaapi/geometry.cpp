#include "iaapi/geometry.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace iaserve::iaapi {

namespace {
double checked_width(std::int64_t width) {
  if (width <= 0)
    throw std::invalid_argument("image width " + std::to_string(width) + " is not positive");
  return static_cast<double>(width);
}

template <class Pt>
Box bounds_of(std::span<const Pt> pts) {
  if (pts.empty()) return {};
  Box b{pts[0].x, pts[0].y, pts[0].x, pts[0].y};
  for (const auto& p : pts) {
    b.x0 = std::min(b.x0, p.x);
    b.y0 = std::min(b.y0, p.y);
    b.x1 = std::max(b.x1, p.x);
    b.y1 = std::max(b.y1, p.y);
  }
  return b;
}

template <class Pt>
bool contains_of(std::span<const Pt> poly, Pt p) noexcept {
  bool inside = false;
  const std::size_t n = poly.size();
  for (std::size_t i = 0, j = n - 1; i < n; j = i++) {
    const Pt& a = poly[i];
    const Pt& b = poly[j];
    if ((a.y > p.y) != (b.y > p.y) && p.x < (b.x - a.x) * (p.y - a.y) / (b.y - a.y) + a.x)
      inside = !inside;
  }
  return inside;
}

template <class Pt>
double area_of(std::span<const Pt> poly) noexcept {
  const std::size_t n = poly.size();
  if (n < 3) return 0;
  double twice = 0;
  for (std::size_t i = 0, j = n - 1; i < n; j = i++)
    twice += (poly[j].x + poly[i].x) * (poly[j].y - poly[i].y);
  return std::abs(twice) / 2;
}
}  // namespace

Point to_units(PixelPoint p, std::int64_t width) {
  const double w = checked_width(width);
  return {p.x / w, p.y / w};
}

PixelPoint to_pixels(Point p, std::int64_t width) {
  const double w = checked_width(width);
  return {p.x * w, p.y * w};
}

Polygon polygon_from_pixels(std::span<const PixelPoint> pts, std::int64_t width) {
  const double w = checked_width(width);
  Polygon poly;
  poly.points.reserve(pts.size());
  for (const auto& p : pts) poly.points.push_back({p.x / w, p.y / w});
  return poly;
}

PixelPolygon polygon_to_pixels(const Polygon& poly, std::int64_t width) {
  const double w = checked_width(width);
  PixelPolygon out;
  out.reserve(poly.points.size());
  for (const auto& p : poly.points) out.push_back({p.x * w, p.y * w});
  return out;
}

Polygon frame_polygon(std::int64_t width, std::int64_t height) {
  const double w = checked_width(width);
  if (height <= 0)
    throw std::invalid_argument("image height " + std::to_string(height) + " is not positive");
  const double bottom = static_cast<double>(height) / w;
  return Polygon{{{0, 0}, {1, 0}, {1, bottom}, {0, bottom}}};
}

Polygon rect_polygon(double px, double py, double pw, double ph, std::int64_t width) {
  const PixelPoint pts[] = {{px, py}, {px + pw, py}, {px + pw, py + ph}, {px, py + ph}};
  return polygon_from_pixels(pts, width);
}

Box bounds(const Polygon& poly) {
  return bounds_of(std::span<const Point>(poly.points));
}
Box bounds(std::span<const PixelPoint> poly) {
  return bounds_of(poly);
}

Point label_position(const Polygon& poly, double inset) {
  const Box b = bounds(poly);
  return {b.x0 + std::min(inset, b.width() / 2), b.y0 + std::min(inset, b.height() / 2)};
}

bool contains(std::span<const PixelPoint> poly, PixelPoint p) noexcept {
  return contains_of(poly, p);
}
bool contains(const Polygon& poly, Point p) noexcept {
  return contains_of(std::span<const Point>(poly.points), p);
}

double area(std::span<const PixelPoint> poly) noexcept {
  return area_of(poly);
}
double area(const Polygon& poly) noexcept {
  return area_of(std::span<const Point>(poly.points));
}

double area_pixels(const Polygon& poly, std::int64_t width) {
  const double w = checked_width(width);
  return area(poly) * w * w;
}

double area_mm2(const Polygon& poly, std::int64_t width, double microns_per_pixel) {
  const double mm_per_px = microns_per_pixel / 1000.0;
  return area_pixels(poly, width) * mm_per_px * mm_per_px;
}

}  // namespace iaserve::iaapi
