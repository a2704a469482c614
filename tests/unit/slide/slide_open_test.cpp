// Opening: the three kinds of failure, the handle cache, reads from many threads.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <thread>

#include "tests/support/process.hpp"
#include "worker/slide/slide.hpp"

namespace sl = iaserve::slide;
using iaserve::test::bin;
using iaserve::test::run;
using iaserve::test::TempDir;

namespace {

std::filesystem::path small_svs(const TempDir& dir, const std::string& name = "s.svs") {
  auto out = dir / name;
  auto r = run({bin("mkslide"), out.string(), "--width", "2000", "--height", "1500", "--seed", "3"});
  INFO(r.err);
  REQUIRE(r.code == 0);
  return out;
}

sl::SlideError::Kind open_error(const std::filesystem::path& p, std::string& message) {
  try {
    sl::Slide::open(p);
  } catch (const sl::SlideError& e) {
    message = e.what();
    return e.kind();
  }
  FAIL("opened " << p);
  return sl::SlideError::Kind::io;
}

}  // namespace

TEST_CASE("open: missing file, text file, truncated slide", "[slide][errors]") {
  TempDir dir;
  std::string msg;
  CHECK(open_error(dir / "nothing.svs", msg) == sl::SlideError::Kind::io);
  CHECK_THAT(msg, Catch::Matches(".*nothing\\.svs: no such file"));

  {
    std::ofstream(dir / "notes.txt") << "this is not a slide\n";
  }
  CHECK(open_error(dir / "notes.txt", msg) == sl::SlideError::Kind::not_a_slide);
  CHECK_THAT(msg, Catch::Matches(".*notes\\.txt: not a slide.*"));

  auto good = small_svs(dir);
  const auto size = std::filesystem::file_size(good);
  // Cut after the first directory's tiles: the TIFF header points past the end.
  std::filesystem::copy_file(good, dir / "cut.svs");
  std::filesystem::resize_file(dir / "cut.svs", size / 3);
  CHECK(open_error(dir / "cut.svs", msg) == sl::SlideError::Kind::broken);
  CHECK_THAT(msg, Catch::Matches(".*cut\\.svs: (damaged or truncated TIFF|tiled TIFF that OpenSlide cannot open).*"));

  CHECK(open_error(dir.path(), msg) == sl::SlideError::Kind::io);
}

TEST_CASE("a slide whose tiles are damaged: broken on read, the handle is failed", "[slide][errors]") {
  TempDir dir;
  auto good = small_svs(dir);
  std::filesystem::copy_file(good, dir / "zeroed.svs");
  {
    // Level 0 tiles follow the 8-byte header: zero a run of them (not the
    // first tile, which libtiff reads when opening).
    const auto size = std::filesystem::file_size(good);
    std::fstream f(dir / "zeroed.svs", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size / 10));
    std::string zeros(size / 10, '\0');
    f.write(zeros.data(), static_cast<std::streamsize>(zeros.size()));
  }
  auto slide = sl::Slide::open(dir / "zeroed.svs");
  CHECK_FALSE(slide.failed());
  for (auto reader : {sl::Reader::fast, sl::Reader::openslide}) {
    try {
      slide.read(0, 0, 2000, 1500, 1.0, reader);
      FAIL("read a damaged slide");
    } catch (const sl::SlideError& e) {
      CHECK(e.kind() == sl::SlideError::Kind::broken);
      CHECK_THAT(std::string(e.what()), Catch::Matches(".*zeroed\\.svs: .*"));
    }
    CHECK(slide.failed());
  }
  // The cache drops a failed handle and opens the file again.
  sl::SlideCache cache;
  auto h = cache.get(dir / "zeroed.svs");
  CHECK_THROWS_AS(h->read(0, 0, 2000, 1500, 1.0, sl::Reader::openslide), sl::SlideError);
  CHECK(cache.get(dir / "zeroed.svs").get() != h.get());
}

