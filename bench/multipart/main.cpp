// bench_multipart: how fast the multipart parser goes through a slide
// download held in memory, as GB/s and as a ratio to memcpy of the same bytes
// in the same run (same feed size, same source buffer).
//
// The stream is one buffer of N parts (random bytes, realistic headers, no
// closing delimiter) repeated until --bytes, then the closing delimiter: a
// real multipart stream of --bytes, every repeat adding N more parts.
#include "iaapi/multipart.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Stream {
  std::string buffer;            // one repeat: N parts
  std::uint64_t data_bytes = 0;  // part payload bytes in one repeat
};

Stream make_stream(std::size_t size, int parts, const std::string& boundary) {
  Stream s;
  std::mt19937_64 rng(42);
  const std::size_t per_part = size / static_cast<std::size_t>(parts);
  s.buffer.reserve(size + 4096);
  for (int i = 0; i < parts; ++i) {
    s.buffer += "\r\n--" + boundary + "\r\nContent-Type: application/octet-stream\r\n";
    s.buffer += "Content-Disposition: attachment; filename=\"Data" + std::to_string(10000 + i) +
                ".dat\"\r\n\r\n";
    const std::size_t start = s.buffer.size();
    s.buffer.resize(start + per_part);
    for (std::size_t j = 0; j + 8 <= per_part; j += 8) {
      const std::uint64_t r = rng();
      std::memcpy(&s.buffer[start + j], &r, 8);
    }
    s.data_bytes += per_part;
  }
  return s;
}

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t total = 1ull << 30;
  std::size_t buffer_size = 64u << 20;
  std::size_t feed = 64u << 10;
  int parts = 16;
  int rounds = 3;
  CLI::App app{"Multipart parser throughput against memcpy of the same bytes"};
  app.add_option("--bytes", total, "Bytes of multipart stream to parse (default 1 GiB)");
  app.add_option("--buffer", buffer_size,
                 "Size of the generated buffer that is repeated (default 64 MiB)");
  app.add_option("--feed", feed, "Bytes per feed() call and per memcpy (default 64 KiB)")
      ->check(CLI::PositiveNumber);
  app.add_option("--parts", parts, "Parts per buffer (default 16)")->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "Runs of each; the best is reported (default 3)")
      ->check(CLI::PositiveNumber);
  app.set_version_flag("--version", "bench_multipart 1");
  CLI11_PARSE(app, argc, argv);

  const std::string boundary = "----=_Part_0_1234567890.1700000000000";
  const Stream s = make_stream(std::max<std::size_t>(buffer_size, static_cast<std::size_t>(parts)),
                               parts, boundary);
  const std::uint64_t repeats =
      std::max<std::uint64_t>(1, (total + s.buffer.size() - 1) / s.buffer.size());
  const std::uint64_t bytes = repeats * s.buffer.size();
  const std::string close = "\r\n--" + boundary + "--\r\n";

  // memcpy of every feed-sized piece of the buffer into one destination.
  std::vector<char> dst(feed);
  unsigned sink = 0;
  double best_copy = 1e30;
  for (int r = 0; r < rounds; ++r) {
    const auto t0 = Clock::now();
    for (std::uint64_t rep = 0; rep < repeats; ++rep) {
      for (std::size_t off = 0; off < s.buffer.size(); off += feed) {
        const std::size_t n = std::min(feed, s.buffer.size() - off);
        std::memcpy(dst.data(), s.buffer.data() + off, n);
        sink += static_cast<unsigned char>(dst[n - 1]);
      }
    }
    best_copy = std::min(best_copy, seconds(Clock::now() - t0));
  }

  double best_parse = 1e30;
  std::uint64_t got_bytes = 0, got_parts = 0, ends = 0;
  for (int r = 0; r < rounds; ++r) {
    got_bytes = got_parts = ends = 0;
    const auto t0 = Clock::now();
    iaserve::iaapi::MultipartParser p(
        boundary, {[&](const iaserve::iaapi::PartHeaders&) { ++got_parts; },
                   [&](std::span<const char> d) { got_bytes += d.size(); }, [&] { ++ends; }});
    for (std::uint64_t rep = 0; rep < repeats; ++rep) {
      for (std::size_t off = 0; off < s.buffer.size(); off += feed) {
        const std::size_t n = std::min(feed, s.buffer.size() - off);
        p.feed(std::span<const char>(s.buffer.data() + off, n));
      }
    }
    p.feed(std::string_view(close));
    p.finish();
    best_parse = std::min(best_parse, seconds(Clock::now() - t0));
  }

  const std::uint64_t want_parts = repeats * static_cast<std::uint64_t>(parts);
  const double gb = static_cast<double>(bytes) / 1e9;
  std::printf(
      "multipart stream: %.3f GiB = %llu parts (%d parts x %llu repeats of a %.1f MiB buffer), "
      "feeds of %zu B\n",
      static_cast<double>(bytes) / (1u << 30), static_cast<unsigned long long>(want_parts), parts,
      static_cast<unsigned long long>(repeats), static_cast<double>(s.buffer.size()) / (1u << 20),
      feed);
  std::printf("  parser: %8.4f s  %7.2f GB/s\n", best_parse, gb / best_parse);
  std::printf("  memcpy: %8.4f s  %7.2f GB/s\n", best_copy, gb / best_copy);
  std::printf("  ratio parser/memcpy: %.2f (target >= 0.5)  [best of %d, checksum %u]\n",
              best_copy / best_parse, rounds, sink & 0xff);
  if (got_parts != want_parts || ends != want_parts || got_bytes != repeats * s.data_bytes) {
    std::fprintf(stderr, "bench_multipart: parsed %llu parts / %llu bytes, expected %llu / %llu\n",
                 static_cast<unsigned long long>(got_parts),
                 static_cast<unsigned long long>(got_bytes),
                 static_cast<unsigned long long>(want_parts),
                 static_cast<unsigned long long>(repeats * s.data_bytes));
    return 2;
  }
  return 0;
}
