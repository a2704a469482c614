#include "scene.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numbers>

#include <boost/json/array.hpp>

namespace mkslide {

namespace {

constexpr double kPi = std::numbers::pi;
constexpr std::uint8_t kBackground[3] = {241, 240, 242};
constexpr double kCellUm = 12.0;  // nucleus grid cell, µm

std::uint64_t splitmix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Deterministic across platforms (unlike std:: distributions).
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(splitmix(seed ^ 0x6D6B736C696465ull)) {}
  double uniform(double lo = 0, double hi = 1) {
    state_ = splitmix(state_);
    return lo + (hi - lo) * static_cast<double>(state_ >> 11) * 0x1.0p-53;
  }

 private:
  std::uint64_t state_;
};

inline std::uint32_t hash2(std::int64_t x, std::int64_t y, std::uint64_t seed) {
  std::uint64_t h = static_cast<std::uint64_t>(x) * 0x9E3779B185EBCA87ull ^ static_cast<std::uint64_t>(y) * 0xC2B2AE3D27D4EB4Full ^ seed;
  h ^= h >> 29;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 32;
  return static_cast<std::uint32_t>(h);
}

// Smooth value noise in [0,1) on a grid of `cell` µm, for one row of pixels:
// the row's node values are interpolated in y once, then per pixel in x.
class NoiseRow {
 public:
  void setup(const std::vector<double>& ux, double cell, std::uint64_t seed) {
    cell_ = cell;
    seed_ = seed;
    ix_.resize(ux.size());
    fx_.resize(ux.size());
    for (std::size_t i = 0; i < ux.size(); ++i) {
      double g = ux[i] / cell;
      double f = std::floor(g);
      ix_[i] = static_cast<std::int64_t>(f);
      fx_[i] = smooth(static_cast<float>(g - f));
    }
    ix0_ = ux.empty() ? 0 : ix_.front();
    values_.resize(ux.empty() ? 0 : static_cast<std::size_t>(ix_.back() - ix0_ + 2));
  }
  void row(double uy) {
    double g = uy / cell_;
    auto iy = static_cast<std::int64_t>(std::floor(g));
    float fy = smooth(static_cast<float>(g - std::floor(g)));
    for (std::size_t k = 0; k < values_.size(); ++k) {
      std::int64_t ix = ix0_ + static_cast<std::int64_t>(k);
      float a = node(ix, iy), b = node(ix, iy + 1);
      values_[k] = a + (b - a) * fy;
    }
  }
  float at(std::size_t i) const {
    std::size_t k = static_cast<std::size_t>(ix_[i] - ix0_);
    return values_[k] + (values_[k + 1] - values_[k]) * fx_[i];
  }

 private:
  static float smooth(float t) { return t * t * (3 - 2 * t); }
  float node(std::int64_t x, std::int64_t y) const {
    return static_cast<float>(hash2(x, y, seed_) & 0xFFFF) / 65536.0f;
  }
  double cell_ = 1;
  std::uint64_t seed_ = 0;
  std::int64_t ix0_ = 0;
  std::vector<std::int64_t> ix_;
  std::vector<float> fx_;
  std::vector<float> values_;
};

double ring_area(const Ring& r) {
  double a = 0;
  for (std::size_t i = 0; i < r.size(); ++i) {
    const Point& p = r[i];
    const Point& q = r[(i + 1) % r.size()];
    a += p.x * q.y - q.x * p.y;
  }
  return std::abs(a) / 2;
}

// A star-shaped blob around (cx, cy): radius R modulated by a few harmonics,
// then stretched and rotated.
Ring blob(Random& rnd, double cx, double cy, double radius, double stretch, double angle, int vertices,
          double wobble) {
  double amp[7], phase[7];
  for (int k = 2; k < 7; ++k) {
    amp[k] = rnd.uniform(0, wobble / k);
    phase[k] = rnd.uniform(0, 2 * kPi);
  }
  Ring ring;
  ring.reserve(static_cast<std::size_t>(vertices));
  const double ca = std::cos(angle), sa = std::sin(angle);
  for (int i = 0; i < vertices; ++i) {
    double t = 2 * kPi * i / vertices;
    double r = 1;
    for (int k = 2; k < 7; ++k) r += amp[k] * std::sin(k * t + phase[k]);
    double x = radius * r * std::cos(t) * stretch, y = radius * r * std::sin(t) / stretch;
    ring.push_back({cx + x * ca - y * sa, cy + x * sa + y * ca});
  }
  return ring;
}

}  // namespace

