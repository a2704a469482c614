// libFuzzer target for the multipart parser and the header helpers the
// slide download runs on untrusted answers.
// Build: configure with clang and -DIASERVE_FUZZ=ON; run
//   fuzz_multipart tests/fuzz/corpus/multipart -max_len=65536
//
// Input: byte 0 picks the feed size (1..255, 0 = all at once), the rest is
// the body, parsed with boundary "b0und". Oracle: the parse fed in one piece
// and fed in pieces must agree (same parts, headers, data; or both fail),
// callbacks must pair up, and every file name that safe_file_name accepts
// must be one harmless path component.
#include "iaapi/multipart.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Trace {
  std::vector<std::string> events;  // "B<headers>", "D<data>" (joined), "E"
  bool failed = false;
};

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "fuzz_multipart: %s\n", what);
  std::abort();
}

void check_name(const std::string& cd) {
  try {
    const auto raw = iaserve::iaapi::disposition_filename(cd);
    if (!raw) return;
    const std::string name = iaserve::iaapi::safe_file_name(*raw);
    if (name.empty() || name == "." || name == ".." ||
        name.find_first_of("/\\") != std::string::npos || name.size() > 250)
      die("safe_file_name let an unsafe name through");
    for (unsigned char c : name)
      if (c < 0x20 || c == 0x7f) die("safe_file_name let a control character through");
  } catch (const iaserve::iaapi::MultipartError&) {
  }
}

Trace run(std::string_view body, std::size_t piece) {
  Trace t;
  bool open = false;
  iaserve::iaapi::MultipartParser p(
      "b0und",
      {[&](const iaserve::iaapi::PartHeaders& h) {
         if (open) die("part begun inside a part");
         open = true;
         std::string e = "B";
         for (auto& [n, v] : h.fields) e += n + ":" + v + "\n";
         if (auto cd = h.get("content-disposition")) check_name(*cd);
         t.events.push_back(std::move(e));
       },
       [&](std::span<const char> s) {
         if (!open) die("data outside a part");
         if (s.empty()) die("empty data span");
         if (t.events.back()[0] != 'D') t.events.push_back("D");
         t.events.back().append(s.data(), s.size());
       },
       [&] {
         if (!open) die("part ended twice");
         open = false;
         t.events.push_back("E");
       }},
      {.max_header_bytes = 512, .max_preamble_bytes = 4096, .max_parts = 64});
  try {
    if (piece == 0) {
      p.feed(body);
    } else {
      for (std::size_t i = 0; i < body.size(); i += piece) p.feed(body.substr(i, piece));
    }
    p.finish();
    if (open) die("finished with a part open");
  } catch (const iaserve::iaapi::MultipartError&) {
    t.failed = true;
  }
  return t;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t piece = data[0];
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Trace whole = run(body, 0);
  const Trace pieces = run(body, piece);
  if (whole.failed != pieces.failed) die("the outcome depends on where the feeds end");
  if (!whole.failed && whole.events != pieces.events)
    die("the parts depend on where the feeds end");
  // Header values on their own, from the same bytes.
  try {
    (void)iaserve::iaapi::multipart_boundary(body);
  } catch (const iaserve::iaapi::MultipartError&) {
  }
  check_name(std::string(body));
  return 0;
}
