#include "worker/slide/slide.hpp"

#include <fcntl.h>
#include <openslide/openslide.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstring>
#include <system_error>

#include "worker/slide/tiff_jpeg.hpp"

namespace iaserve::slide {

namespace fs = std::filesystem;

const char* to_string(SlideError::Kind kind) {
  switch (kind) {
    case SlideError::Kind::not_a_slide: return "not_a_slide";
    case SlideError::Kind::broken: return "broken";
    case SlideError::Kind::unsupported: return "unsupported";
    case SlideError::Kind::io: return "io";
  }
  return "unknown";
}

namespace {

// Largest source buffer one read() holds at a time; bigger reads go in bands.
#ifndef IASERVE_SLIDE_MAX_BAND_BYTES
#define IASERVE_SLIDE_MAX_BAND_BYTES (256u << 20)
#endif
constexpr std::size_t kMaxBandBytes = IASERVE_SLIDE_MAX_BAND_BYTES;
// OpenSlide reads are split into blocks of at most this side (also the unit of parallel work).
constexpr std::int64_t kOpenSlideBlock = 1024;

std::optional<double> parse_double(const std::string& s) {
  double v = 0;
  const char* b = s.data();
  const char* e = s.data() + s.size();
  while (b < e && *b == ' ') ++b;
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || p == b || !std::isfinite(v) || v <= 0) return std::nullopt;
  return v;
}

// OpenSlide's premultiplied ARGB to RGB over white.
void argb_to_rgb(const std::uint32_t* src, std::size_t n, std::uint8_t* dst) {
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t p = src[i];
    std::uint32_t a = p >> 24;
    std::uint32_t white = 255 - a;
    dst[3 * i] = static_cast<std::uint8_t>(((p >> 16) & 0xFF) + white);
    dst[3 * i + 1] = static_cast<std::uint8_t>(((p >> 8) & 0xFF) + white);
    dst[3 * i + 2] = static_cast<std::uint8_t>((p & 0xFF) + white);
  }
}

// Separable area-average resampling weights: output index i covers source
// coordinates [a, b) = ((origin + i*ds)/scale - src0, ... + ds/scale).
struct Taps {
  std::vector<int> first;     // first source index per output index
  std::vector<int> count;     // number of source indices
  std::vector<std::size_t> at;  // offset into weight
  std::vector<float> weight;
  bool identity = true;       // every output index is exactly one source index
};

Taps make_taps(int n_out, double origin, double ds, double scale, std::int64_t src0, int src_len) {
  Taps t;
  t.first.resize(static_cast<std::size_t>(n_out));
  t.count.resize(static_cast<std::size_t>(n_out));
  t.at.resize(static_cast<std::size_t>(n_out));
  for (int i = 0; i < n_out; ++i) {
    double a = (origin + i * ds) / scale - static_cast<double>(src0);
    double b = (origin + (i + 1) * ds) / scale - static_cast<double>(src0);
    // Snap float noise so an aligned 1:1 copy stays exact.
    double ra = std::round(a), rb = std::round(b);
    if (std::abs(a - ra) < 1e-6) a = ra;
    if (std::abs(b - rb) < 1e-6) b = rb;
    int k0 = std::clamp(static_cast<int>(std::floor(a)), 0, src_len - 1);
    int k1 = std::clamp(static_cast<int>(std::ceil(b)), k0 + 1, src_len);
    t.first[static_cast<std::size_t>(i)] = k0;
    t.count[static_cast<std::size_t>(i)] = k1 - k0;
    t.at[static_cast<std::size_t>(i)] = t.weight.size();
    double total = 0;
    std::size_t start = t.weight.size();
    for (int k = k0; k < k1; ++k) {
      double w = std::min<double>(b, k + 1) - std::max<double>(a, k);
      if (w < 0) w = 0;
      t.weight.push_back(static_cast<float>(w));
      total += w;
    }
    if (total <= 0) {
      std::fill(t.weight.begin() + static_cast<std::ptrdiff_t>(start), t.weight.end(), 0.f);
      t.weight[start] = 1.f;
      total = 1;
    }
    for (std::size_t j = start; j < t.weight.size(); ++j) t.weight[j] = static_cast<float>(t.weight[j] / total);
    if (k1 - k0 != 1) t.identity = false;
  }
  return t;
}

