#pragma once
// The picture type every part of slide/ trades in: RGB8, interleaved, rows
// top to bottom, no padding.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace iaserve::slide {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;  // width * height * 3 bytes

  Image() = default;
  // A width x height picture filled with one grey value (255: white).
  Image(int w, int h, std::uint8_t fill = 255)
      : width(w), height(h), rgb(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3, fill) {}

  bool empty() const { return width <= 0 || height <= 0; }
  std::size_t pixel_count() const { return static_cast<std::size_t>(width) * static_cast<std::size_t>(height); }
  std::uint8_t* at(int x, int y) { return rgb.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3; }
  const std::uint8_t* at(int x, int y) const {
    return rgb.data() + (static_cast<std::size_t>(y) * static_cast<std::size_t>(width) + static_cast<std::size_t>(x)) * 3;
  }
};

}  // namespace iaserve::slide
