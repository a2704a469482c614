#include "worker/slide/image_io.hpp"

#include <png.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <string>

namespace iaserve::slide {

namespace {

struct TjHandle {
  tjhandle h;
  explicit TjHandle(tjhandle handle) : h(handle) {
    if (!h) throw std::runtime_error(std::string("turbojpeg init: ") + tjGetErrorStr2(nullptr));
  }
  ~TjHandle() { tjDestroy(h); }
  TjHandle(const TjHandle&) = delete;
  TjHandle& operator=(const TjHandle&) = delete;
};

void check_image(const Image& image, const char* what) {
  if (image.empty() || image.rgb.size() != image.pixel_count() * 3)
    throw std::invalid_argument(std::string(what) + ": image " + std::to_string(image.width) + "x" +
                                std::to_string(image.height) + " is empty or inconsistent");
}

std::vector<std::uint8_t> read_file(const std::filesystem::path& path, std::uintmax_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open");
  in.seekg(0, std::ios::end);
  auto size = static_cast<std::uintmax_t>(in.tellg());
  if (size > limit) throw std::runtime_error(path.string() + ": larger than " + std::to_string(limit) + " bytes");
  in.seekg(0);
  std::vector<std::uint8_t> bytes(size);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (!in) throw std::runtime_error(path.string() + ": read failed");
  return bytes;
}

// Whole or not at all, under a temporary name of its own: a reader (the
// status page) never sees half a picture, and two jobs writing the same
// slide's picture at once do not mix their bytes.
void write_file(const std::filesystem::path& path, const std::vector<std::uint8_t>& bytes) {
  static std::atomic<unsigned> counter{0};
  std::filesystem::path tmp = path;
  tmp += "." + std::to_string(::getpid()) + "." + std::to_string(counter++) + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      std::filesystem::remove(tmp, ec);
      throw std::runtime_error(path.string() + ": write failed");
    }
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace

std::vector<std::uint8_t> encode_jpeg(const Image& image, int quality) {
  check_image(image, "encode_jpeg");
  if (quality < 1 || quality > 100)
    throw std::invalid_argument("JPEG quality " + std::to_string(quality) + " out of range [1,100]");
  TjHandle tj(tjInitCompress());
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  int samp = quality >= 90 ? TJSAMP_444 : TJSAMP_420;
  if (tjCompress2(tj.h, image.rgb.data(), image.width, 0, image.height, TJPF_RGB, &buf, &size, samp, quality,
                  0) != 0) {
    std::string err = tjGetErrorStr2(tj.h);
    tjFree(buf);
    throw std::runtime_error("encode_jpeg: " + err);
  }
  std::vector<std::uint8_t> out(buf, buf + size);
  tjFree(buf);
  return out;
}

Image decode_jpeg(std::span<const std::uint8_t> bytes, int max_width, int max_height) {
  TjHandle tj(tjInitDecompress());
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj.h, bytes.data(), static_cast<unsigned long>(bytes.size()), &w, &h, &subsamp,
                          &colorspace) != 0)
    throw std::runtime_error(std::string("decode_jpeg: header: ") + tjGetErrorStr2(tj.h));
  if (w <= 0 || h <= 0 || static_cast<double>(w) * h > double(1u << 30))
    throw std::runtime_error("decode_jpeg: image " + std::to_string(w) + "x" + std::to_string(h) + " too large");
  if ((max_width > 0 && w > max_width) || (max_height > 0 && h > max_height))
    throw std::runtime_error("decode_jpeg: image " + std::to_string(w) + "x" + std::to_string(h) + " larger than " +
                             std::to_string(max_width) + "x" + std::to_string(max_height));
  Image out(w, h);
  if (tjDecompress2(tj.h, bytes.data(), static_cast<unsigned long>(bytes.size()), out.rgb.data(), w, 0, h, TJPF_RGB,
                    0) != 0 &&
      tjGetErrorCode(tj.h) == TJERR_FATAL)
    throw std::runtime_error(std::string("decode_jpeg: ") + tjGetErrorStr2(tj.h));
  return out;
}

void write_jpeg(const std::filesystem::path& path, const Image& image, int quality) {
  write_file(path, encode_jpeg(image, quality));
}

std::vector<std::uint8_t> encode_png(const Image& image) {
  check_image(image, "encode_png");
  png_image pi;
  std::memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  pi.width = static_cast<png_uint_32>(image.width);
  pi.height = static_cast<png_uint_32>(image.height);
  pi.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_get_memory_size(pi, size, 0, image.rgb.data(), 0, nullptr))
    throw std::runtime_error(std::string("encode_png: ") + pi.message);
  std::vector<std::uint8_t> out(size);
  if (!png_image_write_to_memory(&pi, out.data(), &size, 0, image.rgb.data(), 0, nullptr))
    throw std::runtime_error(std::string("encode_png: ") + pi.message);
  out.resize(size);
  return out;
}

