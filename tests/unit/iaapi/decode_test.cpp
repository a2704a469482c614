#include "iaapi/decode.hpp"

#include <catch2/catch.hpp>

#include <set>
#include <string>
#include <vector>

using namespace iaserve::iaapi;

TEST_CASE("parse_json bounds nesting and reports offsets", "[iaapi][decode]") {
  CHECK(parse_json(R"({"a": [1, 2, {"b": null}]})").ok());
  const std::string deep32 = std::string(31, '[') + std::string(31, ']');
  CHECK(parse_json(deep32).ok());
  auto too_deep = parse_json(std::string(33, '[') + std::string(33, ']'));
  CHECK_FALSE(too_deep.ok());
  CHECK(too_deep.error.what() == "body: nested deeper than 32 levels at offset 32");
  auto bad = parse_json(R"({"a": tru})");
  CHECK(bad.error.what() == "body: syntax error at offset 6");
  CHECK(parse_json("{}", 1).ok());
}

TEST_CASE("identifiers", "[iaapi][decode]") {
  CHECK_FALSE(id_problem("1.2.752.24.10.2954227164"));
  CHECK(id_problem("") == "empty");
  CHECK(id_problem(std::string(257, 'a')) == "longer than 256 bytes (257)");
  CHECK_FALSE(id_problem(std::string(256, 'a')));
  CHECK(id_problem(std::string("ab\0", 3)) == "control character at offset 2");
  CHECK(id_problem("tab\there") == "control character at offset 3");
  // Non-ASCII is fine in an id; only its use as a file name needs care.
  CHECK_FALSE(id_problem("Gewebe-\xc3\xa4"));
}

TEST_CASE("safe path components", "[iaapi][decode]") {
  CHECK(safe_path_component("CMU-1.svs"));
  CHECK(safe_path_component("..."));
  CHECK_FALSE(safe_path_component(""));
  CHECK_FALSE(safe_path_component("."));
  CHECK_FALSE(safe_path_component(".."));
  CHECK_FALSE(safe_path_component("../x"));
  CHECK_FALSE(safe_path_component("a/b"));
  CHECK_FALSE(safe_path_component("a\\b"));
  CHECK_FALSE(safe_path_component(std::string("a\0b", 3)));
  CHECK_FALSE(safe_path_component("line\nbreak"));
  CHECK_FALSE(safe_path_component(std::string(256, 'a')));
}

TEST_CASE("slide keys are safe, readable and distinct", "[iaapi][decode]") {
  const std::string key = slide_key("1.2.752.24.10.2954227164");
  CHECK(key.rfind("1.2.752.24.10.2954227164-", 0) == 0);
  CHECK(key.size() == std::string("1.2.752.24.10.2954227164-").size() + 16);
  CHECK(slide_key("1.2.752.24.10.2954227164") == key);  // deterministic
  const std::vector<std::string> tricky = {"../x", "..",  ".",           "a/b",
                                           "a_b",  "a b", "/etc/passwd", "\\\\server\\share",
                                           "x\ny", "",    "\xc3\xa4",    std::string(300, 'z')};
  std::set<std::string> keys;
  for (const std::string& id : tricky) {
    const std::string k = slide_key(id);
    INFO(id << " -> " << k);
    CHECK(safe_path_component(k));
    CHECK(k[0] != '.');
    CHECK(k.size() <= 48 + 17);
    keys.insert(k);
  }
  // "a/b", "a_b" and "a b" share a prefix but not a key.
  CHECK(keys.size() == tricky.size());
  CHECK(slide_key("../x").rfind("_._x-", 0) == 0);
}
