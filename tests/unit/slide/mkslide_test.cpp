// mkslide's files opened by OpenSlide, their ground truth measured on the
// written pixels, and the fast path against OpenSlide on them.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/json/parse.hpp>
#include <boost/json/value.hpp>

#include "tests/support/process.hpp"
#include "worker/slide/slide.hpp"

namespace sl = iaserve::slide;
namespace json = boost::json;
using iaserve::test::bin;
using iaserve::test::run;
using iaserve::test::TempDir;

namespace {

std::filesystem::path make_slide(const TempDir& dir, const std::string& name, std::vector<std::string> args) {
  auto out = dir / name;
  std::vector<std::string> argv{bin("mkslide"), out.string(), "--width", "4000", "--height", "3000"};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run(argv);
  INFO(r.out << r.err);
  REQUIRE(r.code == 0);
  return out;
}

json::object read_truth(const std::filesystem::path& slide) {
  std::ifstream in(slide.string() + ".truth.json");
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str()).as_object();
}

double mean_abs_diff(const sl::Image& a, const sl::Image& b) {
  REQUIRE(a.width == b.width);
  REQUIRE(a.height == b.height);
  double sum = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) sum += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
  return sum / static_cast<double>(a.rgb.size());
}

// Tissue as the tissue analysis would see it on H&E: coloured, not grey.
double tissue_share(const sl::Image& img) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < img.pixel_count(); ++i) {
    const std::uint8_t* p = img.rgb.data() + 3 * i;
    int mx = std::max({p[0], p[1], p[2]}), mn = std::min({p[0], p[1], p[2]});
    if (mx - mn > 25) ++n;
  }
  return static_cast<double>(n) / static_cast<double>(img.pixel_count());
}

}  // namespace

TEST_CASE("mkslide svs: OpenSlide reads it as Aperio with mpp, levels and associated images", "[mkslide][svs]") {
  TempDir dir;
  auto path = make_slide(dir, "a.svs", {"--seed", "11", "--mpp", "0.25", "--label-text", "CASE 42"});
  auto slide = sl::Slide::open(path);
  CHECK(slide.vendor() == "aperio");
  CHECK(slide.width() == 4000);
  CHECK(slide.height() == 3000);
  REQUIRE(slide.mpp());
  CHECK(*slide.mpp() == Approx(0.25));
  REQUIRE(slide.property("openslide.mpp-x"));
  REQUIRE(slide.objective_power());
  CHECK(*slide.objective_power() == Approx(40));
  CHECK(slide.level_count() == 2);
  CHECK(slide.level_size(1) == sl::Size{1000, 750});
  CHECK(slide.level_downsample(1) == Approx(4));
  CHECK_THROWS_WITH(slide.level_size(2), "level 2 out of range [0,2)");
  for (const char* name : {"label", "macro", "thumbnail"}) {
    INFO(name);
    REQUIRE(slide.has_associated_image(name));
    auto img = slide.associated_image(name);
    CHECK(img.width > 100);
  }
  auto label = slide.associated_image("label");
  std::size_t dark = 0;
  for (std::size_t i = 0; i < label.pixel_count(); ++i) dark += label.rgb[3 * i] < 100;
  CHECK(dark > 1000);  // the label text and barcode are there
  REQUIRE(slide.fast_level(0));
  CHECK(slide.fast_level(0)->tile_width == 256);
}

TEST_CASE("mkslide tiff: generic TIFF with mpp from the resolution tags", "[mkslide][tiff]") {
  TempDir dir;
  auto path = make_slide(dir, "b.tif", {"--format", "tiff", "--seed", "5", "--mpp", "0.5", "--tile-size", "512"});
  auto slide = sl::Slide::open(path);
  CHECK(slide.vendor() == "generic-tiff");
  // OpenSlide 3.4.1 gives no openslide.mpp-x here: the value comes from the tags.
  CHECK_FALSE(slide.property("openslide.mpp-x"));
  CHECK(slide.property("tiff.ResolutionUnit") == std::optional<std::string>("centimeter"));
  REQUIRE(slide.mpp());
  CHECK(*slide.mpp() == Approx(0.5).epsilon(1e-4));
  CHECK(slide.level_count() >= 3);
  CHECK(slide.level_downsample(1) == Approx(2));
  REQUIRE(slide.fast_level(1));
  CHECK(slide.fast_level(1)->tile_width == 512);
}

TEST_CASE("mkslide ground truth matches the written pixels", "[mkslide][truth]") {
  TempDir dir;
  for (std::string seed : {"1", "2", "3"}) {
    auto path = make_slide(dir, "t" + seed + ".svs", {"--seed", seed});
    auto truth = read_truth(path);
    const double fraction = truth["tissue_fraction"].as_double();
    CHECK(truth["tissue_fraction_grid"].as_double() == Approx(fraction).margin(0.005));
    CHECK(truth["tissue_area_mm2"].as_double() ==
          Approx(truth["tissue_area_px"].as_double() * 0.25 * 0.25 / 1e6));
    CHECK(!truth["regions"].as_array().empty());
    auto slide = sl::Slide::open(path);
    auto low = slide.read(0, 0, slide.width(), slide.height(), 8.0, sl::Reader::openslide);
    const double measured = tissue_share(low);
    INFO("seed " << seed << ": truth " << fraction << ", measured on the file " << measured);
    CHECK(fraction > 0.05);
    CHECK(std::abs(measured - fraction) <= 0.02);
    CHECK(std::abs(measured - fraction) / fraction <= 0.05);
  }
}

