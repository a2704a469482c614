#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include "server/config.hpp"
#include "tests/support/process.hpp"

using namespace iaserve::server;
using namespace std::chrono_literals;

namespace {

const std::string kApp = R"(
[[apps]]
route = "/apps/tissue"
application_id = "tissue"
)";

std::string error_of(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    parse_config(text, overrides);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("defaults with a minimal app", "[config]") {
  Config c = parse_config(kApp);
  CHECK(c.server.listen == "0.0.0.0:5006");
  CHECK(c.server.read_timeout == 15s);
  CHECK(c.data.retention == std::chrono::hours(24 * 7));
  REQUIRE(c.apps.size() == 1);
  CHECK(c.apps[0].display_name == "tissue");
  CHECK(c.apps[0].input_type == InputType::wholeSlide);
  CHECK_FALSE(c.apps[0].notifications.enabled);
  CHECK(c.find_app_by_route("/apps/tissue") == &c.apps[0]);
  CHECK(c.find_app_by_id("tissue") == &c.apps[0]);
  CHECK(c.find_app_by_id("other") == nullptr);
}

TEST_CASE("the example config is complete and valid", "[config]") {
  Config c = load_config(iaserve::test::source_dir() / "examples" / "iaserve.toml");
  REQUIRE(c.apps.size() == 1);
  CHECK(c.apps[0].route == "/apps/tissue");
  CHECK(c.apps[0].context.at("model").as_string() == "tissue-v1");
  CHECK(c.apps[0].params.at("target_mpp").as_double() == 8.0);
  CHECK(c.server.body_limit == 8u << 20);
}

TEST_CASE("durations and sizes", "[config]") {
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("30s") == 30s);
  CHECK(parse_duration("5m") == 5min);
  CHECK(parse_duration("2h") == 2h);
  CHECK(parse_duration("7d") == std::chrono::hours(168));
  CHECK(parse_duration("1.5s") == 1500ms);
  CHECK_THROWS_WITH(parse_duration("5 parsecs"), "unknown duration unit (ms, s, m, h, d)");
  CHECK_THROWS_WITH(parse_duration("soon"), "expected a duration like \"30s\", \"5m\", \"7d\"");
  CHECK(parse_size("8MiB") == 8u << 20);
  CHECK(parse_size("10MB") == 10'000'000u);
  CHECK(parse_size("1024") == 1024u);
  CHECK_THROWS_WITH(parse_size("17179869185GiB"), "size too large");
  CHECK(format_duration(90s) == "90s");
  CHECK(format_duration(7200s) == "2h");
  CHECK(format_duration(1500ms) == "1500ms");

  Config c = parse_config("[server]\nread_timeout = 2\nidle_timeout = 0.5\nbody_limit = \"1MiB\"\n" + kApp);
  CHECK(c.server.read_timeout == 2s);
  CHECK(c.server.idle_timeout == 500ms);
  CHECK(c.server.body_limit == 1u << 20);
}