// Output index i is source index i.
bool is_copy(const Taps& t) {
  if (!t.identity) return false;
  for (std::size_t i = 0; i < t.first.size(); ++i)
    if (t.first[i] != static_cast<int>(i)) return false;
  return true;
}

}  // namespace

struct Slide::Impl {
  fs::path path;
  openslide_t* osr = nullptr;
  std::string vendor;
  std::map<std::string, std::string> props;
  std::vector<Size> sizes;
  std::vector<double> downsamples;
  std::vector<std::string> associated;
  std::optional<double> mpp_x, mpp_y, objective;
  std::unique_ptr<detail::TiffSource> tiff;
  mutable std::atomic<bool> failed{false};
  mutable std::atomic<std::uint64_t> reads_fast{0}, reads_openslide{0}, tiles_decoded{0}, tiles_fallback{0},
      pixels_decoded{0}, pixels_openslide{0}, pixels_out{0};

  ~Impl() {
    if (osr) openslide_close(osr);
  }

  void check(const std::string& what) const {
    const char* e = openslide_get_error(osr);
    if (e) {
      failed = true;
      throw SlideError(SlideError::Kind::broken, path.string() + ": " + what + ": " + e);
    }
  }
  void check_usable() const {
    if (failed) check("earlier error");
    if (failed) throw SlideError(SlideError::Kind::broken, path.string() + ": handle failed earlier");
  }
  void check_level(int level) const {
    if (level < 0 || level >= static_cast<int>(sizes.size()))
      throw std::out_of_range("level " + std::to_string(level) + " out of range [0," + std::to_string(sizes.size()) +
                              ")");
  }

  // Level pixels (lx, ly, w, h) of `level` through OpenSlide into dst (RGB8, stride in bytes).
  void openslide_block(int level, std::int64_t lx, std::int64_t ly, std::int64_t w, std::int64_t h,
                       std::uint8_t* dst, std::size_t stride) const {
    std::vector<std::uint32_t> argb(static_cast<std::size_t>(w * h));
    double lds = downsamples[static_cast<std::size_t>(level)];
    auto x0 = static_cast<std::int64_t>(std::llround(static_cast<double>(lx) * lds));
    auto y0 = static_cast<std::int64_t>(std::llround(static_cast<double>(ly) * lds));
    openslide_read_region(osr, argb.data(), x0, y0, level, w, h);
    check("read_region level " + std::to_string(level));
    for (std::int64_t r = 0; r < h; ++r)
      argb_to_rgb(argb.data() + r * w, static_cast<std::size_t>(w), dst + static_cast<std::size_t>(r) * stride);
    pixels_openslide += static_cast<std::uint64_t>(w * h);
  }

  // Fills src (sw x sh RGB8, white outside the level) with level pixels
  // starting at (sx0, sy0) through OpenSlide, in blocks on the pool.
  void fill_openslide(int level, std::int64_t sx0, std::int64_t sy0, int sw, int sh, std::uint8_t* src) const {
    const Size ls = sizes[static_cast<std::size_t>(level)];
    std::int64_t x0 = std::max<std::int64_t>(sx0, 0), y0 = std::max<std::int64_t>(sy0, 0);
    std::int64_t x1 = std::min<std::int64_t>(sx0 + sw, ls.width), y1 = std::min<std::int64_t>(sy0 + sh, ls.height);
    if (x0 >= x1 || y0 >= y1) return;
    std::int64_t bx = (x1 - x0 + kOpenSlideBlock - 1) / kOpenSlideBlock;
    std::int64_t by = (y1 - y0 + kOpenSlideBlock - 1) / kOpenSlideBlock;
    std::size_t stride = static_cast<std::size_t>(sw) * 3;
    detail::parallel_for(
        static_cast<std::size_t>(bx * by),
        [&](std::size_t i) {
          std::int64_t cx = x0 + static_cast<std::int64_t>(i % static_cast<std::size_t>(bx)) * kOpenSlideBlock;
          std::int64_t cy = y0 + static_cast<std::int64_t>(i / static_cast<std::size_t>(bx)) * kOpenSlideBlock;
          std::int64_t cw = std::min(kOpenSlideBlock, x1 - cx), ch = std::min(kOpenSlideBlock, y1 - cy);
          openslide_block(level, cx, cy, cw, ch,
                          src + static_cast<std::size_t>(cy - sy0) * stride + static_cast<std::size_t>(cx - sx0) * 3,
                          stride);
        },
        decode_threads());
  }

