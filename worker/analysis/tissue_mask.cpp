// Tissue on a low-resolution view: white balance against the glass, a
// per-pixel feature (saturation or optical density) thresholded by Otsu with
// a floor, pen ink and near-black rejected, open/close, holes and specks
// below the minimum area removed, boundaries traced and simplified. Every
// step is linear in the view size.
#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>

#include "worker/analysis/geometry.hpp"
#include "worker/analysis/tissue.hpp"

namespace iaserve::analysis::tissue {

namespace {

// The glass colour: the brightest well-populated grey level, then the
// per-channel median of the pixels at that level. Never darker than 180 per
// channel, so a view full of tissue is not "white-balanced" into noise.
std::array<std::uint8_t, 3> estimate_background(const slide::Image& img,
                                                 const std::vector<std::uint8_t>* roi) {
  std::array<std::uint64_t, 256> hist{};
  const std::size_t n = img.pixel_count();
  const std::uint8_t* p = img.rgb.data();
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < n; ++i, p += 3) {
    if (roi && !(*roi)[i]) continue;
    ++hist[(p[0] + p[1] + p[2]) / 3];
    ++total;
  }
  std::array<std::uint8_t, 3> bg{255, 255, 255};
  if (total == 0) return bg;
  // 99.5th percentile of grey: ignores a few saturated specks
  std::uint64_t acc = 0;
  int p995 = 255;
  for (int g = 0; g < 256; ++g) {
    acc += hist[g];
    if (acc * 1000 >= total * 995) {
      p995 = g;
      break;
    }
  }
  const int lo = std::max(150, p995 - 50);
  int mode = -1;
  std::uint64_t best = 0;
  for (int g = lo; g <= p995; ++g) {
    if (hist[g] > best) {
      best = hist[g];
      mode = g;
    }
  }
  if (mode < 0 || best * 200 < total) return bg;  // no bright mode: assume white glass
  std::array<std::array<std::uint64_t, 256>, 3> ch{};
  std::uint64_t cnt = 0;
  p = img.rgb.data();
  for (std::size_t i = 0; i < n; ++i, p += 3) {
    if (roi && !(*roi)[i]) continue;
    const int g = (p[0] + p[1] + p[2]) / 3;
    if (std::abs(g - mode) > 4) continue;
    ++ch[0][p[0]];
    ++ch[1][p[1]];
    ++ch[2][p[2]];
    ++cnt;
  }
  for (int c = 0; c < 3; ++c) {
    std::uint64_t a = 0;
    int v = 255;
    for (int k = 0; k < 256; ++k) {
      a += ch[c][k];
      if (a * 2 >= cnt) {
        v = k;
        break;
      }
    }
    bg[c] = static_cast<std::uint8_t>(std::max(v, 180));
  }
  return bg;
}

int otsu(const std::array<std::uint64_t, 256>& hist) {
  std::uint64_t total = 0;
  double sum = 0;
  for (int i = 0; i < 256; ++i) {
    total += hist[i];
    sum += static_cast<double>(i) * hist[i];
  }
  if (total == 0) return 128;
  double sum_b = 0, w_b = 0, best = -1;
  int thr = 0;
  for (int t = 0; t < 256; ++t) {
    w_b += hist[t];
    if (w_b == 0) continue;
    const double w_f = total - w_b;
    if (w_f == 0) break;
    sum_b += static_cast<double>(t) * hist[t];
    const double m_b = sum_b / w_b, m_f = (sum - sum_b) / w_f;
    const double between = w_b * w_f * (m_b - m_f) * (m_b - m_f);
    if (between > best) {
      best = between;
      thr = t;
    }
  }
  return thr;  // classes: <= thr, > thr
}

// Pen ink is far more saturated than stain and of hues H&E and DAB never
// take (green, cyan, pure blue); black ink and out-of-scan areas are dark.
bool is_pen(int r, int g, int b) {
  const int mx = std::max({r, g, b}), mn = std::min({r, g, b});
  if (mx < 50) return true;
  const int d = mx - mn;
  if (d * 4 < mx) return false;  // saturation below 0.25
  double hue;
  if (mx == r)
    hue = 60.0 * (g - b) / d;
  else if (mx == g)
    hue = 120.0 + 60.0 * (b - r) / d;
  else
    hue = 240.0 + 60.0 * (r - g) / d;
  if (hue < 0) hue += 360;
  if (hue >= 75 && hue < 195) return true;             // green, cyan
  if (hue >= 195 && hue < 238 && d * 2 >= mx) return true;  // saturated blue
  return false;
}

PointPx inside_point(const std::vector<std::uint32_t>& labels, int w, std::uint32_t id, int y0,
                     int y1, int x0, int x1) {
  // The middle of the longest run of the region on its middle rows.
  PointPx best{(x0 + x1) / 2.0 + 0.5, (y0 + y1) / 2.0 + 0.5};
  int best_len = 0;
  const int mid = (y0 + y1) / 2;
  for (int y : {mid, (y0 + mid) / 2, (mid + y1) / 2}) {
    const std::uint32_t* row = labels.data() + static_cast<std::size_t>(y) * w;
    int x = x0;
    while (x <= x1) {
      if (row[x] != id) {
        ++x;
        continue;
      }
      int e = x;
      while (e <= x1 && row[e] == id) ++e;
      if (e - x > best_len) {
        best_len = e - x;
        best = {(x + e) / 2.0, y + 0.5};
      }
      x = e;
    }
    if (best_len > 0) break;
  }
  return best;
}

}  // namespace

