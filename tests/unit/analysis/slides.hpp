#pragma once
// Synthetic slides with ground truth (mkslide), and comparing an outcome
// with that truth at the analysis resolution.
#include <boost/json.hpp>

#include <string>
#include <vector>

#include "tests/support/process.hpp"
#include "worker/analysis/analysis.hpp"

namespace iaserve::test {

struct TruthSlide {
  std::string path;
  boost::json::object truth;
  std::vector<analysis::PolygonPx> rings() const;  // all regions' rings, level-0 px
};

// Writes OUT with mkslide and the given options; REQUIREs success.
TruthSlide make_slide(const TempDir& dir, const std::string& name, const std::vector<std::string>& options);

// The view grid the outcome was computed on: level-0 px per cell.
double analysis_downsample(const analysis::Outcome& o, double mpp);
double property_number(const analysis::Outcome& o, const std::string& name);

double iou(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b);
std::vector<analysis::PolygonPx> outcome_rings(const analysis::Outcome& o);

}  // namespace iaserve::test
