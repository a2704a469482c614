#include "worker/slide/tiff_jpeg.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <tiffio.h>
#include <unistd.h>

// jpeglib.h needs size_t and FILE declared first.
#include <cstdio>
#include <jpeglib.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csetjmp>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>

#include "iaapi/thread_pool.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::slide::detail {

namespace {

constexpr std::uint64_t kMaxTileBytes = 64ull << 20;

void quiet_handler(const char*, const char*, va_list) {}

std::once_flag tiff_handlers_once;
void quiet_libtiff() {
  // Slides carry private tags libtiff warns about; OpenSlide reports real errors.
  std::call_once(tiff_handlers_once, [] {
    TIFFSetWarningHandler(quiet_handler);
    TIFFSetErrorHandler(quiet_handler);
  });
}

bool is_tiff_magic(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  unsigned char m[4] = {};
  ssize_t n = ::pread(fd, m, 4, 0);
  ::close(fd);
  if (n != 4) return false;
  bool le = m[0] == 'I' && m[1] == 'I' && (m[2] == 42 || m[2] == 43) && m[3] == 0;
  bool be = m[0] == 'M' && m[1] == 'M' && m[2] == 0 && (m[3] == 42 || m[3] == 43);
  return le || be;
}

std::optional<double> resolution_mpp(TIFF* tif, ttag_t tag) {
  float res = 0;
  std::uint16_t unit = RESUNIT_INCH;
  if (TIFFGetField(tif, tag, &res) != 1 || !(res > 0)) return std::nullopt;
  TIFFGetFieldDefaulted(tif, TIFFTAG_RESOLUTIONUNIT, &unit);
  if (unit == RESUNIT_CENTIMETER) return 10000.0 / res;
  if (unit == RESUNIT_INCH) return 25400.0 / res;
  return std::nullopt;  // RESUNIT_NONE: an aspect ratio, not a size
}

}  // namespace

TiffProbe probe_tiff(const std::filesystem::path& path) {
  if (!is_tiff_magic(path)) return TiffProbe::not_tiff;
  quiet_libtiff();
  TIFF* tif = TIFFOpen(path.c_str(), "rm");
  if (!tif) return TiffProbe::unreadable;
  char* desc = nullptr;
  bool aperio = TIFFGetField(tif, TIFFTAG_IMAGEDESCRIPTION, &desc) == 1 && desc && std::strncmp(desc, "Aperio", 6) == 0;
  bool tiled = TIFFIsTiled(tif);
  // Walk the directory chain: a cut file loses its later directories.
  bool chain_ok = true;
  while (true) {
    int rc = TIFFReadDirectory(tif);
    if (rc == 1) continue;
    chain_ok = TIFFLastDirectory(tif) != 0;
    break;
  }
  TIFFClose(tif);
  if (!chain_ok) return TiffProbe::unreadable;
  return aperio || tiled ? TiffProbe::slide_like : TiffProbe::other_tiff;
}

