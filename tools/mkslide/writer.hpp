#pragma once
// Writes a Scene as a tiled, pyramidal TIFF-family file, tile by tile in
// bounded memory (one row of tiles per level at a time).
#include <filesystem>
#include <string>

#include <boost/json/object.hpp>

#include "scene.hpp"

namespace mkslide {

enum class Format { svs, tiff };

struct WriteOptions {
  Format format = Format::svs;
  int tile_size = 256;
  int quality = 80;
  bool rgb_jpeg = false;     // JPEG tiles holding RGB (photometric RGB, no Adobe marker), as some Aperio scanners write
  int bigtiff = -1;          // -1 auto (when the file may pass 4 GB), 0 never, 1 always
  unsigned threads = 0;      // 0: hardware concurrency
  std::string label_text = "IASERVE";
};

// Returns facts about what was written (levels, associated images, bytes) for the truth file.
boost::json::object write_slide(const Scene& scene, const std::filesystem::path& out, const WriteOptions& options);

}  // namespace mkslide
