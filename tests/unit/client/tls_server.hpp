#pragma once
// openssl's own test server (s_server -www: any GET gets an HTML page) with a
// fresh self-signed certificate for 127.0.0.1, for the TLS tests of the
// callback client and engine.
#include <catch2/catch.hpp>

#include <memory>
#include <string>

#include "tests/support/process.hpp"

namespace iaserve::test {

class TlsTestServer {
 public:
  TlsTestServer() {
    const std::string key = (tmp_ / "key.pem").string();
    cert_ = (tmp_ / "cert.pem").string();
    const auto gen =
        run({"/usr/bin/openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert_,
             "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"});
    REQUIRE(gen.code == 0);
    server_ = std::make_unique<Process>(std::vector<std::string>{
        "/usr/bin/openssl", "s_server", "-accept", "127.0.0.1:0", "-cert", cert_, "-key", key, "-www"});
    for (std::size_t i = 0; i < 4 && address_.empty(); ++i) {
      const std::string line = server_->line(i);
      if (line.starts_with("ACCEPT ")) address_ = line.substr(7);
    }
    REQUIRE(!address_.empty());
  }

  std::string url() const { return "https://" + address_; }
  // The certificate, to trust as a CA file.
  const std::string& cert() const { return cert_; }

 private:
  TempDir tmp_;
  std::string cert_, address_;
  std::unique_ptr<Process> server_;
};

}  // namespace iaserve::test