std::unique_ptr<TiffSource> TiffSource::open(const std::filesystem::path& path,
                                             const std::vector<std::pair<std::int64_t, std::int64_t>>& level_sizes) {
  if (!is_tiff_magic(path)) return nullptr;
  quiet_libtiff();
  TIFF* tif = TIFFOpen(path.c_str(), "rm");
  if (!tif) return nullptr;
  std::unique_ptr<TiffSource> src(new TiffSource());
  src->mpp_x = resolution_mpp(tif, TIFFTAG_XRESOLUTION);
  src->mpp_y = resolution_mpp(tif, TIFFTAG_YRESOLUTION);
  src->levels_.resize(level_sizes.size());
  do {
    if (!TIFFIsTiled(tif)) continue;
    std::uint32_t w = 0, h = 0, tw = 0, th = 0;
    std::uint16_t compression = 0, photometric = 0, spp = 0, bps = 0, planar = PLANARCONFIG_CONTIG;
    TIFFGetField(tif, TIFFTAG_IMAGEWIDTH, &w);
    TIFFGetField(tif, TIFFTAG_IMAGELENGTH, &h);
    TIFFGetField(tif, TIFFTAG_TILEWIDTH, &tw);
    TIFFGetField(tif, TIFFTAG_TILELENGTH, &th);
    TIFFGetFieldDefaulted(tif, TIFFTAG_COMPRESSION, &compression);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PHOTOMETRIC, &photometric);
    TIFFGetFieldDefaulted(tif, TIFFTAG_SAMPLESPERPIXEL, &spp);
    TIFFGetFieldDefaulted(tif, TIFFTAG_BITSPERSAMPLE, &bps);
    TIFFGetFieldDefaulted(tif, TIFFTAG_PLANARCONFIG, &planar);
    int match = -1;
    for (std::size_t l = 0; l < level_sizes.size(); ++l)
      if (level_sizes[l].first == w && level_sizes[l].second == h && src->levels_[l].level < 0) {
        match = static_cast<int>(l);
        break;
      }
    if (match < 0 || w == 0 || h == 0 || tw == 0 || th == 0 || tw % 16 || th % 16) continue;
    TiffLevel lv;
    lv.level = match;
    lv.width = w;
    lv.height = h;
    lv.tile_width = tw;
    lv.tile_height = th;
    lv.tiles_across = (w + tw - 1) / tw;
    lv.tiles_down = (h + th - 1) / th;
    lv.jpeg = compression == COMPRESSION_JPEG && spp == 3 && bps == 8 && planar == PLANARCONFIG_CONTIG &&
              (photometric == PHOTOMETRIC_YCBCR || photometric == PHOTOMETRIC_RGB);
    lv.rgb = photometric == PHOTOMETRIC_RGB;
    std::uint64_t* offsets = nullptr;
    std::uint64_t* counts = nullptr;
    std::uint64_t ntiles = TIFFNumberOfTiles(tif);
    if (lv.jpeg && ntiles == std::uint64_t(lv.tiles_across) * lv.tiles_down &&
        TIFFGetField(tif, TIFFTAG_TILEOFFSETS, &offsets) == 1 &&
        TIFFGetField(tif, TIFFTAG_TILEBYTECOUNTS, &counts) == 1 && offsets && counts) {
      lv.offsets.assign(offsets, offsets + ntiles);
      lv.byte_counts.assign(counts, counts + ntiles);
      std::uint32_t tcount = 0;
      void* tables = nullptr;
      if (TIFFGetField(tif, TIFFTAG_JPEGTABLES, &tcount, &tables) == 1 && tables && tcount >= 4) {
        auto* t = static_cast<const std::uint8_t*>(tables);
        lv.tables.assign(t, t + tcount);
      }
    } else {
      lv.jpeg = false;
    }
    src->levels_[static_cast<std::size_t>(match)] = std::move(lv);
  } while (TIFFReadDirectory(tif));
  TIFFClose(tif);
  src->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (src->fd_ < 0) return nullptr;
  struct stat st {};
  if (::fstat(src->fd_, &st) == 0) src->file_size_ = static_cast<std::uint64_t>(st.st_size);
  return src;
}

TiffSource::~TiffSource() {
  if (fd_ >= 0) ::close(fd_);
}

const TiffLevel* TiffSource::level(int openslide_level) const {
  if (openslide_level < 0 || static_cast<std::size_t>(openslide_level) >= levels_.size()) return nullptr;
  const TiffLevel& lv = levels_[static_cast<std::size_t>(openslide_level)];
  return lv.level == openslide_level && lv.jpeg ? &lv : nullptr;
}