TEST_CASE("errors name the key and the value", "[config]") {
  struct Case {
    std::string text, error;
  };
  const std::vector<Case> cases = {
      {"[[apps]]\nroute = \"tissue\"\napplication_id = \"t\"\n",
       "apps[0].route: must start with '/', got \"tissue\""},
      {kApp + "[[apps]]\nroute = \"tissue\"\napplication_id = \"u\"\n",
       "apps[1].route: must start with '/', got \"tissue\""},
      {"[[apps]]\nroute = \"/a/\"\napplication_id = \"t\"\n", "apps[0].route: must not end with '/', got \"/a/\""},
      {"[[apps]]\nroute = \"/a/../b\"\napplication_id = \"t\"\n",
       "apps[0].route: empty or dot segment in \"/a/../b\""},
      {"[[apps]]\nroute = \"/healthz\"\napplication_id = \"t\"\n",
       "apps[0].route: reserved for the server, got \"/healthz\""},
      {"[[apps]]\nroute = \"/status\"\napplication_id = \"t\"\n",
       "apps[0].route: reserved for the status page (/status...), got \"/status\""},
      {"[[apps]]\nroute = \"/status.json\"\napplication_id = \"t\"\n",
       "apps[0].route: reserved for the status page (/status...), got \"/status.json\""},
      {"[[apps]]\nroute = \"/status/x\"\napplication_id = \"t\"\n",
       "apps[0].route: reserved for the status page (/status...), got \"/status/x\""},
      {kApp + "[[apps]]\nroute = \"/apps/tissue/info\"\napplication_id = \"u\"\n",
       "apps[1].route: \"/apps/tissue/info\" and apps[0].route \"/apps/tissue\" collide: /info under an app's route is "
       "the app's own"},
      {"[[apps]]\nroute = \"/x/imagenotification\"\napplication_id = \"u\"\n"
       "[[apps]]\nroute = \"/x\"\napplication_id = \"t\"\n",
       "apps[1].route: \"/x\" and apps[0].route \"/x/imagenotification\" collide: /imagenotification under an app's "
       "route is the app's own"},
      {"[[apps]]\napplication_id = \"t\"\n", "apps[0].route: required"},
      {"[[apps]]\nroute = \"/a\"\n", "apps[0].application_id: required"},
      {kApp + kApp, "apps[1].route: same route as apps[0]: \"/apps/tissue\""},
      {kApp + "[[apps]]\nroute = \"/b\"\napplication_id = \"tissue\"\n",
       "apps[1].application_id: same id as apps[0]: \"tissue\""},
      {"", "apps: at least one [[apps]] table is required"},
      {"[server]\nlisten = \"nowhere\"\n" + kApp,
       "server.listen: expected HOST:PORT with a port in [0, 65535], got \"nowhere\""},
      {"[server]\nlisten = \"0.0.0.0:70000\"\n" + kApp,
       "server.listen: expected HOST:PORT with a port in [0, 65535], got \"0.0.0.0:70000\""},
      {"[server]\nlistne = \"0.0.0.0:1\"\n" + kApp, "server.listne: unknown key"},
      {"[sever]\n" + kApp, "sever: unknown key"},
      {"[server]\nio_threads = \"two\"\n" + kApp, "server.io_threads: expected integer, got string \"two\""},
      {"[server]\nio_threads = 0\n" + kApp, "server.io_threads: must be in [1, 256], got 0"},
      {"[server]\nread_timeout = \"soon\"\n" + kApp,
       "server.read_timeout: expected a duration like \"30s\", \"5m\", \"7d\", got \"soon\""},
      {"[server]\nread_timeout = \"10ms\"\n" + kApp, "server.read_timeout: must be at least 100ms, got \"10ms\""},
      {"[server]\nbody_limit = \"lots\"\n" + kApp, "server.body_limit: expected a size like \"8MiB\", got \"lots\""},
      {"[server]\ntls_cert = \"/c.pem\"\n" + kApp, "server.tls_key: required when server.tls_cert is set"},
      {"[server]\ntrusted_proxy = [1]\n" + kApp, "server.trusted_proxy[0]: expected string, got integer 1"},
      {"[server]\ntrusted_proxy = [\"10.0.0.1\", \"proxy.local\"]\n" + kApp,
       "server.trusted_proxy[1]: expected an IP address or \"*\", got \"proxy.local\""},
      {"[queue]\nwakeup = \"sometimes\"\n" + kApp, "queue.wakeup: must be auto, inotify or poll, got \"sometimes\""},
      {"[queue]\ncommit = \"never\"\n" + kApp, "queue.commit: must be auto, journal or fsync, got \"never\""},
      {"[queue]\nlease_only = \"yes\"\n" + kApp, "queue.lease_only: expected boolean, got string \"yes\""},
      {"[queue]\nsync_finish = 1\n" + kApp, "queue.sync_finish: expected boolean, got integer 1"},
      {"[log]\nlevel = \"loud\"\n" + kApp,
       "log.level: must be trace, debug, info, warn, error, critical or off, got \"loud\""},
      {"[worker]\nmetrics_listen = \"x\"\n" + kApp,
       "worker.metrics_listen: expected HOST:PORT with a port in [0, 65535], got \"x\""},
      {kApp + "[apps.input_template]\ntype = \"wholeslide\"\n",
       "apps[0].input_template.type: must be wholeSlide, taggedPolygon or multiArea, got \"wholeslide\""},
      {kApp + "[apps.notifications]\nstain = [\"HE\"]\n", "apps[0].notifications.stain: unknown key"},
      {kApp + "[apps.notifications]\nmin_width = 10\nmax_width = 5\n",
       "apps[0].notifications.max_width: smaller than min_width"},
      {kApp + "context = 3\n", "apps[0].context: expected table, got integer 3"},
      {"apps = 3\n", "apps: expected array of tables ([[apps]]), got integer 3"},
  };
  for (const auto& c : cases) {
    INFO(c.text);
    CHECK(error_of(c.text) == c.error);
  }
}