  // The fast path: tiles of `lv` decoded at 1/denom into src (sw x sh at
  // scaled coordinates (sx0, sy0)); tiles it cannot decode come from OpenSlide.
  void fill_fast(const detail::TiffLevel& lv, int denom, std::int64_t sx0, std::int64_t sy0, int sw, int sh,
                 std::uint8_t* src) const {
    const std::int64_t tws = lv.tile_width / static_cast<std::uint32_t>(denom);
    const std::int64_t ths = lv.tile_height / static_cast<std::uint32_t>(denom);
    const std::int64_t lw = (lv.width + denom - 1) / denom, lh = (lv.height + denom - 1) / denom;
    std::int64_t x0 = std::max<std::int64_t>(sx0, 0), y0 = std::max<std::int64_t>(sy0, 0);
    std::int64_t x1 = std::min<std::int64_t>(sx0 + sw, lw), y1 = std::min<std::int64_t>(sy0 + sh, lh);
    if (x0 >= x1 || y0 >= y1) return;
    std::int64_t c0 = x0 / tws, c1 = (x1 - 1) / tws, r0 = y0 / ths, r1 = (y1 - 1) / ths;
    std::int64_t across = c1 - c0 + 1;
    std::size_t n = static_cast<std::size_t>(across * (r1 - r0 + 1));
    std::size_t stride = static_cast<std::size_t>(sw) * 3;
    detail::parallel_for(
        n,
        [&](std::size_t i) {
          std::int64_t col = c0 + static_cast<std::int64_t>(i % static_cast<std::size_t>(across));
          std::int64_t row = r0 + static_cast<std::int64_t>(i / static_cast<std::size_t>(across));
          // Part of this tile inside the wanted window, in scaled level pixels.
          std::int64_t tx0 = std::max(col * tws, x0), tx1 = std::min((col + 1) * tws, x1);
          std::int64_t ty0 = std::max(row * ths, y0), ty1 = std::min((row + 1) * ths, y1);
          thread_local std::vector<std::uint8_t> jpeg, pixels;
          int w = 0, h = 0;
          bool ok = tiff->read_tile(lv, static_cast<std::uint32_t>(col), static_cast<std::uint32_t>(row), jpeg) &&
                    detail::decode_jpeg_scaled(jpeg.data(), jpeg.size(), denom, lv.rgb, lv.tile_width,
                                               lv.tile_height, pixels, w, h) &&
                    w >= tws && h >= ths;
          if (ok) {
            tiles_decoded++;
            pixels_decoded += static_cast<std::uint64_t>(w) * static_cast<std::uint64_t>(h);
            for (std::int64_t y = ty0; y < ty1; ++y)
              std::memcpy(src + static_cast<std::size_t>(y - sy0) * stride + static_cast<std::size_t>(tx0 - sx0) * 3,
                          pixels.data() + (static_cast<std::size_t>(y - row * ths) * static_cast<std::size_t>(w) +
                                           static_cast<std::size_t>(tx0 - col * tws)) * 3,
                          static_cast<std::size_t>(tx1 - tx0) * 3);
            return;
          }
          // OpenSlide reads the tile at level resolution; box-average it by denom.
          tiles_fallback++;
          std::int64_t lx = col * lv.tile_width, ly = row * lv.tile_height;
          std::int64_t fw = std::min<std::int64_t>(lv.tile_width, lv.width - lx);
          std::int64_t fh = std::min<std::int64_t>(lv.tile_height, lv.height - ly);
          std::vector<std::uint8_t> full(static_cast<std::size_t>(fw * fh * 3));
          openslide_block(lv.level, lx, ly, fw, fh, full.data(), static_cast<std::size_t>(fw) * 3);
          for (std::int64_t y = ty0; y < ty1; ++y)
            for (std::int64_t x = tx0; x < tx1; ++x) {
              std::int64_t fx0 = (x - col * tws) * denom, fy0 = (y - row * ths) * denom;
              unsigned sum[3] = {0, 0, 0};
              unsigned cnt = 0;
              for (std::int64_t yy = fy0; yy < std::min<std::int64_t>(fy0 + denom, fh); ++yy)
                for (std::int64_t xx = fx0; xx < std::min<std::int64_t>(fx0 + denom, fw); ++xx) {
                  const std::uint8_t* p = full.data() + static_cast<std::size_t>(yy * fw + xx) * 3;
                  sum[0] += p[0];
                  sum[1] += p[1];
                  sum[2] += p[2];
                  ++cnt;
                }
              std::uint8_t* d = src + static_cast<std::size_t>(y - sy0) * stride + static_cast<std::size_t>(x - sx0) * 3;
              for (int c = 0; c < 3 && cnt; ++c) d[c] = static_cast<std::uint8_t>((sum[c] + cnt / 2) / cnt);
            }
        },
        decode_threads());
  }
};