Image decode_png(std::span<const std::uint8_t> bytes) {
  png_image pi;
  std::memset(&pi, 0, sizeof pi);
  pi.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&pi, bytes.data(), bytes.size()))
    throw std::runtime_error(std::string("decode_png: ") + pi.message);
  if (static_cast<double>(pi.width) * pi.height > double(1u << 30)) {
    png_image_free(&pi);
    throw std::runtime_error("decode_png: image too large");
  }
  pi.format = PNG_FORMAT_RGB;
  Image out(static_cast<int>(pi.width), static_cast<int>(pi.height));
  png_color white{255, 255, 255};
  if (!png_image_finish_read(&pi, &white, out.rgb.data(), 0, nullptr))
    throw std::runtime_error(std::string("decode_png: ") + pi.message);
  return out;
}

void write_png(const std::filesystem::path& path, const Image& image) { write_file(path, encode_png(image)); }

Image read_image(const std::filesystem::path& path) {
  auto bytes = read_file(path, 512ull << 20);
  if (bytes.size() >= 8 && bytes[0] == 0x89 && bytes[1] == 'P' && bytes[2] == 'N' && bytes[3] == 'G')
    return decode_png(bytes);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8) return decode_jpeg(bytes);
  throw std::runtime_error(path.string() + ": neither PNG nor JPEG");
}

Image resize(const Image& image, int width, int height, Filter filter) {
  check_image(image, "resize");
  if (width <= 0 || height <= 0)
    throw std::invalid_argument("resize to " + std::to_string(width) + "x" + std::to_string(height) + " is empty");
  Image out(width, height);
  const double sx = static_cast<double>(image.width) / width, sy = static_cast<double>(image.height) / height;
  if (filter == Filter::bilinear || (sx < 1 && sy < 1)) {
    for (int y = 0; y < height; ++y) {
      double fy = filter == Filter::bilinear ? std::clamp((y + 0.5) * sy - 0.5, 0.0, image.height - 1.0)
                                             : std::min(image.height - 1.0, std::floor((y + 0.5) * sy));
      int y0 = static_cast<int>(fy), y1 = std::min(image.height - 1, y0 + 1);
      double wy = fy - y0;
      for (int x = 0; x < width; ++x) {
        double fx = filter == Filter::bilinear ? std::clamp((x + 0.5) * sx - 0.5, 0.0, image.width - 1.0)
                                               : std::min(image.width - 1.0, std::floor((x + 0.5) * sx));
        int x0 = static_cast<int>(fx), x1 = std::min(image.width - 1, x0 + 1);
        double wx = fx - x0;
        for (int c = 0; c < 3; ++c) {
          double v = (1 - wy) * ((1 - wx) * image.at(x0, y0)[c] + wx * image.at(x1, y0)[c]) +
                     wy * ((1 - wx) * image.at(x0, y1)[c] + wx * image.at(x1, y1)[c]);
          out.at(x, y)[c] = static_cast<std::uint8_t>(std::lround(v));
        }
      }
    }
    return out;
  }
  // Box: each output pixel averages the source area it covers (fractional edges weighted).
  std::vector<double> acc(static_cast<std::size_t>(width) * 3);
  for (int y = 0; y < height; ++y) {
    std::fill(acc.begin(), acc.end(), 0.0);
    double a = y * sy, b = (y + 1) * sy;
    for (int k = static_cast<int>(a); k < std::min(image.height, static_cast<int>(std::ceil(b))); ++k) {
      double wk = std::min<double>(b, k + 1) - std::max<double>(a, k);
      if (wk <= 0) continue;
      for (int x = 0; x < width; ++x) {
        double ca = x * sx, cb = (x + 1) * sx;
        for (int m = static_cast<int>(ca); m < std::min(image.width, static_cast<int>(std::ceil(cb))); ++m) {
          double wm = (std::min<double>(cb, m + 1) - std::max<double>(ca, m)) * wk;
          if (wm <= 0) continue;
          const std::uint8_t* p = image.at(m, k);
          for (int c = 0; c < 3; ++c) acc[static_cast<std::size_t>(x) * 3 + static_cast<std::size_t>(c)] += wm * p[c];
        }
      }
    }
    const double area = sx * sy;
    for (int x = 0; x < width; ++x)
      for (int c = 0; c < 3; ++c)
        out.at(x, y)[c] = static_cast<std::uint8_t>(
            std::clamp(std::lround(acc[static_cast<std::size_t>(x) * 3 + static_cast<std::size_t>(c)] / area), 0L, 255L));
  }
  return out;
}

Image crop(const Image& image, int x, int y, int w, int h) {
  int x0 = std::max(0, x), y0 = std::max(0, y);
  int x1 = std::min(image.width, x + std::max(0, w)), y1 = std::min(image.height, y + std::max(0, h));
  if (x0 >= x1 || y0 >= y1)
    throw std::out_of_range("crop " + std::to_string(w) + "x" + std::to_string(h) + "+" + std::to_string(x) + "+" +
                            std::to_string(y) + " outside image " + std::to_string(image.width) + "x" +
                            std::to_string(image.height));
  Image out(x1 - x0, y1 - y0);
  for (int r = y0; r < y1; ++r) std::memcpy(out.at(0, r - y0), image.at(x0, r), static_cast<std::size_t>(x1 - x0) * 3);
  return out;
}

}  // namespace iaserve::slide
