#pragma once
// A whole-slide image opened through OpenSlide, with a fast path for tiled
// JPEG TIFF-family files (Aperio SVS, generic pyramidal TIFF): compressed
// tiles read straight from the file and decoded with libjpeg-turbo, DCT-scaled
// when a lower resolution is wanted, on a thread pool. Every format and every
// tile the fast path cannot handle goes through OpenSlide.
//
// A Slide is safe to read from several threads at once. OpenSlide's error
// state is terminal: once a call fails, every later call throws
// SlideError(broken) and failed() is true, so a cache can drop the handle.
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "worker/slide/image.hpp"

namespace iaserve::slide {

class SlideError : public std::runtime_error {
 public:
  enum class Kind {
    not_a_slide,  // no format recognises the file (a text file, say)
    broken,       // recognised, but OpenSlide failed opening or reading it
    unsupported,  // a request the file cannot serve (e.g. no such associated image)
    io,           // missing or unreadable file
  };
  SlideError(Kind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

const char* to_string(SlideError::Kind kind);

// The file to open among the files of a (possibly multi-file) slide that a
// download put side by side in one folder. An MRXS slide's data files are
// looked for in <name>/ beside <name>.mrxs: they are linked there first (the
// flat files stay, for the download's own bookkeeping). Throws SlideError(io)
// when there are no files or a link cannot be made.
std::filesystem::path prepare_slide_files(const std::vector<std::filesystem::path>& files);

struct Size {
  std::int64_t width = 0;
  std::int64_t height = 0;
  bool operator==(const Size&) const = default;
};

// Which reader serves a read(): automatic picks the fast path when the level
// allows it; the other two force one reader (tests and benchmarks compare
// them). fast throws SlideError(unsupported) when the level has no fast path.
enum class Reader { automatic, openslide, fast };

// Counters since open (or reset_stats), summed over all threads.
struct ReadStats {
  std::uint64_t reads_fast = 0;           // read() calls served by the fast path
  std::uint64_t reads_openslide = 0;      // read() calls served by OpenSlide
  std::uint64_t tiles_decoded = 0;        // JPEG tiles decoded by the fast path
  std::uint64_t tiles_fallback = 0;       // fast-path tiles that went to OpenSlide instead
  std::uint64_t pixels_decoded = 0;       // pixels out of the JPEG decoder (after DCT scaling)
  std::uint64_t pixels_openslide = 0;     // pixels read through openslide_read_region
  std::uint64_t pixels_out = 0;           // pixels returned to callers
};

// A pyramid level the fast path can read: tiled, JPEG-compressed.
struct FastLevelInfo {
  int level = 0;
  int tile_width = 0;
  int tile_height = 0;
  int tiles_across = 0;
  int tiles_down = 0;
  bool rgb_jpeg = false;  // photometric RGB: JPEG data holds RGB, not YCbCr
};

class Slide {
 public:
  // Throws SlideError: io (missing/unreadable), not_a_slide, broken.
  static Slide open(const std::filesystem::path& path);

  Slide(Slide&&) noexcept;
  Slide& operator=(Slide&&) noexcept;
  ~Slide();

  const std::filesystem::path& path() const;
  std::string vendor() const;  // "aperio", "generic-tiff", ...
  std::int64_t width() const;
  std::int64_t height() const;
  int level_count() const;
  // Levels are checked: std::out_of_range "level 7 out of range [0,4)".
  Size level_size(int level) const;
  double level_downsample(int level) const;
  // The level OpenSlide would read for this downsample (largest level
  // downsample <= downsample).
  int best_level_for_downsample(double downsample) const;

  // Micrometres per level-0 pixel: openslide.mpp-x, else the TIFF
  // XResolution/ResolutionUnit of level 0 (px/cm or px/inch).
  std::optional<double> mpp() const;
  std::optional<double> mpp_y() const;
  std::optional<double> objective_power() const;
  const std::map<std::string, std::string>& properties() const;
  std::optional<std::string> property(const std::string& name) const;

  std::vector<std::string> associated_image_names() const;  // "label", "macro", "thumbnail", ...
  bool has_associated_image(const std::string& name) const;
  // Throws SlideError(unsupported) naming the image when absent.
  Image associated_image(const std::string& name) const;

  // The level-0 rectangle (x, y, w, h) at `downsample` (> 0): an image of
  // ceil(w/downsample) x ceil(h/downsample); outside the slide is white,
  // transparent pixels are composited over white. Throws std::invalid_argument
  // for empty or oversized requests (more than 2^31 output pixels).
  Image read(std::int64_t x, std::int64_t y, std::int64_t w, std::int64_t h, double downsample = 1.0,
             Reader reader = Reader::automatic) const;
  // The whole slide scaled to fit max_side (aspect kept, via read()).
  Image thumbnail(int max_side) const;

  // The fast path's description of a level, nullopt when OpenSlide serves it.
  std::optional<FastLevelInfo> fast_level(int level) const;

  // Compressed tiles of a fast-path level, each a complete JPEG stream
  // (JPEGTables spliced in), for the raw-decode baseline of the benchmarks.
  // Tiles are (col, row) of the level's grid; throws SlideError(unsupported)
  // when the level has no fast path.
  std::vector<std::vector<std::uint8_t>> raw_tiles(int level, const std::vector<std::pair<int, int>>& tiles) const;

  ReadStats stats() const;
  void reset_stats() const;
  // True once OpenSlide reported an error on this handle (it is then useless).
  bool failed() const;

  struct Impl;

 private:
  explicit Slide(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Threads the fast path decodes on (default: hardware concurrency). 1 decodes
// in the calling thread only. Takes effect for reads started afterwards.
void set_decode_threads(unsigned threads);
unsigned decode_threads();

// The raw libjpeg-turbo baseline: decodes complete JPEG streams (as from
// Slide::raw_tiles) at scale 1/scale_denom (1, 2, 4 or 8) into scratch
// buffers on `threads` threads (0: decode_threads()), nothing else. Returns
// the pixels decoded. Throws std::runtime_error on a corrupt stream.
std::uint64_t decode_tiles_raw(const std::vector<std::vector<std::uint8_t>>& tiles, int scale_denom,
                               unsigned threads = 0, bool rgb_jpeg = false);

// Open handles shared by path, bounded by count (least recently used goes
// first). A handle that failed, or whose file changed (size or mtime), is
// reopened on the next get().
class SlideCache {
 public:
  explicit SlideCache(std::size_t capacity = 16);
  // Throws SlideError like Slide::open.
  std::shared_ptr<const Slide> get(const std::filesystem::path& path);
  void evict(const std::filesystem::path& path);
  void clear();
  std::size_t size() const;

 private:
  struct Entry {
    std::shared_ptr<const Slide> slide;
    std::uintmax_t file_size = 0;
    std::filesystem::file_time_type mtime;
    std::uint64_t last_use = 0;
  };
  std::size_t capacity_;
  mutable std::mutex mutex_;
  std::map<std::string, Entry> entries_;
  std::uint64_t clock_ = 0;
};

}  // namespace iaserve::slide
