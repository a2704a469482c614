#include "tests/unit/analysis/slides.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

namespace iaserve::test {

std::vector<analysis::PolygonPx> TruthSlide::rings() const {
  std::vector<analysis::PolygonPx> out;
  for (const auto& r : truth.at("regions").as_array())
    for (const auto& ring : r.at("polygon").as_array()) {
      analysis::PolygonPx poly;
      for (const auto& p : ring.as_array())
        poly.push_back({p.as_array()[0].to_number<double>(), p.as_array()[1].to_number<double>()});
      out.push_back(std::move(poly));
    }
  return out;
}

TruthSlide make_slide(const TempDir& dir, const std::string& name, const std::vector<std::string>& options) {
  TruthSlide s;
  s.path = (dir / name).string();
  std::vector<std::string> argv{bin("mkslide"), s.path};
  argv.insert(argv.end(), options.begin(), options.end());
  const auto r = run(argv, std::chrono::seconds(300));
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  std::ifstream in(s.path + ".truth.json");
  std::stringstream text;
  text << in.rdbuf();
  s.truth = boost::json::parse(text.str()).as_object();
  return s;
}

double property_number(const analysis::Outcome& o, const std::string& name) {
  for (const auto& [k, v] : o.display_properties)
    if (k == name) {
      if (auto* d = std::get_if<double>(&v)) return *d;
      if (auto* i = std::get_if<std::int64_t>(&v)) return static_cast<double>(*i);
    }
  FAIL("no numeric display property " << name);
  return 0;
}

double analysis_downsample(const analysis::Outcome& o, double mpp) {
  return std::round(property_number(o, "Resolution used (\u00b5m/px)") / mpp);
}

double iou(const std::vector<std::uint8_t>& a, const std::vector<std::uint8_t>& b) {
  std::size_t inter = 0, uni = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    inter += a[i] && b[i];
    uni += a[i] || b[i];
  }
  return uni ? static_cast<double>(inter) / static_cast<double>(uni) : 1.0;
}

std::vector<analysis::PolygonPx> outcome_rings(const analysis::Outcome& o) {
  std::vector<analysis::PolygonPx> out;
  for (const auto& s : o.overlay)
    for (const auto& r : s.rings) out.push_back(r);
  return out;
}

}  // namespace iaserve::test
