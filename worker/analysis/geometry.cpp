#include "worker/analysis/geometry.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <numeric>
#include <unordered_map>
#include <utility>

namespace iaserve::analysis::geometry {

namespace {
// Scratch buffers up to this many cells stay with their thread between
// calls; larger ones are returned so a worker does not hold them.
constexpr std::size_t kKeepScratch = std::size_t{4} << 20;
}  // namespace

std::vector<std::uint8_t> rasterize(const std::vector<PolygonPx>& rings, int w, int h,
                                    double scale) {
  std::vector<std::uint8_t> mask(static_cast<std::size_t>(std::max(w, 0)) * std::max(h, 0), 0);
  if (w <= 0 || h <= 0 || scale <= 0) return mask;
  std::vector<std::vector<double>> crossings(h);
  for (const auto& ring : rings) {
    const std::size_t n = ring.size();
    if (n < 3) continue;
    for (std::size_t i = 0; i < n; ++i) {
      const PointPx p{ring[i].x / scale, ring[i].y / scale};
      const PointPx q{ring[(i + 1) % n].x / scale, ring[(i + 1) % n].y / scale};
      if (p.y == q.y) continue;
      const double y0 = std::min(p.y, q.y), y1 = std::max(p.y, q.y);
      // rows whose centre j + 0.5 lies in [y0, y1)
      int j0 = static_cast<int>(std::ceil(y0 - 0.5));
      int j1 = static_cast<int>(std::ceil(y1 - 0.5));  // exclusive
      j0 = std::max(j0, 0);
      j1 = std::min(j1, h);
      const double dxdy = (q.x - p.x) / (q.y - p.y);
      for (int j = j0; j < j1; ++j) crossings[j].push_back(p.x + (j + 0.5 - p.y) * dxdy);
    }
  }
  for (int j = 0; j < h; ++j) {
    auto& xs = crossings[j];
    std::sort(xs.begin(), xs.end());
    std::uint8_t* row = mask.data() + static_cast<std::size_t>(j) * w;
    for (std::size_t k = 0; k + 1 < xs.size(); k += 2) {
      // cells whose centre i + 0.5 lies in [x0, x1)
      int i0 = static_cast<int>(std::ceil(xs[k] - 0.5));
      int i1 = static_cast<int>(std::ceil(xs[k + 1] - 0.5));
      i0 = std::max(i0, 0);
      i1 = std::min(i1, w);
      for (int i = i0; i < i1; ++i) row[i] ^= 1;
    }
  }
  return mask;
}

namespace {

// Segments of one marching-squares cell: corners a b c d (clockwise on
// screen, bits 1 2 4 8), edges 0..3 between corner k and k+1. Each run of
// background corners yields one segment from the edge where it ends to the
// edge where it starts, so foreground diagonals stay joined (8-connected).
struct CellCase {
  int count = 0;
  std::array<std::pair<int, int>, 2> seg{};
};

std::array<CellCase, 16> make_cases() {
  std::array<CellCase, 16> cases{};
  for (int bits = 0; bits < 16; ++bits) {
    auto fg = [bits](int k) { return (bits >> (k & 3)) & 1; };
    for (int k = 0; k < 4; ++k) {
      if (fg(k) || !fg(k + 3)) continue;
      int e = k;
      while (!fg(e + 1)) e = (e + 1) & 3;
      cases[bits].seg[cases[bits].count++] = {e, (k + 3) & 3};
    }
  }
  return cases;
}

}  // namespace

std::vector<Contour> trace_contours(const std::vector<std::uint32_t>& labels, int w, int h) {
  std::vector<Contour> out;
  if (w <= 0 || h <= 0) return out;
  static const std::array<CellCase, 16> cases = make_cases();
  const int pw = w + 2, ph = h + 2;  // padded with background
  auto lab = [&](int px, int py) -> std::uint32_t {
    if (px < 1 || py < 1 || px > w || py > h) return 0;
    return labels[static_cast<std::size_t>(py - 1) * w + (px - 1)];
  };
  const std::int64_t n_h = static_cast<std::int64_t>(pw - 1) * ph;
  auto hid = [&](int x, int y) { return static_cast<std::int64_t>(y) * (pw - 1) + x; };
  auto vid = [&](int x, int y) { return n_h + static_cast<std::int64_t>(y) * pw + x; };
  // Only boundary crossings have links: a map keeps memory proportional to
  // the boundary length, not the image (fresh pages are costly).
  std::unordered_map<std::int64_t, std::int64_t> next;
  std::vector<std::int64_t> starts;
  next.reserve(4096);
  std::vector<std::uint32_t> zero(static_cast<std::size_t>(w), 0);
  for (int cy = 0; cy < ph - 1; ++cy) {
    // rows cy-1 and cy of the image (padded rows cy and cy+1)
    const std::uint32_t* top = (cy >= 1 && cy <= h) ? labels.data() + static_cast<std::size_t>(cy - 1) * w : zero.data();
    const std::uint32_t* bot = (cy + 1 <= h) ? labels.data() + static_cast<std::size_t>(cy) * w : zero.data();
    for (int cx = 0; cx < pw - 1; ++cx) {
      // padded columns cx, cx+1 are image columns cx-1, cx
      const bool a = cx >= 1 && top[cx - 1], b = cx < w && top[cx];
      const bool c = cx < w && bot[cx], d = cx >= 1 && bot[cx - 1];
      const int bits = a | (b << 1) | (c << 2) | (d << 3);
      if (bits == 0 || bits == 15) continue;
      const std::array<std::int64_t, 4> edge{hid(cx, cy), vid(cx + 1, cy), hid(cx, cy + 1),
                                             vid(cx, cy)};
      const CellCase& cc = cases[bits];
      for (int k = 0; k < cc.count; ++k) {
        next[edge[cc.seg[k].first]] = edge[cc.seg[k].second];
        starts.push_back(edge[cc.seg[k].first]);
      }
    }
  }

  auto point_of = [&](std::int64_t id) -> PointPx {
    if (id < n_h) {
      const int y = static_cast<int>(id / (pw - 1)), x = static_cast<int>(id % (pw - 1));
      return {static_cast<double>(x), y - 0.5};
    }
    id -= n_h;
    const int y = static_cast<int>(id / pw), x = static_cast<int>(id % pw);
    return {x - 0.5, static_cast<double>(y)};
  };
  auto label_of = [&](std::int64_t id) -> std::uint32_t {
    if (id < n_h) {
      const int y = static_cast<int>(id / (pw - 1)), x = static_cast<int>(id % (pw - 1));
      return std::max(lab(x, y), lab(x + 1, y));
    }
    id -= n_h;
    const int y = static_cast<int>(id / pw), x = static_cast<int>(id % pw);
    return std::max(lab(x, y), lab(x, y + 1));
  };

  for (const std::int64_t start : starts) {
    auto it = next.find(start);
    if (it == next.end() || it->second < 0) continue;
    Contour c;
    c.label = label_of(start);
    std::int64_t cur = start;
    do {
      c.points.push_back(point_of(cur));
      auto link = next.find(cur);
      if (link == next.end()) break;
      const std::int64_t nx = link->second;
      link->second = -1;
      cur = nx;
    } while (cur >= 0 && cur != start);
    // The walk above goes counter-clockwise on screen round a region;
    // reversed, outer boundaries get a positive shoelace area.
    std::reverse(c.points.begin(), c.points.end());
    c.hole = signed_area(c.points) < 0;
    out.push_back(std::move(c));
  }
  return out;
}

double signed_area(const PolygonPx& ring) {
  const std::size_t n = ring.size();
  if (n < 3) return 0;
  double s = 0;
  for (std::size_t i = 0, j = n - 1; i < n; j = i++) s += ring[j].x * ring[i].y - ring[i].x * ring[j].y;
  return s / 2;
}

namespace {

double seg_dist2(const PointPx& p, const PointPx& a, const PointPx& b) {
  const double dx = b.x - a.x, dy = b.y - a.y;
  const double len2 = dx * dx + dy * dy;
  double t = len2 > 0 ? ((p.x - a.x) * dx + (p.y - a.y) * dy) / len2 : 0;
  t = std::clamp(t, 0.0, 1.0);
  const double ex = a.x + t * dx - p.x, ey = a.y + t * dy - p.y;
  return ex * ex + ey * ey;
}

// Marks the points to keep of the open chain pts[first..last] (inclusive).
void dp_chain(const PolygonPx& pts, std::size_t first, std::size_t last, double tol2,
              std::vector<char>& keep) {
  std::vector<std::pair<std::size_t, std::size_t>> stack{{first, last}};
  const std::size_t n = pts.size();
  while (!stack.empty()) {
    auto [a, b] = stack.back();
    stack.pop_back();
    if (b <= a + 1) continue;
    double best = -1;
    std::size_t idx = a;
    for (std::size_t i = a + 1; i < b; ++i) {
      const double d = seg_dist2(pts[i % n], pts[a % n], pts[b % n]);
      if (d > best) {
        best = d;
        idx = i;
      }
    }
    if (best > tol2) {
      keep[idx % n] = 1;
      stack.push_back({a, idx});
      stack.push_back({idx, b});
    }
  }
}

}  // namespace

PolygonPx simplify_ring(const PolygonPx& ring, double tolerance) {
  const std::size_t n = ring.size();
  if (n <= 3 || tolerance <= 0) return ring;
  // Split the ring at point 0 and the point farthest from it.
  std::size_t far = 0;
  double best = -1;
  for (std::size_t i = 1; i < n; ++i) {
    const double dx = ring[i].x - ring[0].x, dy = ring[i].y - ring[0].y;
    const double d = dx * dx + dy * dy;
    if (d > best) {
      best = d;
      far = i;
    }
  }
  std::vector<char> keep(n, 0);
  keep[0] = keep[far] = 1;
  const double tol2 = tolerance * tolerance;
  dp_chain(ring, 0, far, tol2, keep);
  dp_chain(ring, far, n, tol2, keep);  // index n is point 0 again
  PolygonPx out;
  for (std::size_t i = 0; i < n; ++i)
    if (keep[i]) out.push_back(ring[i]);
  if (out.size() < 3) {
    // A thin sliver: keep the point farthest from the chord as the third.
    std::size_t third = 0;
    double b3 = -1;
    for (std::size_t i = 0; i < n; ++i) {
      if (i == 0 || i == far) continue;
      const double d = seg_dist2(ring[i], ring[0], ring[far]);
      if (d > b3) {
        b3 = d;
        third = i;
      }
    }
    keep[third] = 1;
    out.clear();
    for (std::size_t i = 0; i < n; ++i)
      if (keep[i]) out.push_back(ring[i]);
  }
  return out;
}

std::uint32_t label_components(const std::vector<std::uint8_t>& mask, int w, int h,
                               std::vector<std::uint32_t>& labels,
                               std::vector<std::uint64_t>& sizes) {
  labels.assign(static_cast<std::size_t>(w) * h, 0);
  std::vector<std::uint32_t> parent{0};
  auto find = [&parent](std::uint32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  };
  auto unite = [&](std::uint32_t a, std::uint32_t b) {
    a = find(a);
    b = find(b);
    if (a == b) return a;
    if (a < b) std::swap(a, b);
    parent[a] = b;
    return b;
  };
  for (int y = 0; y < h; ++y) {
    const std::uint8_t* m = mask.data() + static_cast<std::size_t>(y) * w;
    std::uint32_t* l = labels.data() + static_cast<std::size_t>(y) * w;
    const std::uint32_t* up = y > 0 ? l - w : nullptr;
    for (int x = 0; x < w; ++x) {
      if (!m[x]) continue;
      std::uint32_t cur = 0;
      auto join = [&](std::uint32_t other) {
        if (!other) return;
        cur = cur ? unite(cur, other) : other;
      };
      if (x > 0) join(l[x - 1]);
      if (up) {
        if (x > 0) join(up[x - 1]);
        join(up[x]);
        if (x + 1 < w) join(up[x + 1]);
      }
      if (!cur) {
        cur = static_cast<std::uint32_t>(parent.size());
        parent.push_back(cur);
      }
      l[x] = cur;
    }
  }
  // Compact the roots to 1..count.
  std::vector<std::uint32_t> remap(parent.size(), 0);
  std::uint32_t count = 0;
  for (std::uint32_t i = 1; i < parent.size(); ++i) {
    const std::uint32_t r = find(i);
    if (r == i) remap[i] = ++count;
  }
  sizes.assign(count + 1, 0);
  for (auto& v : labels) {
    if (!v) continue;
    v = remap[find(v)];
    ++sizes[v];
  }
  return count;
}

namespace {

// One pass of a 1-D window [i-r, i+r] along rows (horizontal) or columns.
// erode: set when every in-image cell of the window is set; dilate: any.
void window_pass(std::vector<std::uint8_t>& mask, int w, int h, int r, bool dilate_op,
                 bool horizontal) {
  if (r <= 0) return;
  const int lines = horizontal ? h : w, len = horizontal ? w : h;
  const std::size_t step = horizontal ? 1 : static_cast<std::size_t>(w);
  std::vector<std::uint8_t> src(len);
  for (int line = 0; line < lines; ++line) {
    std::uint8_t* base =
        mask.data() + (horizontal ? static_cast<std::size_t>(line) * w : static_cast<std::size_t>(line));
    for (int i = 0; i < len; ++i) src[i] = base[i * step];
    int count = 0;  // set cells in the window
    // window for i = 0 is [0, r]
    for (int i = 0; i <= std::min(r, len - 1); ++i) count += src[i];
    for (int i = 0; i < len; ++i) {
      const int lo = std::max(0, i - r), hi = std::min(len - 1, i + r);
      const int cells = hi - lo + 1;
      base[i * step] = dilate_op ? (count > 0) : (count == cells);
      // slide to i + 1
      if (i + r + 1 < len) count += src[i + r + 1];
      if (i - r >= 0) count -= src[i - r];
    }
  }
}

}  // namespace

// The vertical pass row by row with a count per column: the column-wise
// walk of window_pass misses the cache on every cell.
void vertical_pass(std::vector<std::uint8_t>& mask, int w, int h, int r, bool dilate_op) {
  if (r <= 0 || w <= 0 || h <= 0) return;
  // Scratch kept per thread: fresh pages cost more than the pass itself.
  thread_local std::vector<std::uint8_t> src;
  src.assign(mask.begin(), mask.end());
  std::vector<std::uint16_t> count(static_cast<std::size_t>(w), 0);
  auto row = [&](int y) { return src.data() + static_cast<std::size_t>(y) * w; };
  for (int y = 0; y <= std::min(r, h - 1); ++y) {
    const std::uint8_t* s = row(y);
    for (int x = 0; x < w; ++x) count[x] = static_cast<std::uint16_t>(count[x] + s[x]);
  }
  for (int y = 0; y < h; ++y) {
    const int lo = std::max(0, y - r), hi = std::min(h - 1, y + r);
    const int cells = hi - lo + 1;
    std::uint8_t* d = mask.data() + static_cast<std::size_t>(y) * w;
    if (dilate_op)
      for (int x = 0; x < w; ++x) d[x] = count[x] > 0;
    else
      for (int x = 0; x < w; ++x) d[x] = count[x] == cells;
    if (y + r + 1 < h) {
      const std::uint8_t* s = row(y + r + 1);
      for (int x = 0; x < w; ++x) count[x] = static_cast<std::uint16_t>(count[x] + s[x]);
    }
    if (y - r >= 0) {
      const std::uint8_t* s = row(y - r);
      for (int x = 0; x < w; ++x) count[x] = static_cast<std::uint16_t>(count[x] - s[x]);
    }
  }
  if (src.size() > kKeepScratch) std::vector<std::uint8_t>().swap(src);
}

void erode(std::vector<std::uint8_t>& mask, int w, int h, int r) {
  window_pass(mask, w, h, r, false, true);
  vertical_pass(mask, w, h, r, false);
}

void dilate(std::vector<std::uint8_t>& mask, int w, int h, int r) {
  window_pass(mask, w, h, r, true, true);
  vertical_pass(mask, w, h, r, true);
}

void fill_holes(std::vector<std::uint8_t>& mask, int w, int h, std::uint64_t max_cells) {
  if (max_cells == 0 || w <= 0 || h <= 0) return;
  // 0 unvisited background, 1 foreground, 2 background seen
  thread_local std::vector<std::uint8_t> state;
  state.resize(mask.size());
  for (std::size_t i = 0; i < mask.size(); ++i) state[i] = mask[i] ? 1 : 0;
  // Scanline flood fill: one stack entry per run, not per cell.
  std::vector<std::pair<int, int>> stack;
  std::vector<std::pair<std::size_t, int>> runs;  // (start index, length) of a hole
  std::size_t run_cells = 0;
  auto flood = [&](std::size_t seed, bool keep) {
    if (state[seed] != 0) return;
    stack.emplace_back(static_cast<int>(seed % static_cast<std::size_t>(w)),
                       static_cast<int>(seed / static_cast<std::size_t>(w)));
    while (!stack.empty()) {
      auto [x, y] = stack.back();
      stack.pop_back();
      std::uint8_t* line = state.data() + static_cast<std::size_t>(y) * w;
      if (line[x] != 0) continue;
      int x0 = x, x1 = x;
      while (x0 > 0 && line[x0 - 1] == 0) --x0;
      while (x1 + 1 < w && line[x1 + 1] == 0) ++x1;
      std::fill(line + x0, line + x1 + 1, std::uint8_t{2});
      if (keep) {
        runs.emplace_back(static_cast<std::size_t>(y) * w + x0, x1 - x0 + 1);
        run_cells += static_cast<std::size_t>(x1 - x0 + 1);
      }
      for (int ny : {y - 1, y + 1}) {
        if (ny < 0 || ny >= h) continue;
        const std::uint8_t* nl = state.data() + static_cast<std::size_t>(ny) * w;
        for (int i = x0; i <= x1; ++i) {
          if (nl[i] != 0) continue;
          stack.emplace_back(i, ny);
          while (i + 1 <= x1 && nl[i + 1] == 0) ++i;
        }
      }
    }
  };
  // The glass round the tissue: everything reachable from the border.
  for (int x = 0; x < w; ++x) {
    flood(static_cast<std::size_t>(x), false);
    flood(static_cast<std::size_t>(h - 1) * w + x, false);
  }
  for (int y = 0; y < h; ++y) {
    flood(static_cast<std::size_t>(y) * w, false);
    flood(static_cast<std::size_t>(y) * w + (w - 1), false);
  }
  // What is left unvisited are holes.
  for (std::size_t seed = 0; seed < state.size(); ++seed) {
    if (state[seed] != 0) continue;
    runs.clear();
    run_cells = 0;
    flood(seed, true);
    if (run_cells < max_cells)
      for (auto [start, len] : runs) std::fill_n(mask.begin() + static_cast<std::ptrdiff_t>(start), len, std::uint8_t{1});
  }
  if (state.size() > kKeepScratch) std::vector<std::uint8_t>().swap(state);
}

}  // namespace iaserve::analysis::geometry