Slide::Slide(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Slide::Slide(Slide&&) noexcept = default;
Slide& Slide::operator=(Slide&&) noexcept = default;
Slide::~Slide() = default;

Slide Slide::open(const fs::path& path) {
  std::error_code ec;
  auto status = fs::status(path, ec);
  if (ec || !fs::exists(status))
    throw SlideError(SlideError::Kind::io, path.string() + ": no such file");
  if (fs::is_directory(status)) throw SlideError(SlideError::Kind::io, path.string() + ": is a folder, not a file");
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SlideError(SlideError::Kind::io, path.string() + ": " + std::strerror(errno));
  ::close(fd);

  auto impl = std::make_unique<Impl>();
  impl->path = path;
  const char* vendor = openslide_detect_vendor(path.c_str());
  openslide_t* osr = openslide_open(path.c_str());
  if (!osr) {
    if (vendor)
      throw SlideError(SlideError::Kind::broken, path.string() + ": " + vendor + " slide that OpenSlide cannot open");
    switch (detail::probe_tiff(path)) {
      case detail::TiffProbe::unreadable:
        throw SlideError(SlideError::Kind::broken, path.string() + ": damaged or truncated TIFF (a directory cannot be read)");
      case detail::TiffProbe::slide_like:
        throw SlideError(SlideError::Kind::broken, path.string() + ": tiled TIFF that OpenSlide cannot open");
      default:
        break;
    }
    throw SlideError(SlideError::Kind::not_a_slide, path.string() + ": not a slide (no OpenSlide format recognises it)");
  }
  impl->osr = osr;
  if (const char* e = openslide_get_error(osr))
    throw SlideError(SlideError::Kind::broken, path.string() + ": broken " + (vendor ? vendor : "") + " slide: " + e);
  impl->vendor = vendor ? vendor : "";

  if (const char* const* names = openslide_get_property_names(osr))
    for (; *names; ++names) {
      const char* v = openslide_get_property_value(osr, *names);
      impl->props[*names] = v ? v : "";
    }
  impl->check("properties");
  if (impl->vendor.empty()) {
    auto it = impl->props.find(OPENSLIDE_PROPERTY_NAME_VENDOR);
    if (it != impl->props.end()) impl->vendor = it->second;
  }

  int32_t levels = openslide_get_level_count(osr);
  impl->check("level count");
  if (levels < 1) throw SlideError(SlideError::Kind::broken, path.string() + ": no levels");
  std::vector<std::pair<std::int64_t, std::int64_t>> level_sizes;
  for (int32_t l = 0; l < levels; ++l) {
    int64_t w = -1, h = -1;
    openslide_get_level_dimensions(osr, l, &w, &h);
    double ds = openslide_get_level_downsample(osr, l);
    impl->check("level " + std::to_string(l) + " dimensions");
    if (w <= 0 || h <= 0 || !(ds > 0))
      throw SlideError(SlideError::Kind::broken, path.string() + ": level " + std::to_string(l) + " has no size");
    impl->sizes.push_back({w, h});
    impl->downsamples.push_back(ds);
    level_sizes.emplace_back(w, h);
  }
  if (const char* const* names = openslide_get_associated_image_names(osr))
    for (; *names; ++names) impl->associated.emplace_back(*names);
  impl->check("associated image names");

  auto prop = [&](const char* name) -> std::optional<double> {
    auto it = impl->props.find(name);
    return it == impl->props.end() ? std::nullopt : parse_double(it->second);
  };
  impl->mpp_x = prop(OPENSLIDE_PROPERTY_NAME_MPP_X);
  impl->mpp_y = prop(OPENSLIDE_PROPERTY_NAME_MPP_Y);
  impl->objective = prop(OPENSLIDE_PROPERTY_NAME_OBJECTIVE_POWER);

  impl->tiff = detail::TiffSource::open(path, level_sizes);
  if (impl->tiff) {
    if (!impl->mpp_x) impl->mpp_x = impl->tiff->mpp_x;
    if (!impl->mpp_y) impl->mpp_y = impl->tiff->mpp_y ? impl->tiff->mpp_y : impl->mpp_x;
    // Only formats whose tiles are plain, non-overlapping TIFF tiles.
    if (impl->vendor != "aperio" && impl->vendor != "generic-tiff") impl->tiff.reset();
  }
  return Slide(std::move(impl));
}

const fs::path& Slide::path() const { return impl_->path; }
std::string Slide::vendor() const { return impl_->vendor; }
std::int64_t Slide::width() const { return impl_->sizes[0].width; }
std::int64_t Slide::height() const { return impl_->sizes[0].height; }
int Slide::level_count() const { return static_cast<int>(impl_->sizes.size()); }
Size Slide::level_size(int level) const {
  impl_->check_level(level);
  return impl_->sizes[static_cast<std::size_t>(level)];
}
double Slide::level_downsample(int level) const {
  impl_->check_level(level);
  return impl_->downsamples[static_cast<std::size_t>(level)];
}
int Slide::best_level_for_downsample(double downsample) const {
  // OpenSlide's rule, on the cached downsamples (no call, no error state).
  int best = 0;
  for (std::size_t l = 0; l < impl_->downsamples.size(); ++l)
    if (impl_->downsamples[l] <= downsample * (1 + 1e-9)) best = static_cast<int>(l);
  return best;
}
std::optional<double> Slide::mpp() const { return impl_->mpp_x; }
std::optional<double> Slide::mpp_y() const { return impl_->mpp_y; }
std::optional<double> Slide::objective_power() const { return impl_->objective; }
const std::map<std::string, std::string>& Slide::properties() const { return impl_->props; }
std::optional<std::string> Slide::property(const std::string& name) const {
  auto it = impl_->props.find(name);
  if (it == impl_->props.end()) return std::nullopt;
  return it->second;
}
std::vector<std::string> Slide::associated_image_names() const { return impl_->associated; }
bool Slide::has_associated_image(const std::string& name) const {
  return std::find(impl_->associated.begin(), impl_->associated.end(), name) != impl_->associated.end();
}

Image Slide::associated_image(const std::string& name) const {
  impl_->check_usable();
  if (!has_associated_image(name))
    throw SlideError(SlideError::Kind::unsupported, impl_->path.string() + ": no associated image \"" + name + "\"");
  int64_t w = -1, h = -1;
  openslide_get_associated_image_dimensions(impl_->osr, name.c_str(), &w, &h);
  impl_->check("associated image " + name);
  if (w <= 0 || h <= 0 || w * h > (int64_t(1) << 28))
    throw SlideError(SlideError::Kind::broken, impl_->path.string() + ": associated image " + name + " has size " +
                                                   std::to_string(w) + "x" + std::to_string(h));
  std::vector<std::uint32_t> argb(static_cast<std::size_t>(w * h));
  openslide_read_associated_image(impl_->osr, name.c_str(), argb.data());
  impl_->check("associated image " + name);
  Image out(static_cast<int>(w), static_cast<int>(h));
  argb_to_rgb(argb.data(), argb.size(), out.rgb.data());
  return out;
}

std::optional<FastLevelInfo> Slide::fast_level(int level) const {
  impl_->check_level(level);
  if (!impl_->tiff) return std::nullopt;
  const detail::TiffLevel* lv = impl_->tiff->level(level);
  if (!lv) return std::nullopt;
  return FastLevelInfo{level,
                       static_cast<int>(lv->tile_width),
                       static_cast<int>(lv->tile_height),
                       static_cast<int>(lv->tiles_across),
                       static_cast<int>(lv->tiles_down),
                       lv->rgb};
}

std::vector<std::vector<std::uint8_t>> Slide::raw_tiles(int level, const std::vector<std::pair<int, int>>& tiles) const {
  impl_->check_level(level);
  const detail::TiffLevel* lv = impl_->tiff ? impl_->tiff->level(level) : nullptr;
  if (!lv)
    throw SlideError(SlideError::Kind::unsupported,
                     impl_->path.string() + ": level " + std::to_string(level) + " has no JPEG tiles to read directly");
  std::vector<std::vector<std::uint8_t>> out(tiles.size());
  for (std::size_t i = 0; i < tiles.size(); ++i)
    if (tiles[i].first < 0 || tiles[i].second < 0 ||
        !impl_->tiff->read_tile(*lv, static_cast<std::uint32_t>(tiles[i].first),
                                static_cast<std::uint32_t>(tiles[i].second), out[i]))
      throw SlideError(SlideError::Kind::broken, impl_->path.string() + ": tile (" + std::to_string(tiles[i].first) +
                                                     "," + std::to_string(tiles[i].second) + ") of level " +
                                                     std::to_string(level) + " unreadable");
  return out;
}

Image Slide::read(std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h, double downsample,
                  Reader reader) const {
  if (w <= 0 || h <= 0)
    throw std::invalid_argument("read size " + std::to_string(w) + "x" + std::to_string(h) + " is empty");
  if (!(downsample > 0) || !std::isfinite(downsample))
    throw std::invalid_argument("read downsample " + std::to_string(downsample) + " is not positive");
  const double ow_d = std::ceil(static_cast<double>(w) / downsample - 1e-9);
  const double oh_d = std::ceil(static_cast<double>(h) / downsample - 1e-9);
  if (ow_d * oh_d > double(1u << 31) || ow_d > 1e9 || oh_d > 1e9)
    throw std::invalid_argument("read of " + std::to_string(w) + "x" + std::to_string(h) + " at downsample " +
                                std::to_string(downsample) + " exceeds 2^31 output pixels");
  impl_->check_usable();
  const int ow = std::max(1, static_cast<int>(ow_d)), oh = std::max(1, static_cast<int>(oh_d));

  const int level = best_level_for_downsample(downsample);
  const double lds = impl_->downsamples[static_cast<std::size_t>(level)];
  const detail::TiffLevel* lv = (reader != Reader::openslide && impl_->tiff) ? impl_->tiff->level(level) : nullptr;
  if (reader == Reader::fast && !lv)
    throw SlideError(SlideError::Kind::unsupported,
                     impl_->path.string() + ": level " + std::to_string(level) + " has no fast path");
  int denom = 1;
  if (lv) {
    double rest = downsample / lds;
    for (int d : {8, 4, 2})
      if (d <= rest * (1 + 1e-9) && lv->tile_width % unsigned(d) == 0 &&
          lv->tile_height % unsigned(d) == 0) {
        denom = d;
        break;
      }
  }
  const double scale = lds * denom;  // level-0 pixels per source pixel
  (lv ? impl_->reads_fast : impl_->reads_openslide)++;

  Image out(ow, oh);
  const auto sx0 = static_cast<std::int64_t>(std::floor(static_cast<double>(x) / scale + 1e-6));
  const auto sx1 = static_cast<std::int64_t>(std::ceil((static_cast<double>(x) + ow * downsample) / scale - 1e-6));
  const int sw = static_cast<int>(std::max<std::int64_t>(1, sx1 - sx0));
  const Taps cols = make_taps(ow, static_cast<double>(x), downsample, scale, sx0, sw);

  // Output rows per band so the source band stays within kMaxBandBytes.
  const double src_rows_per_out = downsample / scale;
  const std::size_t row_bytes = static_cast<std::size_t>(sw) * 3;
  int band = oh;
  if (static_cast<double>(row_bytes) * (src_rows_per_out * oh + 2) > double(kMaxBandBytes))
    band = std::max(1, static_cast<int>(double(kMaxBandBytes) / double(row_bytes) / src_rows_per_out) - 2);

  std::vector<std::uint8_t> src;
  for (int oy0 = 0; oy0 < oh; oy0 += band) {
    const int oy1 = std::min(oh, oy0 + band);
    const double top = static_cast<double>(y) + oy0 * downsample;
    const double bottom = static_cast<double>(y) + oy1 * downsample;
    const auto sy0 = static_cast<std::int64_t>(std::floor(top / scale + 1e-6));
    const auto sy1 = static_cast<std::int64_t>(std::ceil(bottom / scale - 1e-6));
    const int sh = static_cast<int>(std::max<std::int64_t>(1, sy1 - sy0));
    const Taps rows = make_taps(oy1 - oy0, top, downsample, scale, sy0, sh);
    if (sw == ow && sh == oy1 - oy0 && is_copy(cols) && is_copy(rows)) {
      // Source pixels are output pixels: decode straight into the result.
      if (lv)
        impl_->fill_fast(*lv, denom, sx0, sy0, sw, sh, out.at(0, oy0));
      else
        impl_->fill_openslide(level, sx0, sy0, sw, sh, out.at(0, oy0));
      continue;
    }
    src.assign(row_bytes * static_cast<std::size_t>(sh), 255);
    if (lv)
      impl_->fill_fast(*lv, denom, sx0, sy0, sw, sh, src.data());
    else
      impl_->fill_openslide(level, sx0, sy0, sw, sh, src.data());

    const int chunk = 32;
    const int chunks = (oy1 - oy0 + chunk - 1) / chunk;
    detail::parallel_for(
        static_cast<std::size_t>(chunks),
        [&](std::size_t c) {
          std::vector<float> acc(row_bytes);
          int j0 = static_cast<int>(c) * chunk, j1 = std::min(oy1 - oy0, j0 + chunk);
          for (int j = j0; j < j1; ++j) {
            std::uint8_t* dst = out.at(0, oy0 + j);
            const std::size_t rj = static_cast<std::size_t>(j);
            if (rows.identity && cols.identity) {
              const std::uint8_t* s = src.data() + static_cast<std::size_t>(rows.first[rj]) * row_bytes;
              for (int i = 0; i < ow; ++i) std::memcpy(dst + 3 * i, s + 3 * cols.first[static_cast<std::size_t>(i)], 3);
              continue;
            }
            std::fill(acc.begin(), acc.end(), 0.f);
            // Only the source columns the output row uses.
            const std::size_t c_lo = static_cast<std::size_t>(cols.first.front()) * 3;
            const std::size_t c_hi =
                static_cast<std::size_t>(cols.first.back() + cols.count.back()) * 3;
            for (int k = 0; k < rows.count[rj]; ++k) {
              const float wk = rows.weight[rows.at[rj] + static_cast<std::size_t>(k)];
              const std::uint8_t* s = src.data() + static_cast<std::size_t>(rows.first[rj] + k) * row_bytes;
              for (std::size_t b = c_lo; b < c_hi; ++b) acc[b] += wk * s[b];
            }
            for (int i = 0; i < ow; ++i) {
              const std::size_t ri = static_cast<std::size_t>(i);
              float r = 0, g = 0, bl = 0;
              const float* a = acc.data() + static_cast<std::size_t>(cols.first[ri]) * 3;
              const float* wt = cols.weight.data() + cols.at[ri];
              for (int k = 0; k < cols.count[ri]; ++k) {
                r += wt[k] * a[3 * k];
                g += wt[k] * a[3 * k + 1];
                bl += wt[k] * a[3 * k + 2];
              }
              dst[3 * i] = static_cast<std::uint8_t>(std::clamp(r + 0.5f, 0.f, 255.f));
              dst[3 * i + 1] = static_cast<std::uint8_t>(std::clamp(g + 0.5f, 0.f, 255.f));
              dst[3 * i + 2] = static_cast<std::uint8_t>(std::clamp(bl + 0.5f, 0.f, 255.f));
            }
          }
        },
        decode_threads());
  }
  impl_->pixels_out += out.pixel_count();
  return out;
}

Image Slide::thumbnail(int max_side) const {
  if (max_side <= 0) throw std::invalid_argument("thumbnail size " + std::to_string(max_side) + " is not positive");
  double longest = static_cast<double>(std::max(width(), height()));
  double ds = std::max(1.0, longest / max_side * (1 + 1e-12));
  return read(0, 0, width(), height(), ds);
}

ReadStats Slide::stats() const {
  ReadStats s;
  s.reads_fast = impl_->reads_fast;
  s.reads_openslide = impl_->reads_openslide;
  s.tiles_decoded = impl_->tiles_decoded;
  s.tiles_fallback = impl_->tiles_fallback;
  s.pixels_decoded = impl_->pixels_decoded;
  s.pixels_openslide = impl_->pixels_openslide;
  s.pixels_out = impl_->pixels_out;
  return s;
}

void Slide::reset_stats() const {
  impl_->reads_fast = 0;
  impl_->reads_openslide = 0;
  impl_->tiles_decoded = 0;
  impl_->tiles_fallback = 0;
  impl_->pixels_decoded = 0;
  impl_->pixels_openslide = 0;
  impl_->pixels_out = 0;
}

bool Slide::failed() const { return impl_->failed; }

SlideCache::SlideCache(std::size_t capacity) : capacity_(std::max<std::size_t>(1, capacity)) {}

std::shared_ptr<const Slide> SlideCache::get(const fs::path& path) {
  std::error_code ec;
  const std::string key = fs::absolute(path, ec).lexically_normal().string();
  const auto size = fs::file_size(path, ec);
  const auto mtime = fs::last_write_time(path, ec);
  {
    std::lock_guard lock(mutex_);
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      if (!ec && !it->second.slide->failed() && it->second.file_size == size && it->second.mtime == mtime) {
        it->second.last_use = ++clock_;
        return it->second.slide;
      }
      entries_.erase(it);
    }
  }
  // Opened outside the lock: opening a slide can take a while.
  auto slide = std::make_shared<const Slide>(Slide::open(path));
  std::lock_guard lock(mutex_);
  auto it = entries_.find(key);
  if (it != entries_.end() && !it->second.slide->failed()) {
    it->second.last_use = ++clock_;
    return it->second.slide;
  }
  while (entries_.size() >= capacity_) {
    auto oldest = std::min_element(entries_.begin(), entries_.end(),
                                   [](const auto& a, const auto& b) { return a.second.last_use < b.second.last_use; });
    entries_.erase(oldest);
  }
  entries_[key] = Entry{slide, size, mtime, ++clock_};
  return slide;
}

