#pragma once
// A small scripted HTTP/1.1 server on 127.0.0.1:0 for the callback client's
// tests: raw sockets, one thread per connection, keep-alive, answers chosen
// by a handler per request. Replies are raw bytes sent in pieces, so a test
// can split a body anywhere, delay, close mid-body or never answer.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace iaserve::test {

struct Received {
  std::string method;
  std::string target;                          // path and query, as sent
  std::map<std::string, std::string> headers;  // names lower-cased
  std::string body;
  std::string header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    return it == headers.end() ? std::string() : it->second;
  }
};

struct Reply {
  std::vector<std::string> pieces;     // written in order
  std::chrono::milliseconds delay{0};  // before the first piece
  std::chrono::milliseconds gap{0};    // between pieces
  bool close = false;                  // close the connection after the pieces
  bool hang = false;                   // read the request, never answer

  // A complete answer with Content-Length.
  static Reply with(int status, std::string body, std::vector<std::string> headers = {},
                    std::string content_type = "application/json");
  static Reply json(int status, const std::string& json) { return with(status, json); }
  // Transfer-Encoding: chunked, one chunk per element (pieces sent one by one).
  static Reply chunked(int status, const std::vector<std::string>& chunks,
                       std::vector<std::string> headers, std::string content_type);
  // Announces content_length but sends only `body`, then closes.
  static Reply cut(int status, const std::string& body, std::size_t content_length,
                   std::vector<std::string> headers, std::string content_type);
  // The same bytes split into pieces of at most `size`.
  Reply split(std::size_t size) const;
};

class TestServer {
 public:
  using Handler = std::function<Reply(const Received&, std::size_t index)>;
  explicit TestServer(Handler handler);
  ~TestServer();
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  std::string url() const;  // http://127.0.0.1:PORT
  int port() const { return port_; }
  std::vector<Received> requests() const;
  std::size_t request_count() const;
  std::size_t connection_count() const { return connections_.load(); }

 private:
  void accept_loop();
  void serve(int fd);
  bool read_request(int fd, std::string& buffer, Received& out);

  Handler handler_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> connections_{0};
  mutable std::mutex mutex_;
  std::vector<Received> requests_;
  std::vector<std::thread> threads_;
  std::vector<int> fds_;
  std::thread acceptor_;
};

}  // namespace iaserve::test
