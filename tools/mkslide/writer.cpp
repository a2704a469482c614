#include "writer.hpp"

#include <tiffio.h>

#include <cstdio>
#include <jpeglib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <thread>

#include <boost/json/array.hpp>

#include "worker/slide/draw.hpp"
#include "worker/slide/tiff_jpeg.hpp"

namespace mkslide {

namespace {

namespace sl = iaserve::slide;

void jpeg_fail(j_common_ptr cinfo) {
  char msg[JMSG_LENGTH_MAX];
  (*cinfo->err->format_message)(cinfo, msg);
  throw std::runtime_error(std::string("JPEG encoder: ") + msg);
}

// One per thread: a libjpeg compressor set up for tiles of one level, writing
// abbreviated streams (the tables go once into the TIFF's JPEGTables).
class TileEncoder {
 public:
  TileEncoder(int tile, int quality, bool rgb) {
    c_.err = jpeg_std_error(&err_);
    err_.error_exit = jpeg_fail;
    jpeg_create_compress(&c_);
    c_.image_width = static_cast<JDIMENSION>(tile);
    c_.image_height = static_cast<JDIMENSION>(tile);
    c_.input_components = 3;
    c_.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c_);
    if (rgb) {
      jpeg_set_colorspace(&c_, JCS_RGB);
      c_.write_Adobe_marker = FALSE;
      for (int i = 0; i < 3; ++i) c_.comp_info[i].component_id = i + 1;  // as Aperio: nothing says "RGB"
    }
    c_.write_JFIF_header = FALSE;
    jpeg_set_quality(&c_, quality, TRUE);
    c_.dct_method = JDCT_ISLOW;
    // Writing the tables marks them sent: later tiles are abbreviated streams.
    tables_ = compress_tables();
  }
  ~TileEncoder() { jpeg_destroy_compress(&c_); }
  TileEncoder(const TileEncoder&) = delete;
  TileEncoder& operator=(const TileEncoder&) = delete;

  const std::vector<std::uint8_t>& tables() const { return tables_; }

  void encode(const std::uint8_t* rgb, std::vector<std::uint8_t>& out) {
    unsigned char* buf = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&c_, &buf, &size);
    jpeg_start_compress(&c_, FALSE);
    const std::size_t stride = std::size_t(c_.image_width) * 3;
    JSAMPROW rows[16];
    while (c_.next_scanline < c_.image_height) {
      JDIMENSION n = std::min<JDIMENSION>(16, c_.image_height - c_.next_scanline);
      for (JDIMENSION i = 0; i < n; ++i)
        rows[i] = const_cast<JSAMPROW>(rgb + (c_.next_scanline + i) * stride);
      jpeg_write_scanlines(&c_, rows, n);
    }
    jpeg_finish_compress(&c_);
    out.assign(buf, buf + size);
    std::free(buf);
  }

 private:
  std::vector<std::uint8_t> compress_tables() {
    unsigned char* buf = nullptr;
    unsigned long size = 0;
    jpeg_mem_dest(&c_, &buf, &size);
    jpeg_write_tables(&c_);
    std::vector<std::uint8_t> t(buf, buf + size);
    std::free(buf);
    return t;
  }
  jpeg_compress_struct c_{};
  jpeg_error_mgr err_{};
  std::vector<std::uint8_t> tables_;
};

struct Level {
  std::int64_t width, height;
  double dsx, dsy;
};

void check(int ok, const std::string& what) {
  if (!ok) throw std::runtime_error("libtiff: " + what + " failed");
}

void set_common(TIFF* tif, std::int64_t w, std::int64_t h) {
  check(TIFFSetField(tif, TIFFTAG_IMAGEWIDTH, static_cast<std::uint32_t>(w)), "ImageWidth");
  check(TIFFSetField(tif, TIFFTAG_IMAGELENGTH, static_cast<std::uint32_t>(h)), "ImageLength");
  check(TIFFSetField(tif, TIFFTAG_BITSPERSAMPLE, 8), "BitsPerSample");
  check(TIFFSetField(tif, TIFFTAG_SAMPLESPERPIXEL, 3), "SamplesPerPixel");
  check(TIFFSetField(tif, TIFFTAG_PLANARCONFIG, PLANARCONFIG_CONTIG), "PlanarConfig");
  TIFFSetField(tif, TIFFTAG_SOFTWARE, "iaserve mkslide");
}