Scene::Scene(const SceneOptions& options) : opt_(options) {
  Random rnd(opt_.seed);
  const double W = static_cast<double>(opt_.width), H = static_cast<double>(opt_.height);
  const int count = 2 + static_cast<int>(rnd.uniform(0, 4));  // 2..5 regions
  const double target = rnd.uniform(0.18, 0.35) * W * H;       // tissue share of the slide
  double base = std::sqrt(target / (count * kPi));
  const double margin = 0.03 * std::min(W, H);
  for (int attempt = 0; attempt < 4000 && static_cast<int>(regions_.size()) < count; ++attempt) {
    if (attempt && attempt % 500 == 0) base *= 0.85;  // crowded: smaller regions
    double radius = base * rnd.uniform(0.7, 1.2);
    double stretch = rnd.uniform(0.75, 1.35);
    double bound = radius * 1.5 * std::max(stretch, 1 / stretch);
    if (2 * (bound + margin) >= std::min(W, H)) continue;
    double cx = rnd.uniform(bound + margin, W - bound - margin);
    double cy = rnd.uniform(bound + margin, H - bound - margin);
    bool overlaps = false;
    for (const auto& r : regions_)
      if (std::hypot(cx - r.cx, cy - r.cy) < bound + r.bound + margin) overlaps = true;
    if (overlaps) continue;
    Region region;
    region.cx = cx;
    region.cy = cy;
    region.bound = bound;
    double angle = rnd.uniform(0, kPi);
    region.rings.push_back(blob(rnd, cx, cy, radius, stretch, angle, 240, 0.45));
    if (rnd.uniform() < 0.4)  // a lumen: the outer ring never comes closer than ~0.5 R
      region.rings.push_back(blob(rnd, cx + radius * rnd.uniform(-0.1, 0.1), cy + radius * rnd.uniform(-0.1, 0.1),
                                  radius * 0.22, stretch, angle, 96, 0.3));
    region.nuclei_density = rnd.uniform(0.3, 0.8);
    region.area = ring_area(region.rings[0]);
    for (std::size_t i = 1; i < region.rings.size(); ++i) region.area -= ring_area(region.rings[i]);
    regions_.push_back(std::move(region));
  }
  for (std::size_t ri = 0; ri < regions_.size(); ++ri)
    for (const auto& ring : regions_[ri].rings)
      for (std::size_t i = 0; i < ring.size(); ++i) {
        Point a = ring[i], b = ring[(i + 1) % ring.size()];
        if (a.y == b.y) continue;
        if (a.y > b.y) std::swap(a, b);
        edges_.push_back({a.x, a.y, b.x, b.y, static_cast<int>(ri)});
      }
  std::sort(edges_.begin(), edges_.end(), [](const Edge& a, const Edge& b) { return a.y0 < b.y0; });

  if (opt_.pen && !regions_.empty()) {
    // An arc around the first region, as a pathologist circles a focus;
    // broken where it would cross another region.
    const Region& r = regions_[0];
    pen_half_width_ = 150.0 / opt_.mpp;  // a 0.3 mm marker line
    double rad = r.bound * 1.1 + 2 * pen_half_width_;
    double start = rnd.uniform(0, 2 * kPi), sweep = rnd.uniform(1.2 * kPi, 1.8 * kPi);
    Point prev{};
    bool have = false;
    for (int i = 0; i <= 96; ++i) {
      double t = start + sweep * i / 96;
      double wob = 1 + 0.05 * std::sin(3 * t);
      Point p{r.cx + rad * wob * std::cos(t), r.cy + rad * wob * std::sin(t)};
      bool clear = true;
      for (std::size_t k = 1; k < regions_.size(); ++k)
        if (std::hypot(p.x - regions_[k].cx, p.y - regions_[k].cy) < regions_[k].bound + 3 * pen_half_width_)
          clear = false;
      if (clear && have) pen_.push_back({prev, p});
      prev = p;
      have = clear;
    }
  }
  if (opt_.dust) {
    int specks = 40;
    for (int i = 0, tries = 0; i < specks && tries < 4000; ++tries) {
      Speck s{rnd.uniform(0, W), rnd.uniform(0, H), rnd.uniform(10, 60) / opt_.mpp};
      bool clear = true;
      for (const auto& r : regions_)
        if (std::hypot(s.x - r.cx, s.y - r.cy) < r.bound + s.r) clear = false;
      if (!clear) continue;
      dust_.push_back(s);
      ++i;
    }
  }
}

