#pragma once
// The procedural slide: tissue regions as polygons (outer ring plus an
// optional hole), H&E-like colours and nuclei, optional pen mark and dust.
// Every pixel at every resolution comes from render(), and the ground truth
// from the same polygons, so the two agree by construction.
#include <cstdint>
#include <string>
#include <vector>

#include <boost/json/object.hpp>

namespace mkslide {

struct Point {
  double x = 0, y = 0;
};
using Ring = std::vector<Point>;

struct SceneOptions {
  std::int64_t width = 4000, height = 3000;
  double mpp = 0.25;
  std::uint64_t seed = 1;
  bool pen = false;
  bool dust = false;
};

struct Region {
  std::vector<Ring> rings;  // rings[0] outer, the rest holes (level-0 px)
  double cx = 0, cy = 0, bound = 0;  // a circle holding the region
  double nuclei_density = 0.5;       // share of cells with a nucleus
  double area = 0;                   // exact polygon area, px²
};

struct Edge {
  double x0, y0, x1, y1;  // y0 < y1
  int region;
  double ymin() const { return y0; }
};

class Scene {
 public:
  explicit Scene(const SceneOptions& options);

  const SceneOptions& options() const { return opt_; }
  const std::vector<Region>& regions() const { return regions_; }
  double tissue_area_px() const;

  // Fills rgb (w x h, row stride `stride` bytes) with the pixels whose
  // level-0 extent is [ (x0+i)*dsx, (x0+i+1)*dsx ) x [ (y0+j)*dsy, ... ):
  // the view of the slide at downsample (dsx, dsy).
  void render(double dsx, double dsy, std::int64_t x0, std::int64_t y0, int w, int h, std::uint8_t* rgb,
              std::size_t stride) const;

  // Ground truth JSON (without file-specific fields).
  boost::json::object truth() const;
  // Tissue share counted on a grid x grid sample with the renderer's inside test.
  double grid_fraction(int grid) const;

 private:
  struct Crossing {
    double x;
    int region;
  };
  void crossings(double y, const std::vector<const Edge*>& edges, std::vector<Crossing>& xs) const;

  SceneOptions opt_;
  std::vector<Region> regions_;
  std::vector<Edge> edges_;  // all rings, for the scanline inside test
  struct PenSegment {
    Point a, b;
  };
  std::vector<PenSegment> pen_;
  double pen_half_width_ = 0;
  struct Speck {
    double x, y, r;
  };
  std::vector<Speck> dust_;
};

}  // namespace mkslide
