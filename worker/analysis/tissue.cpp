// The `tissue` analysis: where on the slide is tissue, how much of it, in
// how many pieces. Reads the slide once at about 8 um/px (whole tile rows at
// a time, so no tile is decoded twice), then works on that small view.
#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "iaapi/version.hpp"
#include "worker/analysis/analysis.hpp"
#include "worker/analysis/geometry.hpp"
#include "worker/analysis/tissue.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::analysis {

namespace {

namespace json = boost::json;

// Pixel size assumed when the slide does not say (a 40x scan).
constexpr double kAssumedMpp = 0.25;
// The view never exceeds this many cells, whatever the slide size.
constexpr double kMaxViewCells = 8e6;
// ... nor (when the slide allows) falls below a quarter of this.
constexpr double kMinViewCells = 1e6;

std::string area_text(double mm2) {
  char buf[32];
  if (mm2 < 1)
    std::snprintf(buf, sizeof buf, "%.2f mm\u00b2", mm2);
  else if (mm2 < 100)
    std::snprintf(buf, sizeof buf, "%.1f mm\u00b2", mm2);
  else
    std::snprintf(buf, sizeof buf, "%.0f mm\u00b2", mm2);
  return buf;
}

double round_to(double v, double step) { return std::round(v / step) * step; }

json::object point_json(const PointPx& p, double width) {
  return {{"x", p.x / width}, {"y", p.y / width}};
}

json::object polygon_json(const PolygonPx& ring, double width) {
  json::array pts;
  pts.reserve(ring.size());
  for (const auto& p : ring) pts.push_back(point_json(p, width));
  return {{"points", std::move(pts)}};
}

Outcome run(Context& ctx) {
  const slide::Slide& s = ctx.slide();
  const Params& params = ctx.params();
  const double W = static_cast<double>(s.width()), H = static_cast<double>(s.height());
  const std::optional<double> slide_mpp = s.mpp();
  const double mpp = slide_mpp && *slide_mpp > 0 ? *slide_mpp : kAssumedMpp;

  // The analysed rectangle: the whole slide or the drawn regions' bounds.
  double bx0 = 0, by0 = 0, bx1 = W, by1 = H;
  if (!ctx.regions().empty()) {
    bx0 = W;
    by0 = H;
    bx1 = 0;
    by1 = 0;
    for (const auto& r : ctx.regions())
      for (const auto& p : r) {
        bx0 = std::min(bx0, p.x);
        by0 = std::min(by0, p.y);
        bx1 = std::max(bx1, p.x);
        by1 = std::max(by1, p.y);
      }
    bx0 = std::max(bx0, 0.0);
    by0 = std::max(by0, 0.0);
    bx1 = std::min(bx1, W);
    by1 = std::min(by1, H);
    if (bx1 <= bx0 || by1 <= by0) throw std::invalid_argument("the drawn regions lie outside the slide");
  }

  // Downsample: a power of two near target/mpp (the pyramid and the DCT
  // scales are powers of two), doubled until the view is small enough.
  const double target = params.number("target_mpp");
  double ds = std::exp2(std::max(0.0, std::round(std::log2(target / mpp))));
  auto view_cells = [&](double d) { return std::ceil((bx1 - bx0) / d) * std::ceil((by1 - by0) / d); };
  while (view_cells(ds) > kMaxViewCells) ds *= 2;
  // A small slide or drawn region would be a few hundred cells across at the
  // target: go finer (cheaply) so outlines follow the tissue.
  while (ds > 1 && view_cells(ds / 2) <= kMinViewCells) ds /= 2;

  // Stripes of whole tile rows of the level the reader will use.
  const int level = s.best_level_for_downsample(ds);
  const double level_ds = s.level_downsample(level);
  const auto fast = s.fast_level(level);
  const double tile_h = fast ? fast->tile_height : 256;
  double unit = std::ceil(tile_h * level_ds / ds) * ds;  // level-0 rows, a multiple of ds
  const auto x0 = static_cast<std::int64_t>(std::floor(bx0 / ds) * ds);
  const auto y0 = static_cast<std::int64_t>(std::floor(by0 / unit) * unit);
  const auto x1 = static_cast<std::int64_t>(std::ceil(bx1));
  const auto y1 = static_cast<std::int64_t>(std::ceil(by1));
  const std::int64_t bw = x1 - x0, bh = y1 - y0;
  const int vw = static_cast<int>(std::ceil(bw / ds)), vh = static_cast<int>(std::ceil(bh / ds));
  const double units = std::ceil(bh / unit);
  const double per_stripe = std::max(1.0, std::round(units / 12));
  const auto stripe = static_cast<std::int64_t>(per_stripe * unit);

  // Kept per thread, like the scratch of tissue::find; every row is written below.
  thread_local slide::Image view;
  view.width = vw;
  view.height = vh;
  view.rgb.resize(static_cast<std::size_t>(vw) * static_cast<std::size_t>(vh) * 3);
  for (std::int64_t y = y0; y < y1; y += stripe) {
    const std::int64_t h = std::min(stripe, y1 - y);
    slide::Image part = s.read(x0, y, bw, h, ds);
    const int row0 = static_cast<int>((y - y0) / ds);
    const int rows = std::min(part.height, vh - row0);
    const int cols = std::min(part.width, vw);
    for (int r = 0; r < rows; ++r)
      std::copy_n(part.at(0, r), static_cast<std::size_t>(cols) * 3, view.at(0, row0 + r));
    ctx.progress(2 + static_cast<int>(78.0 * static_cast<double>(y + h - y0) / static_cast<double>(bh)));
  }

  std::vector<std::uint8_t> roi;
  if (!ctx.regions().empty()) {
    std::vector<PolygonPx> shifted = ctx.regions();
    for (auto& r : shifted)
      for (auto& p : r) {
        p.x -= static_cast<double>(x0);
        p.y -= static_cast<double>(y0);
      }
    roi = geometry::rasterize(shifted, vw, vh, ds);
    // Where the slide ends inside the view there is nothing to analyse.
  }
  // Cells past the slide's edge (the view is rounded up) are not slide.
  const int in_w = static_cast<int>(std::ceil((W - static_cast<double>(x0)) / ds));
  const int in_h = static_cast<int>(std::ceil((H - static_cast<double>(y0)) / ds));
  if (in_w < vw || in_h < vh) {
    if (roi.empty()) roi.assign(static_cast<std::size_t>(vw) * vh, 1);
    for (int y = 0; y < vh; ++y)
      for (int x = 0; x < vw; ++x)
        if (x >= in_w || y >= in_h) roi[static_cast<std::size_t>(y) * vw + x] = 0;
  }

  tissue::Options opt;
  opt.method = params.text("method") == "otsu_od" ? tissue::Method::otsu_od : tissue::Method::otsu_saturation;
  opt.um_per_px = mpp * ds;
  opt.min_region_um2 = params.number("min_region_um2");
  opt.simplify_tolerance_px = params.number("simplify_tolerance_px");
  opt.max_points = static_cast<int>(params.integer("max_points"));
  opt.check = [&ctx] { ctx.check(); };
  const tissue::Findings f = tissue::find(view, opt, roi.empty() ? nullptr : &roi);
  if (view.rgb.size() > (std::size_t{12} << 20)) view = slide::Image();
  ctx.progress(95);

  // Back to level-0 px, inside the slide.
  auto to_level0 = [&](const PointPx& p) -> PointPx {
    return {std::clamp(static_cast<double>(x0) + p.x * ds, 0.0, W),
            std::clamp(static_cast<double>(y0) + p.y * ds, 0.0, H)};
  };
  const double cell_mm2 = opt.um_per_px * opt.um_per_px * 1e-6;
  const double tissue_mm2 = static_cast<double>(f.tissue_cells) * cell_mm2;
  const double area_mm2 = static_cast<double>(f.area_cells) * cell_mm2;
  const double coverage = area_mm2 > 0 ? 100.0 * tissue_mm2 / area_mm2 : 0.0;

  Outcome out;
  json::array outer_polys, hole_polys, labels;
  constexpr std::size_t kMaxLabels = 100;
  for (const auto& region : f.regions) {
    if (region.rings.empty()) continue;
    OverlayShape shape;
    for (std::size_t k = 0; k < region.rings.size(); ++k) {
      PolygonPx ring;
      ring.reserve(region.rings[k].size());
      for (const auto& p : region.rings[k]) ring.push_back(to_level0(p));
      (k == 0 ? outer_polys : hole_polys).push_back(polygon_json(ring, W));
      shape.rings.push_back(std::move(ring));
    }
    shape.label_at = to_level0(region.label_at);
    if (out.overlay.size() < kMaxLabels) {
      shape.label = area_text(static_cast<double>(region.cells) * cell_mm2);
      labels.push_back({{"location", point_json(shape.label_at, W)}, {"label", shape.label}});
    }
    out.overlay.push_back(std::move(shape));
  }
  json::array items;
  items.push_back({{"style", {{"strokeStyle", "#00b050"}, {"fillStyle", "rgba(0,0,0,0)"}, {"size", 2}}},
                   {"polygons", std::move(outer_polys)},
                   {"labels", std::move(labels)}});
  if (!hole_polys.empty())
    items.push_back({{"style", {{"strokeStyle", "#00b050"}, {"fillStyle", "rgba(0,0,0,0)"}, {"size", 1}}},
                     {"polygons", std::move(hole_polys)}});
  out.result_type = "primitive";
  out.content = std::move(items);

  const std::size_t n = f.regions.size();
  const bool drawn = !ctx.regions().empty();
  out.display_result = "Tissue " + area_text(tissue_mm2) + " in " + std::to_string(n) +
                       (n == 1 ? " region" : " regions");
  if (drawn) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " (%.1f %% of the drawn area)", coverage);
    out.display_result += buf;
  }
  auto& props = out.display_properties;
  props.emplace_back("Tissue area (mm\u00b2)", round_to(tissue_mm2, 0.001));
  props.emplace_back(drawn ? "Drawn area coverage (%)" : "Slide coverage (%)", round_to(coverage, 0.01));
  props.emplace_back("Regions", static_cast<std::int64_t>(n));
  if (f.hidden_regions > 0)
    props.emplace_back("Regions not outlined", static_cast<std::int64_t>(f.hidden_regions));
  props.emplace_back("Resolution used (\u00b5m/px)", round_to(opt.um_per_px, 0.001));
  if (!slide_mpp) props.emplace_back("Pixel size", std::string("unknown, assumed 0.25 \u00b5m/px"));
  props.emplace_back("Method", params.text("method"));
  props.emplace_back("Analysis version", "tissue " + tissue_spec().version + ", iaserve " + kSoftwareVersion);
  return out;
}

}  // namespace

extern const Descriptor tissue_analysis{tissue_spec(), run, {}};

}  // namespace iaserve::analysis
