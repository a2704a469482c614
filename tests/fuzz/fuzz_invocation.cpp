// libFuzzer target for the inbound decoders (what DPAT POSTs to the app).
// Build: configure with clang and -DIASERVE_FUZZ=ON; run
//   fuzz_invocation tests/fuzz/corpus/invocation -max_len=65536
#include "tests/fuzz/decoder_check.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string problem =
      iaapi_check::check_body(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!problem.empty()) {
    std::fprintf(stderr, "%s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
