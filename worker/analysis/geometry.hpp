#pragma once
// Raster and polygon helpers shared by the analyses and their tests: fill
// polygons into a mask, trace the boundaries of labelled regions, simplify.
#include <cstdint>
#include <vector>

#include "worker/analysis/analysis.hpp"

namespace iaserve::analysis::geometry {

// Fills rings (even-odd over all of them, so holes listed beside their
// outer ring cut out) into a w x h mask (0/1). Ring coordinates are divided
// by `scale` first: a mask cell (i, j) is set when its centre
// ((i + 0.5), (j + 0.5)) lies inside. Cells outside [0,w) x [0,h) are clipped.
std::vector<std::uint8_t> rasterize(const std::vector<PolygonPx>& rings, int w, int h,
                                    double scale = 1.0);

// One closed boundary of a labelled region, in mask coordinates where cell
// (i, j) spans [i, i+1) x [j, j+1); the points lie on cell edges.
struct Contour {
  PolygonPx points;
  std::uint32_t label = 0;
  bool hole = false;
};

// Marching squares over a label image (0 = background; 8-connected regions
// must carry one label each): every outer boundary and every hole of every
// region, in one linear pass.
std::vector<Contour> trace_contours(const std::vector<std::uint32_t>& labels, int w, int h);

// Signed shoelace area (positive for the orientation trace_contours gives
// outer boundaries).
double signed_area(const PolygonPx& ring);
inline double area(const PolygonPx& ring) {
  double a = signed_area(ring);
  return a < 0 ? -a : a;
}

// Douglas-Peucker on a closed ring; keeps at least 3 points when the ring
// has them.
PolygonPx simplify_ring(const PolygonPx& ring, double tolerance);

// 8-connected components of a 0/1 mask; labels 1..count, 0 background.
// Returns the count; `sizes[label]` gets each component's cell count.
std::uint32_t label_components(const std::vector<std::uint8_t>& mask, int w, int h,
                               std::vector<std::uint32_t>& labels,
                               std::vector<std::uint64_t>& sizes);

// Binary morphology with a (2r+1) square, separable, linear in the size.
void erode(std::vector<std::uint8_t>& mask, int w, int h, int r);
void dilate(std::vector<std::uint8_t>& mask, int w, int h, int r);

// Fills background regions (4-connected) not touching the border and
// smaller than max_cells.
void fill_holes(std::vector<std::uint8_t>& mask, int w, int h, std::uint64_t max_cells);

}  // namespace iaserve::analysis::geometry