double Scene::tissue_area_px() const {
  double a = 0;
  for (const auto& r : regions_) a += r.area;
  return a;
}

void Scene::crossings(double y, const std::vector<const Edge*>& edges, std::vector<Crossing>& xs) const {
  xs.clear();
  for (const Edge* e : edges)
    if (e->y0 <= y && y < e->y1) xs.push_back({e->x0 + (y - e->y0) / (e->y1 - e->y0) * (e->x1 - e->x0), e->region});
  std::sort(xs.begin(), xs.end(), [](const Crossing& a, const Crossing& b) { return a.x < b.x; });
}

void Scene::render(double dsx, double dsy, std::int64_t x0, std::int64_t y0, int w, int h, std::uint8_t* rgb,
                   std::size_t stride) const {
  const double mpp = opt_.mpp;
  const double top = static_cast<double>(y0) * dsy, bottom = static_cast<double>(y0 + h) * dsy;
  std::vector<const Edge*> band;
  for (const Edge& e : edges_) {
    if (e.y0 > bottom) break;
    if (e.y1 >= top) band.push_back(&e);
  }
  // Texture fields in µm: value noise at two scales, and fibre-like strands.
  std::vector<double> ux_col(static_cast<std::size_t>(w));
  std::vector<float> colS(static_cast<std::size_t>(w)), colC(static_cast<std::size_t>(w));
  for (int i = 0; i < w; ++i) {
    double ux = (static_cast<double>(x0 + i) + 0.5) * dsx * mpp;
    ux_col[static_cast<std::size_t>(i)] = ux;
    colS[static_cast<std::size_t>(i)] = static_cast<float>(std::sin(ux * 0.41));
    colC[static_cast<std::size_t>(i)] = static_cast<float>(std::cos(ux * 0.41));
  }
  NoiseRow fine, coarse;
  fine.setup(ux_col, 55.0, opt_.seed * 31 + 1);
  coarse.setup(ux_col, 260.0, opt_.seed * 31 + 2);
  const double pixel_um = std::max(dsx, dsy) * mpp;
  const bool resolved = pixel_um < 3.0;  // nuclei drawn one by one, else as an average tint
  const double nucleus_share = kPi * 3.2 * 3.2 / (kCellUm * kCellUm);
  std::vector<Crossing> xs;
  std::vector<std::uint8_t> pen_row;
  for (int j = 0; j < h; ++j) {
    std::uint8_t* row = rgb + static_cast<std::size_t>(j) * stride;
    for (int i = 0; i < w; ++i) std::memcpy(row + 3 * i, kBackground, 3);
    const double yl0 = (static_cast<double>(y0 + j) + 0.5) * dsy;  // level-0 y of the pixel centre
    const double uy = yl0 * mpp;
    bool noise_ready = false;
    const float rowS = static_cast<float>(std::sin(uy * 0.29)), rowC = static_cast<float>(std::cos(uy * 0.29));
    crossings(yl0, band, xs);
    for (std::size_t k = 0; k + 1 < xs.size(); k += 2) {
      // Pixels whose centre lies in [xs[k], xs[k+1]).
      const Region& region = regions_[static_cast<std::size_t>(xs[k].region)];
      std::int64_t c0 = static_cast<std::int64_t>(std::ceil(xs[k].x / dsx - 0.5)) - x0;
      std::int64_t c1 = static_cast<std::int64_t>(std::ceil(xs[k + 1].x / dsx - 0.5)) - x0;
      c0 = std::max<std::int64_t>(c0, 0);
      c1 = std::min<std::int64_t>(c1, w);
      const std::int64_t cy = static_cast<std::int64_t>(std::floor(uy / kCellUm));
      if (c0 < c1 && !noise_ready) {
        fine.row(uy);
        coarse.row(uy);
        noise_ready = true;
      }
      for (std::int64_t i = c0; i < c1; ++i) {
        const std::size_t si = static_cast<std::size_t>(i);
        const float nf = fine.at(si), nc = coarse.at(si);
        float t = 0.1f + 0.55f * nf + 0.35f * nc + 0.08f * (colS[si] * rowC + colC[si] * rowS);
        t = std::clamp(t, 0.f, 1.f);
        float r = 247 - 30 * t, g = 200 - 78 * t, b = 224 - 50 * t;
        // Nuclei cluster where the coarse noise is high.
        const double local_density = std::min(1.0, region.nuclei_density * (0.35 + 1.3 * nc));
        const std::uint32_t density = static_cast<std::uint32_t>(local_density * 65535);
        const double ux = (static_cast<double>(x0 + i) + 0.5) * dsx * mpp;
        if (resolved) {
          const std::int64_t cx = static_cast<std::int64_t>(std::floor(ux / kCellUm));
          const std::uint32_t hsh = hash2(cx, cy, opt_.seed);
          if ((hsh & 0xFFFF) < density) {
            const double rad = 2.6 + 1.2 * ((hsh >> 16) & 0xF) / 15.0;
            const double room = kCellUm / 2 - rad;
            const double ncx = (cx + 0.5) * kCellUm + room * (((hsh >> 20) & 0xFF) / 127.5 - 1);
            const double ncy = (cy + 0.5) * kCellUm + room * (((hsh >> 24) & 0xFF) / 127.5 - 1);
            const double dx = ux - ncx, dy = uy - ncy;
            if (dx * dx + dy * dy <= rad * rad) {
              const float v = static_cast<float>((hsh >> 28) & 0xF) - 7.5f;
              r = 92 + 2 * v;
              g = 58 + v;
              b = 142 + 2 * v;
            }
          }
          const std::uint32_t noise = hash2(x0 + i, y0 + j, opt_.seed + 7);
          const float n = static_cast<float>(noise & 7) - 3.5f;
          r += n;
          g += n;
          b += n;
        } else {
          const float f = static_cast<float>(local_density * nucleus_share);
          r = r * (1 - f) + 92 * f;
          g = g * (1 - f) + 58 * f;
          b = b * (1 - f) + 142 * f;
        }
        std::uint8_t* p = row + 3 * si;
        p[0] = static_cast<std::uint8_t>(std::clamp(r, 0.f, 255.f));
        p[1] = static_cast<std::uint8_t>(std::clamp(g, 0.f, 255.f));
        p[2] = static_cast<std::uint8_t>(std::clamp(b, 0.f, 255.f));
      }
    }
    // Dust and pen on top (rare: most tiles skip both loops at once).
    for (const Speck& s : dust_) {
      if (std::abs(yl0 - s.y) > s.r) continue;
      for (int i = 0; i < w; ++i) {
        const double xl = (static_cast<double>(x0 + i) + 0.5) * dsx;
        if (std::abs(xl - s.x) > s.r) continue;
        const double d = std::hypot(xl - s.x, yl0 - s.y);
        if (d <= s.r * (0.75 + 0.25 * std::sin(std::atan2(yl0 - s.y, xl - s.x) * 5))) {
          std::uint8_t* p = row + 3 * i;
          p[0] = 96;
          p[1] = 90;
          p[2] = 84;
        }
      }
    }
    if (!pen_.empty()) {
      // Ink covers a pixel once, also where segments overlap at the joints.
      pen_row.assign(static_cast<std::size_t>(w), 0);
      bool any = false;
      for (const auto& seg : pen_) {
        const double hw = pen_half_width_;
        if (yl0 < std::min(seg.a.y, seg.b.y) - hw || yl0 > std::max(seg.a.y, seg.b.y) + hw) continue;
        const double xa = std::min(seg.a.x, seg.b.x) - hw, xb = std::max(seg.a.x, seg.b.x) + hw;
        int i0 = std::max<int>(0, static_cast<int>(std::floor(xa / dsx - static_cast<double>(x0))));
        int i1 = std::min<int>(w, static_cast<int>(std::ceil(xb / dsx - static_cast<double>(x0))) + 1);
        const double dx = seg.b.x - seg.a.x, dy = seg.b.y - seg.a.y, len2 = dx * dx + dy * dy;
        for (int i = i0; i < i1; ++i) {
          const double px = (static_cast<double>(x0 + i) + 0.5) * dsx - seg.a.x, py = yl0 - seg.a.y;
          const double t = len2 > 0 ? std::clamp((px * dx + py * dy) / len2, 0.0, 1.0) : 0.0;
          const double ex = px - t * dx, ey = py - t * dy;
          if (ex * ex + ey * ey <= hw * hw) {
            pen_row[static_cast<std::size_t>(i)] = 1;
            any = true;
          }
        }
      }
      if (any)
        for (int i = 0; i < w; ++i)
          if (pen_row[static_cast<std::size_t>(i)]) {
            std::uint8_t* p = row + 3 * i;
            // Translucent green marker ink over what is below.
            p[0] = static_cast<std::uint8_t>(p[0] * 0.25 + 30 * 0.75);
            p[1] = static_cast<std::uint8_t>(p[1] * 0.25 + 110 * 0.75);
            p[2] = static_cast<std::uint8_t>(p[2] * 0.25 + 70 * 0.75);
          }
    }
  }
}

