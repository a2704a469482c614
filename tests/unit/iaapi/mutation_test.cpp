// Deterministic randomized test of the decoders: valid documents mutated by
// truncation, byte changes, type swaps, removed members and deep nesting must
// never make a decoder throw or crash, and always give a value or an error.
// The same properties are what the libFuzzer target checks (tests/fuzz/).
#include "tests/fuzz/decoder_check.hpp"

#include "documents.hpp"
#include "json_support.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

namespace json = boost::json;

namespace {

const std::vector<std::string_view>& seeds() {
  static const std::vector<std::string_view> docs = {
      iaapi_docs::kInvocationWholeSlide, iaapi_docs::kInvocationTaggedPolygon,
      iaapi_docs::kInvocationMultiArea,  iaapi_docs::kInvocationModify,
      iaapi_docs::kInvocationDelete,     iaapi_docs::kInvocationCancel,
      iaapi_docs::kImageNotification,    iaapi_docs::kStoredResultPrimitiveObject,
      iaapi_docs::kRegistration};
  return docs;
}

using Rng = std::mt19937_64;

std::size_t pick(Rng& rng, std::size_t n) {
  return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng);
}

// Byte-level damage: what a broken proxy or a hostile client sends.
std::string mutate_bytes(std::string s, Rng& rng) {
  static const char interesting[] = {'"', '{', '}', '[',  ']',    ',',    ':',    '\\', '0',
                                     '-', 'e', '.', '\0', '\x7f', '\xc3', '\xff', ' ',  'n'};
  const int edits = 1 + static_cast<int>(pick(rng, 4));
  for (int i = 0; i < edits && !s.empty(); ++i) {
    const std::size_t at = pick(rng, s.size());
    switch (pick(rng, 5)) {
      case 0:
        s.resize(at);
        break;  // truncation
      case 1:
        s[at] = static_cast<char>(pick(rng, 256));
        break;
      case 2:
        s[at] = interesting[pick(rng, sizeof interesting)];
        break;
      case 3:
        s.insert(at, 1, interesting[pick(rng, sizeof interesting)]);
        break;
      default:
        s.erase(at, 1 + pick(rng, 8));
        break;
    }
  }
  return s;
}

// Every value of the tree, for picking one to replace.
void collect(json::value& v, std::vector<json::value*>& out) {
  out.push_back(&v);
  if (auto* o = v.if_object())
    for (auto& kv : *o) collect(kv.value(), out);
  else if (auto* a = v.if_array())
    for (auto& x : *a) collect(x, out);
}

json::value nested(int depth) {
  json::value v = json::array{};
  for (int i = 1; i < depth; ++i) v = json::array{std::move(v)};
  return v;
}

// Structure-level damage: right JSON, wrong shape.
std::string mutate_structure(std::string_view text, Rng& rng) {
  // The text may already be nested deeper than the decoders allow.
  json::parse_options deep;
  deep.max_depth = 4096;
  json::value root = json::parse(text, {}, deep);
  std::vector<json::value*> nodes;
  collect(root, nodes);
  json::value& target = *nodes[pick(rng, nodes.size())];
  switch (pick(rng, 10)) {
    case 0:
      target = nullptr;
      break;
    case 1:
      target = static_cast<std::int64_t>(pick(rng, 1000)) - 500;
      break;
    case 2:
      target = "surprise";
      break;
    case 3:
      target = json::object{};
      break;
    case 4:
      target = json::array{1, "two", nullptr};
      break;
    case 5:
      target = nested(5 + static_cast<int>(pick(rng, 40)));
      break;
    case 6:
      target = std::string(70'000, 'x');
      break;
    case 7:
      target = -1e300 * static_cast<double>(pick(rng, 3));
      break;
    case 8:
      if (auto* o = target.if_object(); o && !o->empty())
        o->erase(o->begin() + pick(rng, o->size()));
      break;
    default:
      if (auto* a = target.if_array(); a && !a->empty())
        a->erase(a->begin() + pick(rng, a->size()));
      break;
  }
  return json::serialize(root);
}

void require_ok(const std::string& body) {
  const std::string problem = iaapi_check::check_body(body);
  if (!problem.empty()) {
    INFO("document: " << body.substr(0, 4000));
    FAIL(problem);
  }
}

}  // namespace

TEST_CASE("the seed documents satisfy the decoder properties", "[iaapi][mutation]") {
  for (auto s : seeds()) require_ok(std::string(s));
}

TEST_CASE("byte mutations never break a decoder", "[iaapi][mutation]") {
  Rng rng(20240305);
  int decoded = 0;
  for (int round = 0; round < 600; ++round)
    for (auto s : seeds()) {
      const std::string body = mutate_bytes(std::string(s), rng);
      require_ok(body);
      decoded += iaserve::iaapi::decode_invocation(body).ok() ? 1 : 0;
    }
  // Some mutations (in whitespace or inside strings) leave a valid invocation;
  // if none did, the mutations would only be testing the JSON parser.
  CHECK(decoded > 0);
}

TEST_CASE("structural mutations never break a decoder", "[iaapi][mutation]") {
  Rng rng(7);
  int errors = 0;
  for (int round = 0; round < 400; ++round)
    for (auto s : seeds()) {
      std::string body = mutate_structure(s, rng);
      if (round % 3 == 0) body = mutate_structure(body, rng);
      require_ok(body);
      errors += iaserve::iaapi::decode_invocation(body).ok() ? 0 : 1;
    }
  CHECK(errors > 0);
}

TEST_CASE("deep nesting is refused, not recursed into", "[iaapi][mutation]") {
  for (int depth : {31, 32, 33, 100, 10'000}) {
    const std::string body = R"({"action": "create", "context": )" +
                             std::string(static_cast<std::size_t>(depth), '[') +
                             std::string(static_cast<std::size_t>(depth), ']') + "}";
    require_ok(body);
  }
  auto d = iaserve::iaapi::decode_invocation(std::string(100'000, '['));
  CHECK_FALSE(d.ok());
  CHECK(d.error.what().find("nested deeper than 32 levels") != std::string::npos);
}