Findings find(const slide::Image& view, const Options& opt, const std::vector<std::uint8_t>* roi) {
  Findings f;
  const int w = view.width, h = view.height;
  if (w <= 0 || h <= 0) return f;
  const std::size_t n = view.pixel_count();
  auto check = [&] {
    if (opt.check) opt.check();
  };

  const auto bg = estimate_background(view, roi);
  std::copy(bg.begin(), bg.end(), f.background);
  std::array<std::array<std::uint8_t, 256>, 3> wb{};
  for (int c = 0; c < 3; ++c)
    for (int v = 0; v < 256; ++v) wb[c][v] = static_cast<std::uint8_t>(std::min(255, (v * 255 + bg[c] / 2) / bg[c]));
  // optical density sum, 200 steps per OD unit, from the balanced value
  std::array<std::uint8_t, 256> od{};
  for (int v = 0; v < 256; ++v) od[v] = static_cast<std::uint8_t>(std::min(255.0, std::round(-std::log10((v + 0.5) / 255.5) * 200.0)));

  // feature per cell (0 on pen), and which cells look like glass
  std::array<std::uint32_t, 256> recip{};
  for (int m = 1; m < 256; ++m) recip[m] = static_cast<std::uint32_t>(((255u << 16) + m - 1) / m);
  // Scratch kept per thread (a worker runs analysis after analysis): fresh
  // pages cost more than the passes over them.
  thread_local std::vector<std::uint8_t> feat, pen, glass;
  feat.resize(n);
  pen.assign(n, 0);
  glass.resize(n);
  const bool use_od = opt.method == Method::otsu_od;
  const int glass_grey = (bg[0] + bg[1] + bg[2]) / 3;
  const std::uint8_t* p = view.rgb.data();
  for (std::size_t i = 0; i < n; ++i, p += 3) {
    glass[i] = std::abs((p[0] + p[1] + p[2]) / 3 - glass_grey) <= 6;
    const int r = wb[0][p[0]], g = wb[1][p[1]], b = wb[2][p[2]];
    if (is_pen(r, g, b)) {
      pen[i] = 1;
      feat[i] = 0;
      continue;
    }
    int v;
    if (use_od) {
      v = std::min(255, od[r] + od[g] + od[b]);
    } else {
      const int mx = std::max({r, g, b}), mn = std::min({r, g, b});
      v = ((mx - mn) * recip[mx]) >> 16;  // (mx - mn) * 255 / mx without a division
    }
    feat[i] = static_cast<std::uint8_t>(v);
  }
  std::array<std::uint64_t, 256> hist{}, glass_hist{};
  std::uint64_t glass_n = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (pen[i] || (roi && !(*roi)[i])) continue;
    ++hist[feat[i]];
    if (glass[i]) {
      ++glass_hist[feat[i]];
      ++glass_n;
    }
  }
  check();

  // Otsu, capped just above what the glass shows (tissue texture, nuclei
  // against stroma, can make Otsu split inside the tissue instead of at its
  // edge) and floored so glass noise never
  // becomes tissue when there is little or no tissue to split from.
  const int floor_thr = use_od ? 12 : 14;
  int thr = otsu(hist);
  if (glass_n * 50 >= n) {
    std::uint64_t acc = 0;
    int p99 = 255;
    for (int v = 0; v < 256; ++v) {
      acc += glass_hist[v];
      if (acc * 100 >= glass_n * 99) {
        p99 = v;
        break;
      }
    }
    thr = std::min(thr, p99 + 10);
  }
  f.threshold = std::max(thr, floor_thr);

  // Pen edges blend into the glass: grow the ink by one cell.
  geometry::dilate(pen, w, h, 1);
  std::vector<std::uint8_t> mask(n);
  for (std::size_t i = 0; i < n; ++i) {
    mask[i] = feat[i] > f.threshold && !pen[i] && (!roi || (*roi)[i]);
    f.pen_cells += pen[i];
  }
  // Closing joins tissue torn by a few cells. No opening: thin strands of
  // tissue are a cell or two wide at this resolution, and specks go with
  // the minimum area below.
  geometry::dilate(mask, w, h, 2);
  geometry::erode(mask, w, h, 2);
  if (roi)
    for (std::size_t i = 0; i < n; ++i) mask[i] &= (*roi)[i];
  check();

  const double cell_um2 = opt.um_per_px * opt.um_per_px;
  const auto min_cells = static_cast<std::uint64_t>(std::ceil(opt.min_region_um2 / cell_um2));
  geometry::fill_holes(mask, w, h, std::max<std::uint64_t>(min_cells, 1));
  check();

  thread_local std::vector<std::uint32_t> labels;
  std::vector<std::uint64_t> sizes;
  const std::uint32_t count = geometry::label_components(mask, w, h, labels, sizes);
  std::vector<std::uint32_t> keep_id(count + 1, 0);  // old label -> region index + 1
  std::vector<std::uint32_t> order;
  for (std::uint32_t id = 1; id <= count; ++id) {
    if (sizes[id] >= std::max<std::uint64_t>(min_cells, 1))
      order.push_back(id);
    else
      ++f.dropped_regions;
  }
  std::sort(order.begin(), order.end(), [&](auto a, auto b) { return sizes[a] > sizes[b]; });
  for (std::size_t k = 0; k < order.size(); ++k) keep_id[order[k]] = static_cast<std::uint32_t>(k + 1);
  // bounding boxes for the label points
  std::vector<std::array<int, 4>> box(order.size(), {w, h, -1, -1});
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      std::uint32_t& l = labels[static_cast<std::size_t>(y) * w + x];
      if (!l) continue;
      l = keep_id[l];
      mask[static_cast<std::size_t>(y) * w + x] = l != 0;
      if (!l) continue;
      auto& b = box[l - 1];
      b[0] = std::min(b[0], x);
      b[1] = std::min(b[1], y);
      b[2] = std::max(b[2], x);
      b[3] = std::max(b[3], y);
    }
  }
  check();

  f.regions.resize(order.size());
  for (std::size_t k = 0; k < order.size(); ++k) {
    f.regions[k].cells = sizes[order[k]];
    f.tissue_cells += sizes[order[k]];
    const auto& b = box[k];
    f.regions[k].label_at = inside_point(labels, w, static_cast<std::uint32_t>(k + 1), b[1], b[3], b[0], b[2]);
  }
  f.area_cells = roi ? static_cast<std::uint64_t>(std::count(roi->begin(), roi->end(), 1)) : n;

  // Boundaries: outer ring first, then holes, for each region.
  auto contours = geometry::trace_contours(labels, w, h);
  check();
  std::vector<std::vector<PolygonPx>> outer(order.size()), holes(order.size());
  for (auto& c : contours) {
    if (c.label == 0 || c.label > order.size()) continue;
    (c.hole ? holes : outer)[c.label - 1].push_back(std::move(c.points));
  }

  // Simplify within the point budget: raise the tolerance until the rings
  // fit, then leave out the smallest regions if there are still too many.
  const std::size_t budget = static_cast<std::size_t>(std::max(opt.max_points, 16));
  double tol = std::max(opt.simplify_tolerance_px, 0.0);
  std::vector<std::vector<PolygonPx>> simplified(order.size());
  for (int attempt = 0; attempt < 12; ++attempt) {
    std::size_t total = 0;
    for (std::size_t k = 0; k < order.size(); ++k) {
      simplified[k].clear();
      for (const auto* set : {&outer[k], &holes[k]}) {
        for (const auto& ring : *set) {
          auto s = geometry::simplify_ring(ring, tol);
          if (s.size() < 3) continue;
          total += s.size();
          simplified[k].push_back(std::move(s));
        }
      }
    }
    check();
    if (total <= budget) break;
    tol = std::max(tol * 1.6, 0.5);
  }
  std::size_t used = 0;
  for (std::size_t k = 0; k < order.size(); ++k) {
    std::size_t pts = 0;
    for (const auto& r : simplified[k]) pts += r.size();
    if (simplified[k].empty() || used + pts > budget) {
      // keep the outer ring alone if it fits
      if (!simplified[k].empty() && used + simplified[k][0].size() <= budget) {
        used += simplified[k][0].size();
        f.regions[k].rings.push_back(std::move(simplified[k][0]));
      } else {
        ++f.hidden_regions;
      }
      continue;
    }
    used += pts;
    f.regions[k].rings = std::move(simplified[k]);
  }
  f.mask = std::move(mask);
  // Scratch up to 4 Mi cells (a 60,000 x 40,000 slide at 8 um/px is 2.3 Mi)
  // stays with the thread; larger is returned so an idle worker holds little.
  if (n > (std::size_t{4} << 20)) {
    std::vector<std::uint8_t>().swap(feat);
    std::vector<std::uint8_t>().swap(pen);
    std::vector<std::uint8_t>().swap(glass);
    std::vector<std::uint32_t>().swap(labels);
  }
  return f;
}

}  // namespace iaserve::analysis::tissue