void set_resolution(TIFF* tif, double mpp, double ds) {
  // Pixels per centimetre of this image.
  TIFFSetField(tif, TIFFTAG_RESOLUTIONUNIT, RESUNIT_CENTIMETER);
  TIFFSetField(tif, TIFFTAG_XRESOLUTION, static_cast<float>(10000.0 / (mpp * ds)));
  TIFFSetField(tif, TIFFTAG_YRESOLUTION, static_cast<float>(10000.0 / (mpp * ds)));
}

// One level as JPEG tiles, a row of tiles at a time, tiles encoded in parallel
// and written in order.
void write_level(TIFF* tif, const Scene& scene, const Level& lv, const WriteOptions& opt, const std::string& desc,
                 bool reduced) {
  const int ts = opt.tile_size;
  set_common(tif, lv.width, lv.height);
  check(TIFFSetField(tif, TIFFTAG_TILEWIDTH, static_cast<std::uint32_t>(ts)), "TileWidth");
  check(TIFFSetField(tif, TIFFTAG_TILELENGTH, static_cast<std::uint32_t>(ts)), "TileLength");
  check(TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_JPEG), "Compression");
  if (opt.rgb_jpeg) {
    check(TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB), "Photometric");
  } else {
    check(TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_YCBCR), "Photometric");
    check(TIFFSetField(tif, TIFFTAG_YCBCRSUBSAMPLING, 2, 2), "YCbCrSubsampling");
  }
  if (reduced) TIFFSetField(tif, TIFFTAG_SUBFILETYPE, FILETYPE_REDUCEDIMAGE);
  if (!desc.empty()) TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, desc.c_str());
  if (opt.format == Format::tiff) set_resolution(tif, scene.options().mpp, lv.dsx);
  std::vector<std::uint8_t> tables = TileEncoder(ts, opt.quality, opt.rgb_jpeg).tables();
  check(TIFFSetField(tif, TIFFTAG_JPEGTABLES, static_cast<std::uint32_t>(tables.size()), tables.data()), "JPEGTables");

  const std::int64_t across = (lv.width + ts - 1) / ts, down = (lv.height + ts - 1) / ts;
  std::vector<std::vector<std::uint8_t>> encoded(static_cast<std::size_t>(across));
  const unsigned threads = opt.threads ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  for (std::int64_t row = 0; row < down; ++row) {
    sl::detail::parallel_for(
        static_cast<std::size_t>(across),
        [&](std::size_t col) {
          thread_local std::unique_ptr<TileEncoder> enc;
          thread_local int enc_key = -1;
          const int key = ts * 1000 + opt.quality * 2 + (opt.rgb_jpeg ? 1 : 0);
          if (!enc || enc_key != key) {
            enc = std::make_unique<TileEncoder>(ts, opt.quality, opt.rgb_jpeg);
            enc_key = key;
          }
          thread_local std::vector<std::uint8_t> pixels;
          pixels.resize(static_cast<std::size_t>(ts) * static_cast<std::size_t>(ts) * 3);
          scene.render(lv.dsx, lv.dsy, static_cast<std::int64_t>(col) * ts, row * ts, ts, ts, pixels.data(),
                       static_cast<std::size_t>(ts) * 3);
          enc->encode(pixels.data(), encoded[col]);
        },
        threads);
    for (std::int64_t col = 0; col < across; ++col) {
      auto& t = encoded[static_cast<std::size_t>(col)];
      ttile_t index = TIFFComputeTile(tif, static_cast<std::uint32_t>(col * ts), static_cast<std::uint32_t>(row * ts), 0, 0);
      if (TIFFWriteRawTile(tif, index, t.data(), static_cast<tmsize_t>(t.size())) < 0)
        throw std::runtime_error("libtiff: writing tile " + std::to_string(col) + "," + std::to_string(row) + " failed");
    }
  }
  check(TIFFWriteDirectory(tif), "WriteDirectory");
}

