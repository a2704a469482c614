// The tissue analysis against mkslide's ground truth, and on the real CMU
// slide. The figures are printed so they show in ctest -V logs.
#include <catch2/catch.hpp>

#include <cmath>
#include <iomanip>
#include <iostream>

#include "tests/unit/analysis/slides.hpp"
#include "worker/analysis/geometry.hpp"
#include "worker/analysis/overlay.hpp"
#include "worker/slide/image_io.hpp"
#include "worker/slide/slide.hpp"

using namespace iaserve;
using namespace iaserve::test;
using iaserve::analysis::geometry::rasterize;

namespace {

struct Figures {
  double iou = 0, area_error = 0, ds = 0;
  std::size_t regions = 0;
};

Figures compare(const TruthSlide& ts, const analysis::Outcome& o, const std::string& what) {
  const double W = ts.truth.at("width").to_number<double>(), H = ts.truth.at("height").to_number<double>();
  const double mpp = ts.truth.at("mpp").to_number<double>();
  Figures f;
  f.ds = analysis_downsample(o, mpp);
  const int gw = static_cast<int>(std::ceil(W / f.ds)), gh = static_cast<int>(std::ceil(H / f.ds));
  f.iou = iou(rasterize(ts.rings(), gw, gh, f.ds), rasterize(outcome_rings(o), gw, gh, f.ds));
  const double truth_mm2 = ts.truth.at("tissue_area_mm2").to_number<double>();
  const double found_mm2 = property_number(o, "Tissue area (mm\u00b2)");
  f.area_error = std::abs(found_mm2 - truth_mm2) / truth_mm2;
  f.regions = o.overlay.size();
  std::cout << std::fixed << std::setprecision(4) << "tissue accuracy " << what << ": IoU " << f.iou
            << ", area " << found_mm2 << " mm2 vs truth " << truth_mm2 << " mm2 (error "
            << std::setprecision(2) << 100 * f.area_error << " %), regions " << f.regions << " vs "
            << ts.truth.at("regions").as_array().size() << ", at " << f.ds * mpp << " um/px\n";
  return f;
}

analysis::Outcome run_tissue(const std::string& path, const boost::json::object& params = {},
                             const analysis::Input& input = {}) {
  auto s = slide::Slide::open(path);
  auto r = analysis::run_analysis("tissue", s, input, params);
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  return *r.outcome;
}

}  // namespace

TEST_CASE("tissue matches mkslide ground truth (sizes, seeds, formats, pen and dust)", "[tissue][accuracy]") {
  TempDir dir("iaserve-analysis");
  struct Case {
    std::string name;
    std::vector<std::string> options;
  };
  const std::vector<Case> cases{
      {"a.svs", {"--width", "4000", "--height", "3000", "--seed", "1"}},
      {"b.tiff", {"--width", "6000", "--height", "4000", "--seed", "2", "--format", "tiff", "--mpp", "0.5"}},
      {"c.svs", {"--width", "8000", "--height", "6000", "--seed", "3", "--mpp", "0.5", "--pen", "--dust"}},
      {"d.svs", {"--width", "7000", "--height", "7000", "--seed", "9", "--mpp", "1.0", "--pen", "--dust", "--rgb-jpeg"}},
  };
  for (const auto& c : cases) {
    const TruthSlide ts = make_slide(dir, c.name, c.options);
    for (const char* method : {"otsu_saturation", "otsu_od"}) {
      const auto o = run_tissue(ts.path, {{"method", method}});
      const Figures f = compare(ts, o, c.name + " " + method);
      CHECK(f.iou >= 0.90);
      CHECK(f.area_error <= 0.05);
      CHECK(f.regions == ts.truth.at("regions").as_array().size());
    }
  }
}

TEST_CASE("tissue at the default 8 um/px on a larger slide", "[tissue][accuracy]") {
  TempDir dir("iaserve-analysis");
  const TruthSlide ts = make_slide(dir, "big.svs", {"--width", "20000", "--height", "15000", "--seed", "4", "--pen"});
  const auto o = run_tissue(ts.path);
  const Figures f = compare(ts, o, "big.svs otsu_saturation");
  CHECK(f.ds * 0.25 == Approx(8.0));
  CHECK(f.iou >= 0.90);
  CHECK(f.area_error <= 0.05);
}