TEST_CASE("read: argument checks and white outside the slide", "[slide][read]") {
  TempDir dir;
  auto slide = sl::Slide::open(small_svs(dir));
  CHECK_THROWS_AS(slide.read(0, 0, 0, 10), std::invalid_argument);
  CHECK_THROWS_AS(slide.read(0, 0, 10, 10, 0.0), std::invalid_argument);
  CHECK_THROWS_AS(slide.read(0, 0, 1000000, 1000000, 1.0), std::invalid_argument);
  auto img = slide.read(-100, -100, 50, 40, 1.0);
  CHECK(img.width == 50);
  CHECK(img.height == 40);
  for (auto v : img.rgb) REQUIRE(v == 255);
  auto odd = slide.read(10, 10, 101, 99, 2.0);
  CHECK(odd.width == 51);
  CHECK(odd.height == 50);
  auto thumb = slide.thumbnail(300);
  CHECK(thumb.width == 300);
  CHECK(thumb.height == 225);
  // A region straddling the right edge: inside coloured or background, outside white.
  auto edge = slide.read(1900, 0, 200, 100, 1.0, sl::Reader::fast);
  for (int x = 100; x < 200; ++x) REQUIRE(edge.at(x, 50)[0] == 255);
}

TEST_CASE("reads from several threads give the same pixels as one", "[slide][threads]") {
  TempDir dir;
  auto slide = sl::Slide::open(small_svs(dir));
  auto expect = slide.read(0, 0, 2000, 1500, 3.0);
  std::vector<std::thread> threads;
  std::atomic<int> same{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 3; ++i)
        if (slide.read(0, 0, 2000, 1500, 3.0).rgb == expect.rgb) ++same;
    });
  for (auto& t : threads) t.join();
  CHECK(same == 12);
  sl::set_decode_threads(1);
  CHECK(slide.read(0, 0, 2000, 1500, 3.0).rgb == expect.rgb);
  sl::set_decode_threads(0);
}

TEST_CASE("SlideCache shares handles, bounds their count, reopens changed files", "[slide][cache]") {
  TempDir dir;
  auto a = small_svs(dir, "a.svs");
  auto b = small_svs(dir, "b.svs");
  sl::SlideCache cache(1);
  auto h1 = cache.get(a);
  auto h2 = cache.get(a);
  CHECK(h1.get() == h2.get());
  auto hb = cache.get(b);
  CHECK(cache.size() == 1);
  auto h3 = cache.get(a);
  CHECK(h3.get() != h1.get());  // a was evicted by b
  CHECK(h1->width() == 2000);   // an evicted handle stays usable by its holders
  std::filesystem::last_write_time(a, std::filesystem::last_write_time(a) + std::chrono::seconds(5));
  auto h4 = cache.get(a);
  CHECK(h4.get() != h3.get());
  CHECK_THROWS_AS(cache.get(dir / "missing.svs"), sl::SlideError);
}

TEST_CASE("prepare_slide_files: the file to open, MRXS data files linked where OpenSlide looks", "[slide][files]") {
  TempDir dir;
  // A single-file slide: that file; several: the slide format's own file.
  CHECK(sl::prepare_slide_files({dir / "a.svs"}) == dir / "a.svs");
  CHECK(sl::prepare_slide_files({dir / "x.dat", dir / "s.VMS", dir / "y.jpg"}) == dir / "s.VMS");
  CHECK_THROWS_AS(sl::prepare_slide_files({}), sl::SlideError);

  // An MRXS slide as a download leaves it: every file flat in one folder.
  const std::vector<std::filesystem::path> files{dir / "CMU-1.mrxs", dir / "Slidedat.ini", dir / "Index.dat",
                                                 dir / "Data0000.dat"};
  std::ofstream(files[0]) << "";
  std::ofstream(files[1]) << "[GENERAL]\nSLIDE_VERSION = 1.9\n";  // not a whole slide, but enough to be found
  std::ofstream(files[2]) << "x";
  std::ofstream(files[3]) << "y";
  std::string flat_message;
  REQUIRE(open_error(files[0], flat_message) == sl::SlideError::Kind::not_a_slide);  // OpenSlide cannot see it

  CHECK(sl::prepare_slide_files(files) == files[0]);
  for (const char* name : {"Slidedat.ini", "Index.dat", "Data0000.dat"}) {
    INFO(name);
    CHECK(std::filesystem::is_symlink(dir / "CMU-1" / name));
    CHECK(std::filesystem::equivalent(dir / "CMU-1" / name, dir / name));
  }
  CHECK(std::filesystem::is_regular_file(dir / "Slidedat.ini"));  // the flat file stays
  CHECK(sl::prepare_slide_files(files) == files[0]);               // again: nothing to do, no error
  // Now OpenSlide takes it for MIRAX (and finds this one broken).
  std::string message;
  CHECK(open_error(files[0], message) == sl::SlideError::Kind::broken);
  INFO(message);
}