// A small stripped image (thumbnail, label, macro), LZW-compressed RGB.
void write_stripped(TIFF* tif, const sl::Image& img, const std::string& desc) {
  set_common(tif, img.width, img.height);
  check(TIFFSetField(tif, TIFFTAG_COMPRESSION, COMPRESSION_LZW), "Compression");
  check(TIFFSetField(tif, TIFFTAG_PHOTOMETRIC, PHOTOMETRIC_RGB), "Photometric");
  check(TIFFSetField(tif, TIFFTAG_ROWSPERSTRIP, 16u), "RowsPerStrip");
  TIFFSetField(tif, TIFFTAG_SUBFILETYPE, FILETYPE_REDUCEDIMAGE);
  TIFFSetField(tif, TIFFTAG_IMAGEDESCRIPTION, desc.c_str());
  for (int y = 0; y < img.height; ++y)
    if (TIFFWriteScanline(tif, const_cast<std::uint8_t*>(img.at(0, y)), static_cast<std::uint32_t>(y), 0) < 0)
      throw std::runtime_error("libtiff: writing a scanline failed");
  check(TIFFWriteDirectory(tif), "WriteDirectory");
}

sl::Image render_whole(const Scene& scene, int max_side) {
  const auto& o = scene.options();
  double ds = static_cast<double>(std::max(o.width, o.height)) / max_side;
  int w = std::max(1, static_cast<int>(static_cast<double>(o.width) / ds));
  int h = std::max(1, static_cast<int>(static_cast<double>(o.height) / ds));
  sl::Image img(w, h);
  scene.render(static_cast<double>(o.width) / w, static_cast<double>(o.height) / h, 0, 0, w, h, img.rgb.data(),
               static_cast<std::size_t>(w) * 3);
  return img;
}

// The whole slide fitted into bw x bh.
sl::Image render_fit(const Scene& scene, int bw, int bh) {
  const auto& o = scene.options();
  double ds = std::max(static_cast<double>(o.width) / bw, static_cast<double>(o.height) / bh);
  int w = std::clamp(static_cast<int>(static_cast<double>(o.width) / ds), 1, bw);
  int h = std::clamp(static_cast<int>(static_cast<double>(o.height) / ds), 1, bh);
  sl::Image img(w, h);
  scene.render(static_cast<double>(o.width) / w, static_cast<double>(o.height) / h, 0, 0, w, h, img.rgb.data(),
               static_cast<std::size_t>(w) * 3);
  return img;
}

sl::Image make_label(const std::string& text, std::uint64_t seed) {
  sl::Image label(480, 400, 250);
  sl::draw_text(label, 24, 24, text, {20, 20, 20, 255}, 4);
  sl::draw_text(label, 24, 360, "seed " + std::to_string(seed), {20, 20, 20, 255}, 2);
  // A 2D-barcode-like block so the label looks like one.
  for (int by = 0; by < 16; ++by)
    for (int bx = 0; bx < 16; ++bx)
      if ((seed * 0x9E3779B97F4A7C15ull >> ((bx * 7 + by * 3) % 61)) & 1 || bx == 0 || by == 15)
        sl::fill_rect(label, 300 + bx * 10, 180 + by * 10, 10, 10, {0, 0, 0, 255});
  return label;
}

}  // namespace

