// The tissue image processing on pictures drawn here, where the answer is
// known cell by cell.
#include <catch2/catch.hpp>

#include <cmath>
#include <iostream>
#include <random>

#include "worker/analysis/tissue.hpp"

using namespace iaserve;
using namespace iaserve::analysis;

namespace {

struct Ellipse {
  double cx, cy, rx, ry;
  bool contains(double x, double y) const {
    const double dx = (x - cx) / rx, dy = (y - cy) / ry;
    return dx * dx + dy * dy <= 1;
  }
};

struct Scene {
  slide::Image img;
  std::vector<std::uint8_t> truth;
};

// Glass with noise, stained ellipses (one with a hole), pen strokes and dust
// on the glass only, so the truth is the ellipses.
Scene draw_scene(bool ihc, unsigned seed) {
  const int w = 640, h = 420;
  Scene s{slide::Image(w, h), std::vector<std::uint8_t>(static_cast<std::size_t>(w) * h, 0)};
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> noise(-4, 4);
  std::uniform_real_distribution<double> u(0, 1);
  const std::vector<Ellipse> tissue{{160, 150, 110, 80}, {420, 120, 90, 60}, {470, 310, 120, 70}, {150, 330, 40, 30}};
  const Ellipse hole{160, 150, 35, 25};
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) {
      std::uint8_t* p = s.img.at(x, y);
      const double fx = x + 0.5, fy = y + 0.5;
      bool in = false;
      for (const auto& e : tissue) in |= e.contains(fx, fy);
      in &= !hole.contains(fx, fy);
      int r = 236, g = 233, b = 239;
      if (in) {
        s.truth[static_cast<std::size_t>(y) * w + x] = 1;
        const double t = u(rng);
        if (ihc) {  // haematoxylin counterstain with DAB patches
          if (t < 0.3) { r = 170; g = 120; b = 80; } else { r = 175; g = 170; b = 205; }
        } else {  // eosin with haematoxylin
          if (t < 0.35) { r = 150; g = 95; b = 175; } else { r = 228; g = 160; b = 200; }
        }
      }
      p[0] = static_cast<std::uint8_t>(std::clamp(r + noise(rng), 0, 255));
      p[1] = static_cast<std::uint8_t>(std::clamp(g + noise(rng), 0, 255));
      p[2] = static_cast<std::uint8_t>(std::clamp(b + noise(rng), 0, 255));
    }
  }
  // pen: a blue and a green stroke, a black dot, on glass
  for (int x = 250; x < 600; ++x)
    for (int dy = -3; dy <= 3; ++dy) {
      std::uint8_t* p = s.img.at(x, 20 + dy + (x - 250) / 20);
      p[0] = 40; p[1] = 70; p[2] = 200;
    }
  for (int y = 200; y < 400; ++y)
    for (int dx = -3; dx <= 3; ++dx) {
      std::uint8_t* p = s.img.at(600 + dx, y);
      p[0] = 50; p[1] = 160; p[2] = 70;
    }
  for (int y = 380; y < 395; ++y)
    for (int x = 300; x < 315; ++x) {
      std::uint8_t* p = s.img.at(x, y);
      p[0] = p[1] = p[2] = 20;
    }
  // dust: tiny dark specks
  for (int k = 0; k < 40; ++k) {
    int x = 5 + static_cast<int>(u(rng) * 620), y = 5 + static_cast<int>(u(rng) * 400);
    bool on_tissue = false;
    for (const auto& e : tissue) on_tissue |= e.contains(x, y) || e.contains(x + 2, y + 2);
    if (on_tissue) continue;
    for (int dy = 0; dy < 2; ++dy)
      for (int dx = 0; dx < 2; ++dx) {
        std::uint8_t* p = s.img.at(x + dx, y + dy);
        p[0] = 90; p[1] = 85; p[2] = 80;
      }
  }
  return s;
}

