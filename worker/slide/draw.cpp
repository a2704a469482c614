#include "worker/slide/draw.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <stdexcept>
#include <string>

namespace iaserve::slide {

namespace {

// Classic 5x8 glyphs for ASCII 32..126: five columns, bit 0 the top row.
constexpr std::array<std::array<std::uint8_t, 5>, 95> kFont = {{
    {0x00, 0x00, 0x00, 0x00, 0x00}, {0x00, 0x00, 0x5F, 0x00, 0x00}, {0x00, 0x07, 0x00, 0x07, 0x00},
    {0x14, 0x7F, 0x14, 0x7F, 0x14}, {0x24, 0x2A, 0x7F, 0x2A, 0x12}, {0x23, 0x13, 0x08, 0x64, 0x62},
    {0x36, 0x49, 0x56, 0x20, 0x50}, {0x00, 0x08, 0x07, 0x03, 0x00}, {0x00, 0x1C, 0x22, 0x41, 0x00},
    {0x00, 0x41, 0x22, 0x1C, 0x00}, {0x2A, 0x1C, 0x7F, 0x1C, 0x2A}, {0x08, 0x08, 0x3E, 0x08, 0x08},
    {0x00, 0x80, 0x70, 0x30, 0x00}, {0x08, 0x08, 0x08, 0x08, 0x08}, {0x00, 0x00, 0x60, 0x60, 0x00},
    {0x20, 0x10, 0x08, 0x04, 0x02}, {0x3E, 0x51, 0x49, 0x45, 0x3E}, {0x00, 0x42, 0x7F, 0x40, 0x00},
    {0x72, 0x49, 0x49, 0x49, 0x46}, {0x21, 0x41, 0x49, 0x4D, 0x33}, {0x18, 0x14, 0x12, 0x7F, 0x10},
    {0x27, 0x45, 0x45, 0x45, 0x39}, {0x3C, 0x4A, 0x49, 0x49, 0x31}, {0x41, 0x21, 0x11, 0x09, 0x07},
    {0x36, 0x49, 0x49, 0x49, 0x36}, {0x46, 0x49, 0x49, 0x29, 0x1E}, {0x00, 0x00, 0x14, 0x00, 0x00},
    {0x00, 0x40, 0x34, 0x00, 0x00}, {0x00, 0x08, 0x14, 0x22, 0x41}, {0x14, 0x14, 0x14, 0x14, 0x14},
    {0x00, 0x41, 0x22, 0x14, 0x08}, {0x02, 0x01, 0x59, 0x09, 0x06}, {0x3E, 0x41, 0x5D, 0x59, 0x4E},
    {0x7C, 0x12, 0x11, 0x12, 0x7C}, {0x7F, 0x49, 0x49, 0x49, 0x36}, {0x3E, 0x41, 0x41, 0x41, 0x22},
    {0x7F, 0x41, 0x41, 0x41, 0x3E}, {0x7F, 0x49, 0x49, 0x49, 0x41}, {0x7F, 0x09, 0x09, 0x09, 0x01},
    {0x3E, 0x41, 0x41, 0x51, 0x73}, {0x7F, 0x08, 0x08, 0x08, 0x7F}, {0x00, 0x41, 0x7F, 0x41, 0x00},
    {0x20, 0x40, 0x41, 0x3F, 0x01}, {0x7F, 0x08, 0x14, 0x22, 0x41}, {0x7F, 0x40, 0x40, 0x40, 0x40},
    {0x7F, 0x02, 0x1C, 0x02, 0x7F}, {0x7F, 0x04, 0x08, 0x10, 0x7F}, {0x3E, 0x41, 0x41, 0x41, 0x3E},
    {0x7F, 0x09, 0x09, 0x09, 0x06}, {0x3E, 0x41, 0x51, 0x21, 0x5E}, {0x7F, 0x09, 0x19, 0x29, 0x46},
    {0x26, 0x49, 0x49, 0x49, 0x32}, {0x03, 0x01, 0x7F, 0x01, 0x03}, {0x3F, 0x40, 0x40, 0x40, 0x3F},
    {0x1F, 0x20, 0x40, 0x20, 0x1F}, {0x3F, 0x40, 0x38, 0x40, 0x3F}, {0x63, 0x14, 0x08, 0x14, 0x63},
    {0x03, 0x04, 0x78, 0x04, 0x03}, {0x61, 0x59, 0x49, 0x4D, 0x43}, {0x00, 0x7F, 0x41, 0x41, 0x41},
    {0x02, 0x04, 0x08, 0x10, 0x20}, {0x00, 0x41, 0x41, 0x41, 0x7F}, {0x04, 0x02, 0x01, 0x02, 0x04},
    {0x40, 0x40, 0x40, 0x40, 0x40}, {0x00, 0x03, 0x07, 0x08, 0x00}, {0x20, 0x54, 0x54, 0x78, 0x40},
    {0x7F, 0x28, 0x44, 0x44, 0x38}, {0x38, 0x44, 0x44, 0x44, 0x28}, {0x38, 0x44, 0x44, 0x28, 0x7F},
    {0x38, 0x54, 0x54, 0x54, 0x18}, {0x00, 0x08, 0x7E, 0x09, 0x02}, {0x18, 0xA4, 0xA4, 0x9C, 0x78},
    {0x7F, 0x08, 0x04, 0x04, 0x78}, {0x00, 0x44, 0x7D, 0x40, 0x00}, {0x20, 0x40, 0x40, 0x3D, 0x00},
    {0x7F, 0x10, 0x28, 0x44, 0x00}, {0x00, 0x41, 0x7F, 0x40, 0x00}, {0x7C, 0x04, 0x78, 0x04, 0x78},
    {0x7C, 0x08, 0x04, 0x04, 0x78}, {0x38, 0x44, 0x44, 0x44, 0x38}, {0xFC, 0x18, 0x24, 0x24, 0x18},
    {0x18, 0x24, 0x24, 0x18, 0xFC}, {0x7C, 0x08, 0x04, 0x04, 0x08}, {0x48, 0x54, 0x54, 0x54, 0x24},
    {0x04, 0x04, 0x3F, 0x44, 0x24}, {0x3C, 0x40, 0x40, 0x20, 0x7C}, {0x1C, 0x20, 0x40, 0x20, 0x1C},
    {0x3C, 0x40, 0x30, 0x40, 0x3C}, {0x44, 0x28, 0x10, 0x28, 0x44}, {0x4C, 0x90, 0x90, 0x90, 0x7C},
    {0x44, 0x64, 0x54, 0x4C, 0x44}, {0x00, 0x08, 0x36, 0x41, 0x00}, {0x00, 0x00, 0x77, 0x00, 0x00},
    {0x00, 0x41, 0x36, 0x08, 0x00}, {0x02, 0x01, 0x02, 0x04, 0x02},
}};
constexpr std::array<std::uint8_t, 5> kSquared = {0x09, 0x0D, 0x0B, 0x00, 0x00};  // ²
constexpr std::array<std::uint8_t, 5> kMicro = {0xFC, 0x40, 0x40, 0x20, 0x7C};    // µ
constexpr std::array<std::uint8_t, 5> kDegree = {0x00, 0x06, 0x09, 0x09, 0x06};   // °

// Decodes the next glyph of UTF-8 text; advances i.
const std::array<std::uint8_t, 5>& next_glyph(std::string_view text, std::size_t& i) {
  auto c = static_cast<unsigned char>(text[i++]);
  if (c >= 32 && c < 127) return kFont[c - 32];
  if (c == 0xC2 && i < text.size()) {
    auto d = static_cast<unsigned char>(text[i++]);
    if (d == 0xB2) return kSquared;
    if (d == 0xB5) return kMicro;
    if (d == 0xB0) return kDegree;
    return kFont['?' - 32];
  }
  if (c == 0xCE && i < text.size() && static_cast<unsigned char>(text[i]) == 0xBC) {  // Greek mu
    ++i;
    return kMicro;
  }
  while (c >= 0xC0 && i < text.size() && (static_cast<unsigned char>(text[i]) & 0xC0) == 0x80) ++i;
  return kFont['?' - 32];
}

int parse_int(std::string_view s, std::string_view whole) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < 0 || v > 255)
    throw std::invalid_argument("colour \"" + std::string(whole) + "\": component \"" + std::string(s) +
                                "\" not in 0..255");
  return v;
}

