// JPEG/PNG round trips, resize and crop, drawing, colours.
#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>

#include "tests/support/process.hpp"
#include "worker/slide/draw.hpp"
#include "worker/slide/image_io.hpp"

namespace sl = iaserve::slide;

namespace {

sl::Image gradient(int w, int h) {
  sl::Image img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      auto* p = img.at(x, y);
      p[0] = static_cast<std::uint8_t>(x * 255 / w);
      p[1] = static_cast<std::uint8_t>(y * 255 / h);
      p[2] = static_cast<std::uint8_t>((x + y) % 256);
    }
  return img;
}

std::size_t count_colour(const sl::Image& img, std::uint8_t r, std::uint8_t g, std::uint8_t b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < img.pixel_count(); ++i)
    n += img.rgb[3 * i] == r && img.rgb[3 * i + 1] == g && img.rgb[3 * i + 2] == b;
  return n;
}

}  // namespace

TEST_CASE("PNG round trip is exact, JPEG close", "[image]") {
  auto img = gradient(123, 77);
  auto png = sl::encode_png(img);
  CHECK(sl::decode_png(png).rgb == img.rgb);
  auto jpg = sl::encode_jpeg(img, 95);
  REQUIRE(jpg.size() > 100);
  CHECK(jpg[0] == 0xFF);
  CHECK(jpg[1] == 0xD8);
  auto back = sl::decode_jpeg(jpg);
  REQUIRE(back.width == 123);
  REQUIRE(back.height == 77);
  double sum = 0;
  for (std::size_t i = 0; i < img.rgb.size(); ++i) sum += std::abs(int(img.rgb[i]) - int(back.rgb[i]));
  CHECK(sum / static_cast<double>(img.rgb.size()) < 3.0);
  CHECK_THROWS_AS(sl::encode_jpeg(img, 0), std::invalid_argument);
  // A size limit refuses a larger image from its header.
  CHECK(sl::decode_jpeg(jpg, 123, 77).width == 123);
  CHECK_THROWS_WITH(sl::decode_jpeg(jpg, 122, 77), "decode_jpeg: image 123x77 larger than 122x77");
  CHECK_THROWS_WITH(sl::decode_jpeg(jpg, 200, 76), "decode_jpeg: image 123x77 larger than 200x76");
  std::vector<std::uint8_t> junk{1, 2, 3, 4};
  CHECK_THROWS_AS(sl::decode_jpeg(junk), std::runtime_error);
  CHECK_THROWS_AS(sl::decode_png(junk), std::runtime_error);
  iaserve::test::TempDir dir;
  sl::write_png(dir / "a.png", img);
  CHECK(sl::read_image(dir / "a.png").rgb == img.rgb);
  sl::write_jpeg(dir / "a.jpg", img, 90);
  CHECK(sl::read_image(dir / "a.jpg").width == 123);
}

TEST_CASE("resize and crop", "[image]") {
  sl::Image img(4, 2, 0);
  img.at(0, 0)[0] = 200;
  img.at(1, 0)[0] = 100;
  auto half = sl::resize(img, 2, 1, sl::Filter::box);
  CHECK(int(half.at(0, 0)[0]) == 75);  // (200 + 100 + 0 + 0) / 4
  auto big = sl::resize(gradient(50, 40), 100, 80, sl::Filter::bilinear);
  CHECK(big.width == 100);
  auto c = sl::crop(gradient(50, 40), 45, 35, 10, 10);
  CHECK(c.width == 5);
  CHECK(c.height == 5);
  CHECK_THROWS_AS(sl::crop(img, 10, 10, 5, 5), std::out_of_range);
}

TEST_CASE("colours as IA-API styles spell them", "[draw]") {
  CHECK(sl::parse_color("#FF8000") == sl::Rgba{255, 128, 0, 255});
  CHECK(sl::parse_color("#f80") == sl::Rgba{255, 136, 0, 255});
  CHECK(sl::parse_color("#00ff0080") == sl::Rgba{0, 255, 0, 128});
  CHECK(sl::parse_color("rgba(0, 255, 0, 0.5)") == sl::Rgba{0, 255, 0, 128});
  CHECK(sl::parse_color("rgb(1,2,3)") == sl::Rgba{1, 2, 3, 255});
  CHECK(sl::parse_color("Red") == sl::Rgba{255, 0, 0, 255});
  CHECK_THROWS_WITH(sl::parse_color("#12"), "colour \"#12\" not understood");
  CHECK_THROWS_WITH(sl::parse_color("rgb(300,0,0)"), "colour \"rgb(300,0,0)\": component \"300\" not in 0..255");
  CHECK_THROWS_AS(sl::parse_color("rgba(0,0,0,2)"), std::invalid_argument);
}

TEST_CASE("a filled polygon covers its area, holes stay empty", "[draw]") {
  sl::Image img(600, 500);
  sl::Ring circle;
  const double r = 180, cx = 300.3, cy = 250.7;
  for (int i = 0; i < 360; ++i)
    circle.push_back({cx + r * std::cos(i * std::numbers::pi / 180), cy + r * std::sin(i * std::numbers::pi / 180)});
  sl::Ring hole{{250, 200}, {350, 200}, {350, 300}, {250, 300}};
  const double ring_area = 0.5 * 360 * r * r * std::sin(2 * std::numbers::pi / 360);
  std::size_t filled = sl::fill_polygon(img, {circle, hole}, {0, 0, 255, 255});
  const std::size_t blue = count_colour(img, 0, 0, 255);
  CHECK(blue == filled);
  CHECK(std::abs(double(blue) - (ring_area - 100 * 100)) / (ring_area - 100 * 100) < 0.01);
  CHECK(img.at(300, 250)[0] == 255);  // inside the hole: untouched
  // Translucent fill blends once; the outline is opaque.
  sl::Image img2(200, 200);
  sl::draw_polygon(img2, {{{20, 20}, {180, 20}, {180, 180}, {20, 180}}},
                   {sl::parse_color("#000000"), 3.0, sl::parse_color("rgba(255,0,0,0.5)")});
  CHECK(img2.at(100, 100)[0] == 255);
  CHECK(int(img2.at(100, 100)[1]) == 127);
  CHECK(img2.at(20, 100)[0] == 0);
  // A polyline with overlapping segments blends each pixel once.
  sl::Image img3(100, 100);
  sl::stroke_polyline(img3, {{10, 50}, {90, 50}, {10, 50}}, {0, 0, 0, 128}, 5);
  CHECK(int(img3.at(50, 50)[0]) == 127);
}

TEST_CASE("text labels draw glyphs", "[draw]") {
  sl::Image img(200, 40);
  CHECK(sl::text_width("Tissue 12.3 mm²", 2) == (15 * 6 - 1) * 2);
  sl::draw_text(img, 2, 2, "Tissue 12.3 mm²", {0, 0, 0, 255}, 2, sl::Rgba{255, 255, 0, 255});
  std::size_t black = count_colour(img, 0, 0, 0), yellow = count_colour(img, 255, 255, 0);
  CHECK(black > 200);
  CHECK(yellow > 1000);
  sl::Image a(60, 20), b(60, 20);
  sl::draw_text(a, 0, 0, "A", {0, 0, 0, 255});
  sl::draw_text(b, 0, 0, "B", {0, 0, 0, 255});
  CHECK(a.rgb != b.rgb);
}
