#include "worker/analysis/overlay.hpp"

#include <algorithm>

#include "worker/slide/draw.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::analysis {

slide::Image render_overlay(const slide::Slide& s, const Outcome& outcome, const Input& input,
                            int max_side) {
  slide::Image img = s.thumbnail(std::max(max_side, 16));
  if (img.empty()) return img;
  const double sx = static_cast<double>(img.width) / static_cast<double>(s.width());
  const double sy = static_cast<double>(img.height) / static_cast<double>(s.height());
  auto to_ring = [&](const PolygonPx& poly) {
    slide::Ring r;
    r.reserve(poly.size());
    for (const auto& p : poly) r.push_back({p.x * sx, p.y * sy});
    return r;
  };
  const double thick = std::max(1.0, std::max(img.width, img.height) / 512.0);
  for (const auto& region : input.regions) {
    slide::PolygonStyle st;
    st.stroke = {40, 90, 255, 255};
    st.thickness = thick;
    slide::draw_polygon(img, {to_ring(region)}, st);
  }
  slide::PolygonStyle st;
  st.stroke = {0, 190, 60, 255};
  st.thickness = thick;
  st.fill = slide::Rgba{0, 220, 60, 50};
  for (const auto& shape : outcome.overlay) {
    std::vector<slide::Ring> rings;
    for (const auto& r : shape.rings) rings.push_back(to_ring(r));
    if (!rings.empty()) slide::draw_polygon(img, rings, st);
  }
  const int scale = std::max(img.width, img.height) >= 900 ? 2 : 1;
  for (const auto& shape : outcome.overlay) {
    if (shape.label.empty()) continue;
    const int tw = slide::text_width(shape.label, scale), th = slide::text_height(shape.label, scale);
    int x = static_cast<int>(shape.label_at.x * sx) - tw / 2;
    int y = static_cast<int>(shape.label_at.y * sy) - th / 2;
    x = std::clamp(x, 0, std::max(0, img.width - tw));
    y = std::clamp(y, 0, std::max(0, img.height - th));
    slide::draw_text(img, x, y, shape.label, {0, 0, 0, 255}, scale, slide::Rgba{255, 255, 255, 190});
  }
  return img;
}

}  // namespace iaserve::analysis