double iou(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  std::size_t inter = 0, uni = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    inter += a[i] && b[i];
    uni += a[i] || b[i];
  }
  return uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0;
}

}  // namespace

TEST_CASE("tissue finds stained regions and their hole, not pen or dust", "[tissue]") {
  for (bool ihc : {false, true}) {
    for (auto method : {tissue::Method::otsu_saturation, tissue::Method::otsu_od}) {
      const Scene s = draw_scene(ihc, ihc ? 7 : 3);
      tissue::Options opt;
      opt.method = method;
      opt.um_per_px = 8;
      opt.min_region_um2 = 20000;  // 312 cells: dust is 4
      const auto f = tissue::find(s.img, opt);
      const double j = iou(f.mask, s.truth);
      const double truth_cells = static_cast<double>(std::count(s.truth.begin(), s.truth.end(), 1));
      const double err = std::abs(static_cast<double>(f.tissue_cells) - truth_cells) / truth_cells;
      std::cout << "synthetic " << (ihc ? "IHC" : "H&E") << " "
                << (method == tissue::Method::otsu_od ? "otsu_od" : "otsu_saturation") << ": IoU " << j
                << ", area error " << 100 * err << " %, regions " << f.regions.size() << ", threshold "
                << f.threshold << ", pen cells " << f.pen_cells << "\n";
      CHECK(j >= 0.97);
      CHECK(err <= 0.02);
      REQUIRE(f.regions.size() == 4);
      // one region has a hole
      CHECK(std::count_if(f.regions.begin(), f.regions.end(),
                          [](const auto& r) { return r.rings.size() == 2; }) == 1);
      CHECK(f.pen_cells > 0);
      for (const auto& r : f.regions) CHECK(r.rings.size() >= 1);
    }
  }
}

TEST_CASE("tissue stays inside a region of interest", "[tissue]") {
  const Scene s = draw_scene(false, 11);
  std::vector<std::uint8_t> roi(s.truth.size(), 0);
  const int w = s.img.width;
  for (int y = 0; y < s.img.height; ++y)
    for (int x = 0; x < w / 2; ++x) roi[static_cast<std::size_t>(y) * w + x] = 1;
  tissue::Options opt;
  const auto f = tissue::find(s.img, opt, &roi);
  std::vector<std::uint8_t> truth = s.truth;
  for (std::size_t i = 0; i < truth.size(); ++i) truth[i] &= roi[i];
  CHECK(iou(f.mask, truth) >= 0.97);
  CHECK(f.area_cells == static_cast<std::uint64_t>(w / 2) * s.img.height);
  for (std::size_t i = 0; i < roi.size(); ++i)
    if (!roi[i]) REQUIRE(f.mask[i] == 0);
}

TEST_CASE("an empty slide has no tissue", "[tissue]") {
  slide::Image img(300, 200);
  std::mt19937 rng(1);
  std::uniform_int_distribution<int> noise(-5, 5);
  for (auto& v : img.rgb) v = static_cast<std::uint8_t>(238 + noise(rng));
  for (auto method : {tissue::Method::otsu_saturation, tissue::Method::otsu_od}) {
    tissue::Options opt;
    opt.method = method;
    const auto f = tissue::find(img, opt);
    CHECK(f.regions.empty());
    CHECK(f.tissue_cells == 0);
  }
}

TEST_CASE("the point budget bounds the outline points", "[tissue]") {
  const Scene s = draw_scene(false, 5);
  tissue::Options opt;
  opt.simplify_tolerance_px = 0;
  opt.max_points = 60;
  const auto f = tissue::find(s.img, opt);
  std::size_t total = 0;
  for (const auto& r : f.regions)
    for (const auto& ring : r.rings) {
      CHECK(ring.size() >= 3);
      total += ring.size();
    }
  CHECK(total <= 60);
  CHECK(total > 0);
  CHECK(f.regions.size() == 4);
}