void SlideCache::evict(const fs::path& path) {
  std::error_code ec;
  const std::string key = fs::absolute(path, ec).lexically_normal().string();
  std::lock_guard lock(mutex_);
  entries_.erase(key);
}

void SlideCache::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

std::size_t SlideCache::size() const {
  std::lock_guard lock(mutex_);
  return entries_.size();
}

std::filesystem::path prepare_slide_files(const std::vector<std::filesystem::path>& files) {
  namespace fs = std::filesystem;
  static const char* const preferred[] = {".mrxs", ".vms", ".vmu", ".scn", ".svs", ".ndpi",
                                          ".bif",  ".tif", ".tiff", ".svslide", ".dcm"};
  auto lower_ext = [](const fs::path& f) {
    std::string e = f.extension().string();
    std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return e;
  };
  if (files.empty()) throw SlideError(SlideError::Kind::io, "the slide has no files");
  fs::path main = files.front();
  [&] {
    for (const char* ext : preferred)
      for (const auto& f : files)
        if (lower_ext(f) == ext) {
          main = f;
          return;
        }
  }();
  if (lower_ext(main) == ".mrxs" && files.size() > 1) {
    const fs::path dir = main.parent_path() / main.stem();
    std::error_code ec;
    fs::create_directory(dir, ec);
    if (ec) throw SlideError(SlideError::Kind::io, dir.string() + ": " + ec.message());
    for (const auto& f : files) {
      if (f == main || f.parent_path() != main.parent_path()) continue;
      const fs::path link = dir / f.filename();
      if (fs::exists(fs::symlink_status(link, ec))) continue;
      fs::create_symlink(fs::path("..") / f.filename(), link, ec);
      if (ec) throw SlideError(SlideError::Kind::io, link.string() + ": " + ec.message());
    }
  }
  return main;
}

}  // namespace iaserve::slide