double parse_alpha(std::string_view s, std::string_view whole) {
  std::string t(s);
  char* end = nullptr;
  double v = std::strtod(t.c_str(), &end);
  while (end && *end == ' ') ++end;
  if (!end || *end != '\0' || t.empty() || !(v >= 0 && v <= 1))
    throw std::invalid_argument("colour \"" + std::string(whole) + "\": alpha \"" + t + "\" not in 0..1");
  return v;
}

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// A coverage mask over a rectangle, so overlapping strokes blend each pixel once.
void blend_mask(Image& image, int x0, int y0, int w, const std::vector<std::uint8_t>& mask, Rgba colour) {
  if (w <= 0) return;
  int h = static_cast<int>(mask.size() / static_cast<std::size_t>(w));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (mask[static_cast<std::size_t>(y) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x)])
        blend_pixel(image, x0 + x, y0 + y, colour);
}

}  // namespace

Rgba parse_color(std::string_view text) {
  std::string s;
  for (char c : text)
    if (c != ' ' || !s.empty()) s.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  while (!s.empty() && s.back() == ' ') s.pop_back();
  auto bad = [&] { return std::invalid_argument("colour \"" + std::string(text) + "\" not understood"); };
  if (!s.empty() && s[0] == '#') {
    std::string h = s.substr(1);
    if (h.size() == 3) h = {h[0], h[0], h[1], h[1], h[2], h[2]};
    if (h.size() != 6 && h.size() != 8) throw bad();
    std::uint8_t v[4] = {0, 0, 0, 255};
    for (std::size_t i = 0; i < h.size() / 2; ++i) {
      int a = hex(h[2 * i]), b = hex(h[2 * i + 1]);
      if (a < 0 || b < 0) throw bad();
      v[i] = static_cast<std::uint8_t>(a * 16 + b);
    }
    return {v[0], v[1], v[2], v[3]};
  }
  if (s.rfind("rgb", 0) == 0) {
    bool alpha = s.rfind("rgba(", 0) == 0;
    std::size_t open = s.find('('), close = s.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open || close + 1 != s.size()) throw bad();
    std::vector<std::string_view> parts;
    std::string_view body(s.data() + open + 1, close - open - 1);
    while (true) {
      std::size_t comma = body.find(',');
      parts.push_back(body.substr(0, comma));
      if (comma == std::string_view::npos) break;
      body.remove_prefix(comma + 1);
    }
    if (parts.size() != (alpha ? 4u : 3u)) throw bad();
    Rgba c{static_cast<std::uint8_t>(parse_int(parts[0], text)), static_cast<std::uint8_t>(parse_int(parts[1], text)),
           static_cast<std::uint8_t>(parse_int(parts[2], text)), 255};
    if (alpha) c.a = static_cast<std::uint8_t>(std::lround(parse_alpha(parts[3], text) * 255));
    return c;
  }
  struct Named {
    const char* name;
    Rgba colour;
  };
  static const Named names[] = {
      {"black", {0, 0, 0, 255}},       {"white", {255, 255, 255, 255}}, {"red", {255, 0, 0, 255}},
      {"green", {0, 128, 0, 255}},     {"lime", {0, 255, 0, 255}},      {"blue", {0, 0, 255, 255}},
      {"yellow", {255, 255, 0, 255}},  {"cyan", {0, 255, 255, 255}},    {"magenta", {255, 0, 255, 255}},
      {"orange", {255, 165, 0, 255}},  {"purple", {128, 0, 128, 255}},  {"gray", {128, 128, 128, 255}},
      {"grey", {128, 128, 128, 255}},  {"pink", {255, 192, 203, 255}},  {"brown", {165, 42, 42, 255}},
      {"navy", {0, 0, 128, 255}},      {"transparent", {0, 0, 0, 0}},
  };
  for (const auto& n : names)
    if (s == n.name) return n.colour;
  throw bad();
}