TEST_CASE("tissue restricted to drawn regions reports the tissue inside them", "[tissue][regions]") {
  TempDir dir("iaserve-analysis");
  const TruthSlide ts = make_slide(dir, "r.svs", {"--width", "6000", "--height", "4000", "--seed", "5", "--mpp", "0.5"});
  const double W = 6000, H = 4000;
  // Two drawn areas, in image-width units as DPAT sends them.
  boost::json::value content = boost::json::parse(R"({"polygons": [
      {"points": [{"x": 0.05, "y": 0.05}, {"x": 0.45, "y": 0.05}, {"x": 0.45, "y": 0.6}, {"x": 0.05, "y": 0.6}]},
      {"points": [{"x": 0.6, "y": 0.1}, {"x": 0.95, "y": 0.3}, {"x": 0.7, "y": 0.62}]}]})");
  const auto input = analysis::input_from_json("multiArea", content, W);
  REQUIRE(input.regions.size() == 2);
  CHECK(input.regions[0][1].x == Approx(0.45 * W));
  CHECK(input.regions[0][2].y == Approx(0.6 * W));
  const auto o = run_tissue(ts.path, {}, input);
  const double ds = analysis_downsample(o, 0.5);
  const int gw = static_cast<int>(std::ceil(W / ds)), gh = static_cast<int>(std::ceil(H / ds));
  auto truth = rasterize(ts.rings(), gw, gh, ds);
  std::vector<std::uint8_t> roi(truth.size(), 0);
  for (const auto& r : input.regions) {
    auto m = rasterize({r}, gw, gh, ds);
    for (std::size_t i = 0; i < m.size(); ++i) roi[i] |= m[i];
  }
  std::size_t truth_cells = 0;
  for (std::size_t i = 0; i < truth.size(); ++i) truth_cells += (truth[i] &= roi[i]);
  auto found = rasterize(outcome_rings(o), gw, gh, ds);
  // Outlines stay in the drawn areas, up to the simplification's cell.
  std::size_t found_cells = 0, outside = 0;
  for (std::size_t i = 0; i < found.size(); ++i) {
    found_cells += found[i];
    outside += found[i] && !roi[i];
  }
  CHECK(outside * 100 <= found_cells);
  const double truth_mm2 = static_cast<double>(truth_cells) * ds * ds * 0.25 / 1e6;
  const double found_mm2 = property_number(o, "Tissue area (mm\u00b2)");
  const double j = iou(truth, found);
  std::cout << "tissue in drawn regions: cells outside " << outside << " of " << found_cells << ", IoU " << j << ", area " << found_mm2 << " mm2 vs truth " << truth_mm2
            << " mm2\n";
  REQUIRE(truth_mm2 > 0.05);  // the drawn areas do hold tissue
  CHECK(j >= 0.90);
  CHECK(std::abs(found_mm2 - truth_mm2) / truth_mm2 <= 0.05);
  CHECK_THAT(o.display_result, Catch::Matches("Tissue .* mm² in \\d+ regions? \\(.* % of the drawn area\\)"));
  const double coverage = property_number(o, "Drawn area coverage (%)");
  CHECK(coverage > 0);
  CHECK(coverage < 100);
}

TEST_CASE("tissue on the real CMU slide: overlay written and figures sane", "[tissue][real]") {
  SKIP_WITHOUT_SHARED_DATA();
  const auto path = (*shared_data() / "CMU-1-Small-Region.svs").string();
  auto s = slide::Slide::open(path);
  auto r = analysis::run_analysis("tissue", s, {}, {});
  INFO(r.error);
  REQUIRE(r.status == analysis::RunStatus::ok);
  const auto& o = *r.outcome;
  const std::string png = std::filesystem::absolute("cmu_tissue_overlay.png").string();
  slide::write_png(png, analysis::render_overlay(s, o));
  const double area = property_number(o, "Tissue area (mm\u00b2)");
  const double coverage = property_number(o, "Slide coverage (%)");
  const double regions = property_number(o, "Regions");
  std::cout << "CMU-1-Small-Region: " << o.display_result << ", coverage " << coverage << " %, overlay " << png
            << "\n";
  // Looked at: one tissue piece (a skin section with a thin strand to the
  // left), a little over a third of the picture.
  CHECK(regions >= 1);
  CHECK(regions <= 3);
  CHECK(coverage > 30);
  CHECK(coverage < 50);
  CHECK(area > 0.5);
  CHECK(area < 0.8);
  // The primitive content: outlines inside the slide in image-width units.
  REQUIRE(o.content.is_array());
  const double hw = static_cast<double>(s.height()) / static_cast<double>(s.width());
  std::size_t points = 0;
  for (const auto& item : o.content.as_array())
    for (const auto& poly : item.at("polygons").as_array())
      for (const auto& p : poly.at("points").as_array()) {
        const double x = p.at("x").to_number<double>(), y = p.at("y").to_number<double>();
        REQUIRE(x >= 0);
        REQUIRE(x <= 1);
        REQUIRE(y >= 0);
        REQUIRE(y <= hw);
        ++points;
      }
  CHECK(points >= 20);
  CHECK(points <= 4000);
  CHECK(o.content.as_array()[0].at("labels").as_array().size() == static_cast<std::size_t>(regions));
}
