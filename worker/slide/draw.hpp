#pragma once
// Drawing on an Image in pixel coordinates: polygons (even-odd, so inner
// rings are holes) with outline and translucent fill, polylines, rectangles,
// and text in a built-in 5x8 bitmap font. Colours as IA-API styles give them.
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

#include "worker/slide/image.hpp"

namespace iaserve::slide {

struct Rgba {
  std::uint8_t r = 0, g = 0, b = 0, a = 255;
  bool operator==(const Rgba&) const = default;
};

// "#RRGGBB", "#RRGGBBAA", "#RGB", "rgb(r,g,b)", "rgba(r,g,b,a)" (a in 0..1),
// and names (black, white, red, green, blue, yellow, cyan, magenta, orange,
// purple, gray/grey, pink, brown, lime, navy, transparent). Case-insensitive.
// Throws std::invalid_argument naming the value.
Rgba parse_color(std::string_view text);

struct PointF {
  double x = 0, y = 0;
};
using Ring = std::vector<PointF>;

// Blends colour over one pixel (alpha from colour.a); ignores pixels outside.
void blend_pixel(Image& image, int x, int y, Rgba colour);
void fill_rect(Image& image, int x, int y, int w, int h, Rgba colour);

// Fills pixels whose centre is inside the rings by the even-odd rule.
// Returns the number of pixels filled.
std::size_t fill_polygon(Image& image, const std::vector<Ring>& rings, Rgba colour);
// A line of `thickness` px through the points (closed: back to the first).
// Every covered pixel is blended once, also where segments overlap.
void stroke_polyline(Image& image, const Ring& points, Rgba colour, double thickness = 1.0,
                     bool closed = false);

struct PolygonStyle {
  Rgba stroke{0, 255, 0, 255};
  double thickness = 2.0;
  std::optional<Rgba> fill;  // e.g. rgba(0,255,0,0.25)
};
void draw_polygon(Image& image, const std::vector<Ring>& rings, const PolygonStyle& style);

// Text with its top-left corner at (x, y), glyphs 5x8 scaled by `scale`
// (advance 6*scale). ASCII, plus ² µ °; others draw as '?'. Newlines start a
// new line. An optional background box is filled behind the text first.
void draw_text(Image& image, int x, int y, std::string_view text, Rgba colour, int scale = 1,
               std::optional<Rgba> background = std::nullopt);
int text_width(std::string_view text, int scale = 1);
int text_height(std::string_view text, int scale = 1);

}  // namespace iaserve::slide