void blend_pixel(Image& image, int x, int y, Rgba c) {
  if (x < 0 || y < 0 || x >= image.width || y >= image.height || c.a == 0) return;
  std::uint8_t* p = image.at(x, y);
  if (c.a == 255) {
    p[0] = c.r;
    p[1] = c.g;
    p[2] = c.b;
    return;
  }
  const unsigned a = c.a, na = 255 - a;
  p[0] = static_cast<std::uint8_t>((c.r * a + p[0] * na + 127) / 255);
  p[1] = static_cast<std::uint8_t>((c.g * a + p[1] * na + 127) / 255);
  p[2] = static_cast<std::uint8_t>((c.b * a + p[2] * na + 127) / 255);
}

void fill_rect(Image& image, int x, int y, int w, int h, Rgba colour) {
  int x0 = std::max(0, x), y0 = std::max(0, y);
  int x1 = std::min(image.width, x + w), y1 = std::min(image.height, y + h);
  for (int r = y0; r < y1; ++r)
    for (int c = x0; c < x1; ++c) blend_pixel(image, c, r, colour);
}

std::size_t fill_polygon(Image& image, const std::vector<Ring>& rings, Rgba colour) {
  double ymin = 1e300, ymax = -1e300;
  for (const auto& ring : rings)
    for (const auto& p : ring) {
      ymin = std::min(ymin, p.y);
      ymax = std::max(ymax, p.y);
    }
  if (ymin > ymax) return 0;
  int r0 = std::max(0, static_cast<int>(std::floor(ymin))), r1 = std::min(image.height - 1, static_cast<int>(std::ceil(ymax)));
  std::size_t filled = 0;
  std::vector<double> xs;
  for (int r = r0; r <= r1; ++r) {
    const double yc = r + 0.5;
    xs.clear();
    for (const auto& ring : rings) {
      const std::size_t n = ring.size();
      if (n < 3) continue;
      for (std::size_t i = 0; i < n; ++i) {
        const PointF& a = ring[i];
        const PointF& b = ring[(i + 1) % n];
        if ((a.y <= yc) != (b.y <= yc)) xs.push_back(a.x + (yc - a.y) / (b.y - a.y) * (b.x - a.x));
      }
    }
    std::sort(xs.begin(), xs.end());
    for (std::size_t k = 0; k + 1 < xs.size(); k += 2) {
      // Pixels whose centre x + 0.5 lies in [xs[k], xs[k+1]).
      int c0 = std::max(0, static_cast<int>(std::ceil(xs[k] - 0.5)));
      int c1 = std::min(image.width, static_cast<int>(std::ceil(xs[k + 1] - 0.5)));
      for (int c = c0; c < c1; ++c) blend_pixel(image, c, r, colour);
      if (c1 > c0) filled += static_cast<std::size_t>(c1 - c0);
    }
  }
  return filled;
}

