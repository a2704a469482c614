// The multipart parser on its own: realistic bodies split at every offset,
// malformed bodies with their exact error text, random chunkings and
// mutations, and the header-value helpers.
#include "iaapi/multipart.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace iaserve::iaapi;

namespace {

struct File {
  std::string name;
  std::string content;
  bool operator==(const File&) const = default;
};

// Pseudo-random bytes that also contain CRs, LFs, dashes and near-delimiters.
std::string binary(std::size_t n, unsigned seed, const std::string& boundary) {
  std::mt19937 rng(seed);
  std::string s;
  while (s.size() < n) {
    const unsigned r = rng() % 100;
    if (r == 0)
      s += "\r\n--" + boundary.substr(0, boundary.size() - 1);  // almost a delimiter
    else if (r == 1)
      s += "\r\n--";
    else if (r == 2)
      s += "\r\n";
    else
      s += static_cast<char>(rng() & 0xff);
  }
  s.resize(n);
  return s;
}

std::string body_of(const std::vector<File>& files, const std::string& boundary,
                    const std::string& preamble = "", const std::string& epilogue = "") {
  std::string b = preamble;
  for (auto& f : files) {
    b += (b.empty() ? "--" : "\r\n--") + boundary + "\r\n";
    b += "Content-Type: application/octet-stream\r\n";
    b += "Content-Disposition: attachment; filename=\"" + f.name + "\"\r\n\r\n";
    b += f.content;
  }
  b += "\r\n--" + boundary + "--" + epilogue;
  return b;
}

std::vector<File> realistic(const std::string& boundary) {
  return {{"CMU-1.mrxs", "mrxs index\r\nline two\r\n"},
          {"Slidedat.ini", "[GENERAL]\r\nSLIDE_VERSION=01.03\r\n--not a delimiter\r\n"},
          {"Data0000.dat", binary(3000, 1, boundary)},
          {"empty.dat", ""},
          {"Data0001.dat", binary(700, 2, boundary)}};
}

// Feeds `body` in the given pieces; the files it describes.
std::vector<File> parse(std::string_view body, const std::string& boundary,
                        const std::vector<std::size_t>& cuts) {
  std::vector<File> files;
  bool open = false;
  MultipartParser p(boundary, {[&](const PartHeaders& h) {
                                 REQUIRE_FALSE(open);
                                 open = true;
                                 // Mutated bodies may lose or garble the header.
                                 const auto cd = h.get("Content-Disposition").value_or("");
                                 std::optional<std::string> name;
                                 try {
                                   name = disposition_filename(cd);
                                 } catch (const MultipartError&) {
                                 }
                                 files.push_back({name.value_or("?"), ""});
                               },
                               [&](std::span<const char> s) {
                                 REQUIRE(open);
                                 REQUIRE(!s.empty());
                                 files.back().content.append(s.data(), s.size());
                               },
                               [&] {
                                 REQUIRE(open);
                                 open = false;
                               }});
  std::size_t at = 0;
  for (std::size_t c : cuts) {
    p.feed(body.substr(at, c - at));
    at = c;
  }
  p.feed(body.substr(at));
  p.finish();
  REQUIRE_FALSE(open);
  return files;
}

std::string error_of(std::string_view body, const std::string& boundary, std::size_t piece = 0) {
  try {
    MultipartParser p(boundary, {[](const PartHeaders&) {}, [](std::span<const char>) {}, [] {}});
    if (piece == 0) {
      p.feed(body);
    } else {
      for (std::size_t i = 0; i < body.size(); i += piece) p.feed(body.substr(i, piece));
    }
    p.finish();
  } catch (const MultipartError& e) {
    return e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("multipart: a realistic body split in two at every offset gives the same files",
          "[multipart]") {
  for (std::string boundary : {"simple-boundary", "----=_Part_0_1234567.1700000000000", "b"}) {
    const auto files = realistic(boundary);
    const std::string body = body_of(files, boundary, "This is a preamble.\r\n", "\r\nepilogue");
    REQUIRE(parse(body, boundary, {}) == files);
    for (std::size_t cut = 0; cut <= body.size(); ++cut) {
      INFO("boundary " << boundary << ", cut at " << cut);
      REQUIRE(parse(body, boundary, {cut}) == files);
    }
  }
}

TEST_CASE("multipart: byte by byte, and three-way splits around every delimiter", "[multipart]") {
  const std::string boundary = "XyZ";
  const auto files = realistic(boundary);
  const std::string body = body_of(files, boundary);
  std::vector<std::size_t> every;
  for (std::size_t i = 1; i < body.size(); ++i) every.push_back(i);
  REQUIRE(parse(body, boundary, every) == files);
  for (std::size_t pos = body.find("\r\n--XyZ"); pos != std::string::npos;
       pos = body.find("\r\n--XyZ", pos + 1)) {
    for (std::size_t a = pos; a < pos + 9 && a <= body.size(); ++a)
      for (std::size_t b = a; b < pos + 10 && b <= body.size(); ++b)
        REQUIRE(parse(body, boundary, {a, b}) == files);
  }
}

TEST_CASE("multipart: first delimiter without preamble, padding after delimiters, no headers",
          "[multipart]") {
  const std::string body =
      "--b \t\r\nContent-Disposition: attachment; filename=a\r\n\r\nA\r\n--b\r\n"
      "Content-Disposition: attachment;\r\n filename=\"folded.txt\"\r\n\r\nBB\r\n--b--";
  const auto files = parse(body, "b", {});
  REQUIRE(files == std::vector<File>{{"a", "A"}, {"folded.txt", "BB"}});

  std::size_t parts = 0;
  std::string data;
  MultipartParser p("b",
                    {[&](const PartHeaders& h) {
                       ++parts;
                       CHECK(h.fields.empty());
                     },
                     [&](std::span<const char> s) { data.append(s.data(), s.size()); }, [] {}});
  p.feed(std::string_view("--b\r\n\r\nno headers\r\n--b--\r\n"));
  p.finish();
  CHECK(parts == 1);
  CHECK(data == "no headers");
  CHECK(p.done());
}

TEST_CASE("multipart: malformed bodies end with an exact error", "[multipart]") {
  const std::string ok = "--b\r\nContent-Disposition: attachment; filename=a\r\n\r\nAAAA\r\n--b--";
  CHECK(error_of(ok, "b") == "no error");
  CHECK(error_of(ok.substr(0, ok.size() - 2), "b") ==
        "multipart: stream ended right after delimiter 2 (no closing \"--\")");
  CHECK(error_of(ok.substr(0, 55), "b") ==
        "multipart: stream ended inside the body of part 1 (no closing delimiter)");
  CHECK(error_of(ok.substr(0, 20), "b") == "multipart: stream ended inside the headers of part 1");
  CHECK(error_of("", "b") ==
        "multipart: stream ended before the first delimiter \"--b\" (0 bytes)");
  CHECK(error_of("garbage without any delimiter", "b") ==
        "multipart: stream ended before the first delimiter \"--b\" (29 bytes)");
  CHECK(error_of(std::string(70000, 'x'), "b", 1000) ==
        "multipart: no delimiter \"--b\" in the first 65536 bytes");
  CHECK(error_of("--bX\r\n\r\n", "b") ==
        "multipart: unexpected byte \"X\" after delimiter 1 (expected CRLF or \"--\")");
  CHECK(error_of("--b-X", "b") ==
        "multipart: unexpected byte \"X\" after \"-\" of delimiter 1 (expected \"--\")");
  CHECK(error_of("--b\rX", "b") ==
        "multipart: unexpected byte \"X\" after CR of delimiter 1 (expected LF)");
  CHECK(error_of("--b\r\nno colon here\r\n\r\nx\r\n--b--", "b") ==
        "multipart: part 1: header line without a colon: \"no colon here\"");
  CHECK(error_of("--b\r\n" + std::string(20000, 'h') + "\r\n\r\n", "b", 4096) ==
        "multipart: headers of part 1 exceed 16384 bytes");
  CHECK_THROWS_WITH(MultipartParser("", {}),
                    "multipart: boundary must have 1 to 200 characters, got 0");
}

TEST_CASE("multipart: random chunkings and mutations never crash", "[multipart]") {
  const std::string boundary = "rnd-boundary";
  const auto files = realistic(boundary);
  const std::string body = body_of(files, boundary, "pre", "post");
  std::mt19937 rng(20261123);
  int ok = 0, errors = 0;
  for (int round = 0; round < 1500; ++round) {
    std::string b = body;
    const bool mutate = round % 3 != 0;
    if (mutate) {
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const std::size_t at = rng() % b.size();
        switch (rng() % 4) {
          case 0:
            b[at] = static_cast<char>(rng() & 0xff);
            break;
          case 1:
            b.erase(at, 1 + rng() % 16);
            break;
          case 2:
            b.insert(at, std::string(1 + rng() % 8, "\r\n-b"[rng() % 4]));
            break;
          default:
            b.resize(at);
            break;
        }
        if (b.empty()) b = "x";
      }
    }
    std::vector<std::size_t> cuts;
    for (std::size_t at = 0;;) {
      at += 1 + rng() % 64;
      if (at >= b.size()) break;
      cuts.push_back(at);
    }
    // Where the feeds end must not change the outcome: compare with one feed.
    std::optional<std::vector<File>> whole;
    std::string whole_error;
    try {
      whole = parse(b, boundary, {});
    } catch (const MultipartError& e) {
      whole_error = e.what();
    }
    try {
      const auto got = parse(b, boundary, cuts);
      ++ok;
      REQUIRE(whole);
      REQUIRE(got == *whole);
      if (!mutate) REQUIRE(got == files);
    } catch (const MultipartError& e) {
      ++errors;
      REQUIRE(std::string(e.what()).starts_with("multipart: "));
      REQUIRE(e.what() == whole_error);
    }
  }
  CHECK(ok >= 500);  // every unmutated round at least
  CHECK(errors > 0);
}

TEST_CASE("multipart: header values, boundaries and file names", "[multipart]") {
  CHECK(multipart_boundary("multipart/related; boundary=abc") == "abc");
  CHECK(multipart_boundary(
            "multipart/related; type=\"application/octet-stream\"; boundary=\"a b;c\"") == "a b;c");
  CHECK(multipart_boundary("Multipart/Related;BOUNDARY=\"q\\\"x\"") == "q\"x");
  CHECK_THROWS_WITH(multipart_boundary("multipart/related"),
                    "Content-Type \"multipart/related\" has no boundary parameter");
  CHECK_THROWS_WITH(multipart_boundary("multipart/related; boundary=\"\""),
                    "Content-Type \"multipart/related; boundary=\\\"\\\"\" has an empty boundary");
  CHECK_THROWS_WITH(
      multipart_boundary("multipart/related; boundary=\"abc"),
      "header value \"multipart/related; boundary=\\\"abc\": unterminated quoted string");

  CHECK(disposition_filename("attachment; filename=\"CMU-1.svs\"") == "CMU-1.svs");
  CHECK(disposition_filename("attachment; filename=plain.svs") == "plain.svs");
  CHECK(disposition_filename(
            "attachment; filename=\"fallback.svs\"; filename*=UTF-8''sl%C3%A4de%20one.svs") ==
        "sl\xc3\xa4"
        "de one.svs");
  CHECK(disposition_filename("attachment; filename*=iso-8859-1'en'%E4.svs") == "\xc3\xa4.svs");
  CHECK(disposition_filename("attachment") == std::nullopt);
  CHECK_THROWS_WITH(disposition_filename("attachment; filename*=UTF-8''bad%zz"),
                    "filename* \"UTF-8''bad%zz\": bad percent escape");
  CHECK_THROWS_WITH(disposition_filename("attachment; filename*=koi8-r''x"),
                    "filename* \"koi8-r''x\": unsupported charset \"koi8-r\"");

  CHECK(safe_file_name("CMU-1.svs") == "CMU-1.svs");
  CHECK(safe_file_name("a/b/c.svs") == "c.svs");
  CHECK(safe_file_name("../../etc/passwd") == "passwd");
  CHECK(safe_file_name("C:\\slides\\x.ndpi") == "x.ndpi");
  CHECK_THROWS_WITH(safe_file_name(".."), "unsafe file name \"..\": not a file name");
  CHECK_THROWS_WITH(safe_file_name("a/."), "unsafe file name \"a/.\": not a file name");
  CHECK_THROWS_WITH(safe_file_name(""), "unsafe file name \"\": empty");
  CHECK_THROWS_WITH(safe_file_name("dir/"), "unsafe file name \"dir/\": empty");
  CHECK_THROWS_WITH(safe_file_name("a\nb"),
                    "unsafe file name \"a\\x0ab\": contains a control character");
  CHECK_THROWS_WITH(safe_file_name(std::string(251, 'n')),
                    Catch::Matchers::EndsWith(": longer than 250 bytes"));
  CHECK_THROWS_WITH(safe_file_name(".iaserve-download"),
                    "unsafe file name \".iaserve-download\": reserved for the download manifest");
  CHECK_THROWS_WITH(safe_file_name("x.svs.part"),
                    "unsafe file name \"x.svs.part\": reserved for unfinished downloads (.part)");
}
