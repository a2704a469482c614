#pragma once
// The image processing behind the `tissue` analysis, on an RGB view of the
// slide already read at low resolution (about 8-16 um/px). Kept apart from
// the descriptor so it can be tested on pictures drawn in memory.
#include <cstdint>
#include <functional>
#include <vector>

#include "worker/analysis/analysis.hpp"
#include "worker/slide/image.hpp"

namespace iaserve::analysis::tissue {

enum class Method { otsu_saturation, otsu_od };

struct Options {
  Method method = Method::otsu_saturation;
  double um_per_px = 8.0;          // of the view
  double min_region_um2 = 20000;   // smaller regions are dropped, smaller holes filled
  double simplify_tolerance_px = 1.0;  // Douglas-Peucker, in view px
  int max_points = 4000;               // over all rings of the result
  std::function<void()> check;         // called between steps (cancel, time limit)
};

struct Region {
  std::vector<PolygonPx> rings;  // view px; the outer boundary first, then holes
  std::uint64_t cells = 0;       // tissue cells of the region (holes excluded)
  PointPx label_at;              // a point inside the region, view px
};

struct Findings {
  std::vector<Region> regions;  // largest first
  std::uint64_t tissue_cells = 0;
  std::uint64_t area_cells = 0;  // cells analysed (the whole view or the drawn regions)
  std::uint64_t pen_cells = 0;
  std::uint64_t dropped_regions = 0;  // too small
  std::uint64_t hidden_regions = 0;   // found but left out of the polygons (point budget)
  int threshold = 0;                  // on the 0..255 feature scale
  std::uint8_t background[3] = {255, 255, 255};
  std::vector<std::uint8_t> mask;  // final tissue mask, view size, 0/1
};

// `roi`: optional view-size 0/1 mask of the cells to analyse.
Findings find(const slide::Image& view, const Options& opt,
              const std::vector<std::uint8_t>* roi = nullptr);

}  // namespace iaserve::analysis::tissue