void stroke_polyline(Image& image, const Ring& points, Rgba colour, double thickness, bool closed) {
  if (points.empty()) return;
  const double half = std::max(0.5, thickness / 2);
  double xmin = 1e300, xmax = -1e300, ymin = 1e300, ymax = -1e300;
  for (const auto& p : points) {
    xmin = std::min(xmin, p.x);
    xmax = std::max(xmax, p.x);
    ymin = std::min(ymin, p.y);
    ymax = std::max(ymax, p.y);
  }
  int x0 = std::max(0, static_cast<int>(std::floor(xmin - half))), y0 = std::max(0, static_cast<int>(std::floor(ymin - half)));
  int x1 = std::min(image.width, static_cast<int>(std::ceil(xmax + half)) + 1);
  int y1 = std::min(image.height, static_cast<int>(std::ceil(ymax + half)) + 1);
  if (x0 >= x1 || y0 >= y1) return;
  const int w = x1 - x0;
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(w) * static_cast<std::size_t>(y1 - y0), 0);
  const std::size_t n = points.size();
  const std::size_t segments = closed ? n : (n > 1 ? n - 1 : 1);
  for (std::size_t s = 0; s < segments; ++s) {
    const PointF a = points[s], b = points[(s + 1) % n];
    const double dx = b.x - a.x, dy = b.y - a.y, len2 = dx * dx + dy * dy;
    int sx0 = std::max(x0, static_cast<int>(std::floor(std::min(a.x, b.x) - half)));
    int sx1 = std::min(x1, static_cast<int>(std::ceil(std::max(a.x, b.x) + half)) + 1);
    int sy0 = std::max(y0, static_cast<int>(std::floor(std::min(a.y, b.y) - half)));
    int sy1 = std::min(y1, static_cast<int>(std::ceil(std::max(a.y, b.y) + half)) + 1);
    for (int y = sy0; y < sy1; ++y)
      for (int x = sx0; x < sx1; ++x) {
        const double px = x + 0.5 - a.x, py = y + 0.5 - a.y;
        double t = len2 > 0 ? std::clamp((px * dx + py * dy) / len2, 0.0, 1.0) : 0.0;
        const double ex = px - t * dx, ey = py - t * dy;
        if (ex * ex + ey * ey <= half * half)
          mask[static_cast<std::size_t>(y - y0) * static_cast<std::size_t>(w) + static_cast<std::size_t>(x - x0)] = 1;
      }
  }
  blend_mask(image, x0, y0, w, mask, colour);
}