TEST_CASE("mkslide is deterministic by seed", "[mkslide]") {
  TempDir dir;
  auto a = make_slide(dir, "a.tif", {"--format", "tiff", "--seed", "9", "--pen", "--dust"});
  auto b = make_slide(dir, "b.tif", {"--format", "tiff", "--seed", "9", "--pen", "--dust"});
  auto c = make_slide(dir, "c.tif", {"--format", "tiff", "--seed", "10"});
  auto ta = read_truth(a), tb = read_truth(b), tc = read_truth(c);
  CHECK(ta["tissue_area_px"] == tb["tissue_area_px"]);
  CHECK(ta["tissue_area_px"] != tc["tissue_area_px"]);
  CHECK(ta["pen"].as_bool());
  CHECK(ta["dust_specks"].as_int64() > 0);
  auto sa = sl::Slide::open(a), sb = sl::Slide::open(b);
  CHECK(sa.read(0, 0, 4000, 3000, 16).rgb == sb.read(0, 0, 4000, 3000, 16).rgb);
}

TEST_CASE("fast path agrees with OpenSlide on mkslide slides", "[mkslide][fast]") {
  TempDir dir;
  // Bounds: JPEG decoders differ in upsampling and rounding only, so at
  // level resolution the mean absolute difference per channel stays <= 3.
  for (std::vector<std::string> args : {std::vector<std::string>{"--seed", "21"},
                                        std::vector<std::string>{"--seed", "22", "--rgb-jpeg"},
                                        std::vector<std::string>{"--seed", "23", "--format", "tiff"}}) {
    auto path = make_slide(dir, "f" + args[1] + (args.size() > 2 && args[2] == "--format" ? ".tif" : ".svs"), args);
    auto slide = sl::Slide::open(path);
    INFO(path.filename().string());
    REQUIRE(slide.fast_level(0));
    CHECK(slide.fast_level(0)->rgb_jpeg == (args.size() > 2 && args[2] == "--rgb-jpeg"));
    for (int level = 0; level < slide.level_count(); ++level) {
      const double ds = slide.level_downsample(level);
      auto fast = slide.read(123, 77, 2600, 1900, ds, sl::Reader::fast);
      auto os = slide.read(123, 77, 2600, 1900, ds, sl::Reader::openslide);
      const double d = mean_abs_diff(fast, os);
      INFO("level " << level << " mean abs diff " << d);
      CHECK(d <= 3.0);
    }
    // Between levels: DCT scaling (1/2, 1/4) of the level OpenSlide picks,
    // against OpenSlide's level area-averaged to the same size.
    for (double ds : {2.0, 3.0, 8.0, 13.0}) {
      auto f = slide.read(0, 0, 4000, 3000, ds, sl::Reader::fast);
      auto o = slide.read(0, 0, 4000, 3000, ds, sl::Reader::openslide);
      const double d = mean_abs_diff(f, o);
      INFO("downsample " << ds << " mean abs diff " << d);
      CHECK(d <= 3.0);
    }
    auto st = slide.stats();
    CHECK(st.tiles_decoded > 0);
    CHECK(st.tiles_fallback == 0);
  }
}

TEST_CASE("mkslide command line: help, version, bad values, BigTIFF", "[mkslide][cli]") {
  auto help = run({bin("mkslide"), "--help"});
  CHECK(help.code == 0);
  for (const char* opt : {"--width", "--height", "--format", "--tile-size", "--mpp", "--seed", "--quality", "--pen",
                          "--dust", "--label-text", "truth.json"})
    CHECK_THAT(help.out, Catch::Contains(opt));
  CHECK(run({bin("mkslide"), "--version"}).code == 0);
  TempDir dir;
  CHECK(run({bin("mkslide"), (dir / "x.svs").string(), "--format", "png"}).code == 2);
  CHECK(run({bin("mkslide"), (dir / "x.svs").string(), "--width", "200000"}).code == 2);
  auto bad_tile = run({bin("mkslide"), (dir / "x.svs").string(), "--tile-size", "100"});
  CHECK(bad_tile.code == 1);
  CHECK_THAT(bad_tile.err, Catch::Contains("--tile-size: 100"));
  auto path = make_slide(dir, "big.svs", {"--bigtiff", "yes", "--seed", "4"});
  auto slide = sl::Slide::open(path);
  CHECK(slide.vendor() == "aperio");
  CHECK(read_truth(path)["bigtiff"].as_bool());
  CHECK(slide.fast_level(0));
  CHECK(mean_abs_diff(slide.read(0, 0, 4000, 3000, 8, sl::Reader::fast),
                      slide.read(0, 0, 4000, 3000, 8, sl::Reader::openslide)) <= 3.0);
}