bool TiffSource::read_tile(const TiffLevel& lv, std::uint32_t col, std::uint32_t row,
                           std::vector<std::uint8_t>& out) const {
  if (col >= lv.tiles_across || row >= lv.tiles_down) return false;
  std::size_t index = std::size_t(row) * lv.tiles_across + col;
  std::uint64_t offset = lv.offsets[index], count = lv.byte_counts[index];
  if (count < 4 || count > kMaxTileBytes || offset > file_size_ || count > file_size_ - offset) return false;
  bool splice = lv.tables.size() >= 4 && lv.tables[0] == 0xFF && lv.tables[1] == 0xD8;
  // Layout: the tables without their EOI, then the tile without its SOI. The
  // tile is read over the tables' last two bytes, which are put back after
  // its SOI is checked: no second copy of the tile.
  std::size_t keep = splice ? lv.tables.size() - 4 : 0;
  out.resize(keep + count);
  if (splice) std::memcpy(out.data(), lv.tables.data(), keep);
  std::uint8_t* dst = out.data() + keep;
  std::uint64_t done = 0;
  while (done < count) {
    ssize_t n = ::pread(fd_, dst + done, count - done, static_cast<off_t>(offset + done));
    if (n <= 0) return false;
    done += static_cast<std::uint64_t>(n);
  }
  if (dst[0] != 0xFF || dst[1] != 0xD8) return false;
  if (splice) std::memcpy(dst, lv.tables.data() + keep, 2);
  return true;
}

namespace {

struct ErrorManager {
  jpeg_error_mgr pub;
  std::jmp_buf jump;
  int warnings;
};

void on_jpeg_error(j_common_ptr cinfo) {
  auto* err = reinterpret_cast<ErrorManager*>(cinfo->err);
  std::longjmp(err->jump, 1);
}

void on_jpeg_message(j_common_ptr cinfo, int level) {
  if (level < 0) reinterpret_cast<ErrorManager*>(cinfo->err)->warnings++;
}

struct Decoder {
  jpeg_decompress_struct cinfo;
  ErrorManager err;
  Decoder() {
    std::memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = on_jpeg_error;
    err.pub.emit_message = on_jpeg_message;
    err.warnings = 0;
    jpeg_create_decompress(&cinfo);
  }
  ~Decoder() { jpeg_destroy_decompress(&cinfo); }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;
};

// Only trivially destructible locals live here: longjmp skips destructors.
int decode_into(Decoder* dec, const std::uint8_t* data, std::size_t size, int denom, bool rgb,
                std::uint32_t max_width, std::uint32_t max_height, std::uint8_t* out, std::size_t capacity,
                int* width, int* height) {
  jpeg_decompress_struct* c = &dec->cinfo;
  dec->err.warnings = 0;
  if (setjmp(dec->err.jump)) {
    jpeg_abort_decompress(c);
    return -1;
  }
  jpeg_mem_src(c, const_cast<unsigned char*>(data), static_cast<unsigned long>(size));
  if (jpeg_read_header(c, TRUE) != JPEG_HEADER_OK || c->num_components != 3 || c->image_width > max_width ||
      c->image_height > max_height) {
    jpeg_abort_decompress(c);
    return -1;
  }
  // The TIFF photometric decides, as in libtiff: markers and component ids
  // may say otherwise (Aperio RGB tiles carry neither an Adobe marker nor
  // RGB component ids).
  c->jpeg_color_space = rgb ? JCS_RGB : JCS_YCbCr;
  c->out_color_space = JCS_RGB;
  c->scale_num = 1;
  c->scale_denom = static_cast<unsigned>(denom);
  c->dct_method = JDCT_ISLOW;
  jpeg_calc_output_dimensions(c);
  std::size_t need = std::size_t(c->output_width) * c->output_height * 3;
  if (out == nullptr || need > capacity) {
    *width = static_cast<int>(c->output_width);
    *height = static_cast<int>(c->output_height);
    jpeg_abort_decompress(c);
    return 1;  // caller grows the buffer and calls again
  }
  jpeg_start_decompress(c);
  std::size_t stride = std::size_t(c->output_width) * 3;
  JSAMPROW rows[16];
  while (c->output_scanline < c->output_height) {
    JDIMENSION n = std::min<JDIMENSION>(16, c->output_height - c->output_scanline);
    for (JDIMENSION i = 0; i < n; ++i) rows[i] = out + (c->output_scanline + i) * stride;
    jpeg_read_scanlines(c, rows, n);
  }
  jpeg_finish_decompress(c);
  *width = static_cast<int>(c->output_width);
  *height = static_cast<int>(c->output_height);
  return dec->err.warnings == 0 ? 0 : -1;
}

}  // namespace