void draw_polygon(Image& image, const std::vector<Ring>& rings, const PolygonStyle& style) {
  if (style.fill) fill_polygon(image, rings, *style.fill);
  if (style.thickness > 0)
    for (const auto& ring : rings) stroke_polyline(image, ring, style.stroke, style.thickness, true);
}

int text_width(std::string_view text, int scale) {
  int best = 0, cur = 0;
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] == '\n') {
      ++i;
      best = std::max(best, cur);
      cur = 0;
      continue;
    }
    next_glyph(text, i);
    ++cur;
  }
  best = std::max(best, cur);
  return best == 0 ? 0 : (best * 6 - 1) * std::max(1, scale);
}

int text_height(std::string_view text, int scale) {
  int lines = 1 + static_cast<int>(std::count(text.begin(), text.end(), '\n'));
  return (lines * 9 - 1) * std::max(1, scale);
}

void draw_text(Image& image, int x, int y, std::string_view text, Rgba colour, int scale,
               std::optional<Rgba> background) {
  scale = std::max(1, scale);
  if (background)
    fill_rect(image, x - scale, y - scale, text_width(text, scale) + 2 * scale, text_height(text, scale) + 2 * scale,
              *background);
  int cx = x, cy = y;
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] == '\n') {
      ++i;
      cx = x;
      cy += 9 * scale;
      continue;
    }
    const auto& g = next_glyph(text, i);
    for (int col = 0; col < 5; ++col)
      for (int row = 0; row < 8; ++row)
        if (g[static_cast<std::size_t>(col)] & (1u << row))
          fill_rect(image, cx + col * scale, cy + row * scale, scale, scale, colour);
    cx += 6 * scale;
  }
}

}  // namespace iaserve::slide
