// The real Aperio slide: metadata, errors, and the fast path against OpenSlide.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include "tests/support/process.hpp"
#include "worker/slide/slide.hpp"

namespace sl = iaserve::slide;
using iaserve::test::shared_data;
using iaserve::test::TempDir;

namespace {

double mean_abs_diff(const sl::Image& a, const sl::Image& b) {
  REQUIRE(a.width == b.width);
  REQUIRE(a.height == b.height);
  double sum = 0;
  for (std::size_t i = 0; i < a.rgb.size(); ++i) sum += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
  return sum / static_cast<double>(a.rgb.size());
}

}  // namespace

TEST_CASE("real slide: levels, mpp, vendor, associated images", "[slide][real]") {
  SKIP_WITHOUT_SHARED_DATA();
  auto slide = sl::Slide::open(*shared_data() / "CMU-1-Small-Region.svs");
  CHECK(slide.vendor() == "aperio");
  CHECK(slide.width() == 2220);
  CHECK(slide.height() == 2967);
  REQUIRE(slide.mpp());
  CHECK(*slide.mpp() == Approx(0.499).margin(0.001));
  CHECK(slide.level_count() >= 1);
  CHECK_THROWS_WITH(slide.level_size(7), "level 7 out of range [0," + std::to_string(slide.level_count()) + ")");
  CHECK_THROWS_WITH(slide.level_downsample(-1), "level -1 out of range [0," + std::to_string(slide.level_count()) + ")");
  CHECK(slide.fast_level(0).has_value());
  for (const auto& name : slide.associated_image_names()) {
    auto img = slide.associated_image(name);
    CHECK(img.width > 0);
  }
  CHECK_THROWS_AS(slide.associated_image("nonesuch"), sl::SlideError);
}

TEST_CASE("real slide: fast path agrees with OpenSlide", "[slide][real][fast]") {
  SKIP_WITHOUT_SHARED_DATA();
  auto slide = sl::Slide::open(*shared_data() / "CMU-1-Small-Region.svs");
  // Full resolution, an unaligned window crossing tile borders.
  auto fast = slide.read(300, 500, 1000, 700, 1.0, sl::Reader::fast);
  auto os = slide.read(300, 500, 1000, 700, 1.0, sl::Reader::openslide);
  double d1 = mean_abs_diff(fast, os);
  INFO("mean abs diff at full resolution: " << d1);
  CHECK(d1 <= 3.0);
  // DCT-scaled (1/4) against OpenSlide's level 0 averaged by the same resampler.
  auto fast4 = slide.read(0, 0, 2220, 2967, 4.0, sl::Reader::fast);
  auto os4 = slide.read(0, 0, 2220, 2967, 4.0, sl::Reader::openslide);
  double d4 = mean_abs_diff(fast4, os4);
  INFO("mean abs diff at downsample 4 (DCT 1/4 vs box average): " << d4);
  CHECK(d4 <= 4.0);
  auto st = slide.stats();
  CHECK(st.reads_fast == 2);
  CHECK(st.reads_openslide == 2);
  CHECK(st.tiles_decoded > 0);
  CHECK(st.tiles_fallback == 0);
}