bool decode_jpeg_scaled(const std::uint8_t* data, std::size_t size, int denom, bool rgb, std::uint32_t max_width,
                        std::uint32_t max_height, std::vector<std::uint8_t>& out, int& width, int& height) {
  thread_local Decoder decoder;
  for (int attempt = 0; attempt < 2; ++attempt) {
    int rc = decode_into(&decoder, data, size, denom, rgb, max_width, max_height, out.empty() ? nullptr : out.data(),
                         out.size(), &width, &height);
    if (rc == 0) return true;
    if (rc < 0) return false;
    out.resize(std::size_t(width) * std::size_t(height) * 3);
  }
  return false;
}

namespace {

std::atomic<unsigned> g_threads{0};
std::mutex g_pool_mutex;
std::unique_ptr<ThreadPool> g_pool;

ThreadPool& pool() {
  std::lock_guard lock(g_pool_mutex);
  if (!g_pool) g_pool = std::make_unique<ThreadPool>(std::max(2u, std::thread::hardware_concurrency()));
  return *g_pool;
}

}  // namespace

void parallel_for(std::size_t n, const std::function<void(std::size_t)>& fn, unsigned threads) {
  if (threads <= 1 || n <= 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  struct State {
    std::atomic<std::size_t> next{0};
    std::size_t n = 0;
    std::size_t done = 0;
    std::mutex mutex;
    std::condition_variable cv;
    std::exception_ptr error;
    std::function<void(std::size_t)> fn;
  };
  auto st = std::make_shared<State>();
  st->n = n;
  st->fn = fn;
  auto work = [st] {
    for (;;) {
      std::size_t i = st->next.fetch_add(1);
      if (i >= st->n) return;
      std::exception_ptr error;
      try {
        st->fn(i);
      } catch (...) {
        error = std::current_exception();
      }
      std::lock_guard lock(st->mutex);
      if (error && !st->error) st->error = error;
      if (++st->done == st->n) st->cv.notify_all();
    }
  };
  ThreadPool& p = pool();
  std::size_t helpers = std::min<std::size_t>({threads - 1, n - 1, p.size()});
  for (std::size_t i = 0; i < helpers; ++i) p.post(work);
  work();
  std::unique_lock lock(st->mutex);
  st->cv.wait(lock, [&] { return st->done == st->n; });
  if (st->error) std::rethrow_exception(st->error);
}

}  // namespace iaserve::slide::detail

namespace iaserve::slide {

void set_decode_threads(unsigned threads) { detail::g_threads = threads; }

unsigned decode_threads() {
  unsigned t = detail::g_threads.load();
  return t ? t : std::max(1u, std::thread::hardware_concurrency());
}

std::uint64_t decode_tiles_raw(const std::vector<std::vector<std::uint8_t>>& tiles, int scale_denom, unsigned threads,
                               bool rgb_jpeg) {
  if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8)
    throw std::invalid_argument("scale_denom " + std::to_string(scale_denom) + " not one of 1, 2, 4, 8");
  std::atomic<std::uint64_t> pixels{0};
  detail::parallel_for(
      tiles.size(),
      [&](std::size_t i) {
        thread_local std::vector<std::uint8_t> scratch;
        int w = 0, h = 0;
        if (!detail::decode_jpeg_scaled(tiles[i].data(), tiles[i].size(), scale_denom, rgb_jpeg, 1u << 16, 1u << 16,
                                        scratch, w, h))
          throw std::runtime_error("tile " + std::to_string(i) + ": corrupt JPEG stream");
        pixels += std::uint64_t(w) * std::uint64_t(h);
      },
      threads ? threads : decode_threads());
  return pixels.load();
}

}  // namespace iaserve::slide