boost::json::object write_slide(const Scene& scene, const std::filesystem::path& out, const WriteOptions& opt) {
  const auto& so = scene.options();
  if (opt.tile_size < 16 || opt.tile_size % 16 || opt.tile_size > 4096)
    throw std::invalid_argument("--tile-size: " + std::to_string(opt.tile_size) + " is not a multiple of 16 in [16,4096]");
  std::vector<Level> levels;
  const int step = opt.format == Format::svs ? 4 : 2;
  for (std::int64_t ds = 1;; ds *= step) {
    std::int64_t w = std::max<std::int64_t>(1, so.width / ds), h = std::max<std::int64_t>(1, so.height / ds);
    if (ds > 1 && std::max(w, h) < 256) break;
    levels.push_back({w, h, static_cast<double>(so.width) / static_cast<double>(w),
                      static_cast<double>(so.height) / static_cast<double>(h)});
  }
  // Uncompressed size times a pessimistic JPEG ratio for mostly-tissue slides.
  const double estimate = static_cast<double>(so.width) * static_cast<double>(so.height) * 3 * 0.2;
  const bool big = opt.bigtiff == 1 || (opt.bigtiff == -1 && estimate > 3.5e9);
  TIFF* tif = TIFFOpen(out.c_str(), big ? "w8" : "w");
  if (!tif) throw std::runtime_error(out.string() + ": cannot create");
  struct Closer {
    TIFF* t;
    ~Closer() { TIFFClose(t); }
  } closer{tif};

  char date[32], time_s[32];
  std::time_t now = 0;  // fixed: a given seed gives the same file
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(date, sizeof date, "%m/%d/%y", &tm);
  std::strftime(time_s, sizeof time_s, "%H:%M:%S", &tm);
  const double app_mag = so.mpp <= 0.3 ? 40 : 20;
  char mpp_text[32];
  std::snprintf(mpp_text, sizeof mpp_text, "%.4f", so.mpp);
  const std::string size0 = std::to_string(so.width) + "x" + std::to_string(so.height);
  const std::string head = "Aperio Image Library v12.0.15\n";
  const std::string tail = "|AppMag = " + std::to_string(static_cast<int>(app_mag)) + "|MPP = " + mpp_text +
                           "|ScanScope ID = MKSLIDE|Filename = " + out.stem().string() + "|Date = " + date +
                           "|Time = " + time_s + "|Seed = " + std::to_string(so.seed);

  boost::json::array level_info;
  sl::Image thumb = opt.format == Format::svs ? render_whole(scene, 1024) : sl::Image();
  for (std::size_t i = 0; i < levels.size(); ++i) {
    const Level& lv = levels[i];
    std::string desc;
    if (opt.format == Format::svs) {
      if (i == 0)
        desc = head + size0 + " [0,0 " + size0 + "] (" + std::to_string(opt.tile_size) + "x" +
               std::to_string(opt.tile_size) + ") JPEG/" + (opt.rgb_jpeg ? "RGB" : "YCC") +
               " Q=" + std::to_string(opt.quality) + tail;
      else
        desc = head + size0 + " -> " + std::to_string(lv.width) + "x" + std::to_string(lv.height) + " - " + tail;
    } else if (i == 0) {
      desc = "iaserve mkslide generic pyramidal TIFF, seed " + std::to_string(so.seed);
    }
    write_level(tif, scene, lv, opt, desc, i > 0);
    level_info.push_back({{"width", lv.width}, {"height", lv.height}, {"downsample", (lv.dsx + lv.dsy) / 2}});
    if (i == 0 && opt.format == Format::svs)  // OpenSlide takes the second directory as the thumbnail
      write_stripped(tif, thumb,
                     head + size0 + " -> " + std::to_string(thumb.width) + "x" + std::to_string(thumb.height) + " - " + tail);
  }
  boost::json::array associated;
  if (opt.format == Format::svs) {
    sl::Image label = make_label(opt.label_text, so.seed);
    // "\n", not "\r\n": OpenSlide 3.4.1 finds the name on the second line.
    write_stripped(tif, label, head + "label " + std::to_string(label.width) + "x" + std::to_string(label.height));
    // The macro: the whole glass slide, label on the left.
    const int mh = 560, mw = 1600;
    sl::Image macro(mw, mh, 235);
    sl::Image area = render_fit(scene, mw - 440, mh - 40);
    for (int y = 0; y < area.height; ++y) std::memcpy(macro.at(420, 20 + y), area.at(0, y), static_cast<std::size_t>(area.width) * 3);
    for (int y = 0; y < 400 && y + 80 < mh; ++y)
      for (int x = 0; x < 400; ++x) {
        const std::uint8_t* p = label.at(x * label.width / 400, y);
        std::memcpy(macro.at(10 + x, 80 + y), p, 3);
      }
    write_stripped(tif, macro, head + "macro " + std::to_string(mw) + "x" + std::to_string(mh));
    associated = {"thumbnail", "label", "macro"};
  }
  boost::json::object facts;
  facts["format"] = opt.format == Format::svs ? "svs" : "tiff";
  facts["tile_size"] = opt.tile_size;
  facts["quality"] = opt.quality;
  facts["jpeg_color"] = opt.rgb_jpeg ? "rgb" : "ycbcr";
  facts["bigtiff"] = big;
  facts["levels"] = std::move(level_info);
  facts["associated_images"] = std::move(associated);
  return facts;
}

}  // namespace mkslide
