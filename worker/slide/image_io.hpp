#pragma once
// Encoding, decoding and simple geometry of Images: JPEG through TurboJPEG,
// PNG through libpng. Errors throw std::runtime_error naming the step.
#include <cstdint>
#include <filesystem>
#include <span>
#include <vector>

#include "worker/slide/image.hpp"

namespace iaserve::slide {

// quality 1..100 (std::invalid_argument otherwise); 4:2:0 subsampling below 90, 4:4:4 from 90.
std::vector<std::uint8_t> encode_jpeg(const Image& image, int quality = 85);
// max_width/max_height (when positive) refuse a larger image from its header,
// before anything is allocated: for JPEGs whose size someone else claims.
Image decode_jpeg(std::span<const std::uint8_t> bytes, int max_width = 0, int max_height = 0);
void write_jpeg(const std::filesystem::path& path, const Image& image, int quality = 85);

std::vector<std::uint8_t> encode_png(const Image& image);
Image decode_png(std::span<const std::uint8_t> bytes);
void write_png(const std::filesystem::path& path, const Image& image);
// Reads a .png, .jpg or .jpeg file by its content (bounded to 512 MB).
Image read_image(const std::filesystem::path& path);

enum class Filter {
  box,       // area average when shrinking (nearest when enlarging)
  bilinear,  // bilinear interpolation at pixel centres
};
Image resize(const Image& image, int width, int height, Filter filter = Filter::box);
// The part of (x, y, w, h) inside the image; throws std::out_of_range when empty.
Image crop(const Image& image, int x, int y, int w, int h);

}  // namespace iaserve::slide