double Scene::grid_fraction(int grid) const {
  std::vector<const Edge*> all;
  for (const Edge& e : edges_) all.push_back(&e);
  std::vector<Crossing> xs;
  std::int64_t inside = 0;
  const double W = static_cast<double>(opt_.width), H = static_cast<double>(opt_.height);
  for (int j = 0; j < grid; ++j) {
    const double y = (j + 0.5) * H / grid;
    crossings(y, all, xs);
    for (int i = 0; i < grid; ++i) {
      const double x = (i + 0.5) * W / grid;
      std::size_t n = 0;
      while (n < xs.size() && xs[n].x <= x) ++n;
      if (n % 2) ++inside;
    }
  }
  return static_cast<double>(inside) / (static_cast<double>(grid) * grid);
}

boost::json::object Scene::truth() const {
  namespace json = boost::json;
  const double W = static_cast<double>(opt_.width), H = static_cast<double>(opt_.height);
  const double px_mm2 = opt_.mpp * opt_.mpp / 1e6;
  json::object o;
  o["width"] = opt_.width;
  o["height"] = opt_.height;
  o["mpp"] = opt_.mpp;
  o["seed"] = opt_.seed;
  o["tissue_area_px"] = tissue_area_px();
  o["tissue_area_mm2"] = tissue_area_px() * px_mm2;
  o["tissue_fraction"] = tissue_area_px() / (W * H);
  o["tissue_fraction_grid"] = grid_fraction(1000);
  json::array regions;
  for (std::size_t i = 0; i < regions_.size(); ++i) {
    const Region& r = regions_[i];
    json::object ro;
    ro["id"] = i;
    ro["area_px"] = r.area;
    ro["area_mm2"] = r.area * px_mm2;
    ro["nuclei_density"] = r.nuclei_density;
    json::array rings;
    for (const auto& ring : r.rings) {
      json::array pts;
      for (const auto& p : ring) pts.push_back(json::array{std::round(p.x * 100) / 100, std::round(p.y * 100) / 100});
      rings.push_back(std::move(pts));
    }
    ro["polygon"] = std::move(rings);  // [outer, holes...], level-0 px
    regions.push_back(std::move(ro));
  }
  o["regions"] = std::move(regions);
  o["pen"] = !pen_.empty();
  o["dust_specks"] = dust_.size();
  return o;
}

}  // namespace mkslide