TEST_CASE("syntax errors give the source, line and column", "[config]") {
  std::string e = error_of("[server\nlisten = 1\n");
  CHECK_THAT(e, Catch::Matchers::StartsWith("config:1:"));
}

TEST_CASE("overrides set any key by its path", "[config]") {
  Config c = parse_config(kApp, {"server.listen=127.0.0.1:0", "queue.dir=/tmp/q", "server.io_threads=4",
                                 "apps[0].params.min_area=2.5", "apps[0].display_name=Tissue app",
                                 "log.json=true", "callback.total_timeout=2s"});
  CHECK(c.server.listen == "127.0.0.1:0");
  CHECK(c.queue.dir == "/tmp/q");
  CHECK(c.server.io_threads == 4);
  CHECK(c.apps[0].params.at("min_area").as_double() == 2.5);
  CHECK(c.apps[0].display_name == "Tissue app");
  CHECK(c.log.json);
  CHECK(c.callback.total_timeout == 2s);
  CHECK(error_of(kApp, {"server.listen"}) == "override \"server.listen\": expected KEY=VALUE");
  CHECK(error_of(kApp, {"apps[3].route=/x"}) == "apps[3].route: override names no such entry");
  CHECK(error_of(kApp, {"server.port=1"}) == "server.port: unknown key");
  CHECK(error_of(kApp, {"server.io_threads=x"}) == "server.io_threads: expected integer, got string \"x\"");
}

TEST_CASE("trusted proxies are addresses as a peer's show, IPv4-mapped ones as IPv4", "[config]") {
  Config c = parse_config("[server]\ntrusted_proxy = [\"::ffff:127.0.0.1\", \"0:0::1\", \"10.1.2.3\", \"*\"]\n" + kApp);
  CHECK(c.server.trusted_proxy == std::vector<std::string>{"127.0.0.1", "::1", "10.1.2.3", "*"});
}

TEST_CASE("path flags are strings whatever they look like", "[config]") {
  // Parsed as TOML, these would be a date, a number, or a broken string.
  for (const std::string dir : {"2024-01-01", "1e3", "/srv/q\"x", "/srv/a\\b", "'single'", "[x]", "/srv/\u00e9t\u00e9 q"}) {
    INFO(dir);
    Config c = parse_config(kApp, {string_override("queue.dir", dir), string_override("data.dir", dir)});
    CHECK(c.queue.dir.string() == dir);
    CHECK(c.data.dir.string() == dir);
    // And the effective configuration reads back the same.
    CHECK(parse_config(describe(c)).queue.dir.string() == dir);
  }
  CHECK(string_override("queue.dir", "a\"b\\c") == "queue.dir=\"a\\\"b\\\\c\"");
}

TEST_CASE("describe reads back to the same configuration", "[config]") {
  Config c = parse_config(R"(
[server]
listen = "127.0.0.1:8080"
trusted_proxy = ["10.0.0.1"]
read_timeout = "1500ms"
[queue]
wakeup = "poll"
commit = "fsync"
[[apps]]
route = "/apps/a"
application_id = "a"
[apps.input_template]
type = "taggedPolygon"
tags = ["tumour", "stroma"]
[apps.context]
k = "v"
nested = { n = 1, list = [1, 2] }
[apps.notifications]
staining = ["HE"]
min_width = 100
[[apps]]
route = "/apps/b"
application_id = "b"
analysis = { name = "stain" }
)");
  std::string text = describe(c);
  Config d = parse_config(text);
  CHECK(describe(d) == text);
  CHECK(d.server.trusted_proxy == std::vector<std::string>{"10.0.0.1"});
  CHECK(d.server.read_timeout == 1500ms);
  CHECK(d.queue.wakeup == Wakeup::poll);
  CHECK(d.queue.commit == Commit::fsync);
  REQUIRE(d.apps.size() == 2);
  CHECK(d.apps[0].input_type == InputType::taggedPolygon);
  CHECK(d.apps[0].input_tags == std::vector<std::string>{"tumour", "stroma"});
  CHECK(d.apps[0].context == c.apps[0].context);
  CHECK(d.apps[0].notifications.enabled);
  CHECK(d.apps[0].notifications.staining == std::vector<std::string>{"HE"});
  CHECK(d.apps[0].notifications.min_width == 100);
  CHECK(d.apps[1].analysis == "stain");
  CHECK_FALSE(d.apps[1].notifications.enabled);
}
