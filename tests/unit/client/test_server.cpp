#include "tests/unit/client/test_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <stdexcept>

namespace iaserve::test {
namespace {

const char* reason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Whatever";
  }
}

std::string head(int status, const std::vector<std::string>& headers, const std::string& type) {
  std::string h = "HTTP/1.1 " + std::to_string(status) + " " + reason(status) + "\r\n";
  if (!type.empty()) h += "Content-Type: " + type + "\r\n";
  for (auto& x : headers) h += x + "\r\n";
  return h;
}

bool send_all(int fd, const std::string& s) {
  std::size_t off = 0;
  while (off < s.size()) {
    const ssize_t w = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (w <= 0) return false;
    off += static_cast<std::size_t>(w);
  }
  return true;
}

}  // namespace

Reply Reply::with(int status, std::string body, std::vector<std::string> headers,
                  std::string content_type) {
  Reply r;
  std::string h = head(status, headers, status == 204 ? "" : content_type);
  if (status != 204) h += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  r.pieces.push_back(h + "\r\n" + body);
  return r;
}

Reply Reply::chunked(int status, const std::vector<std::string>& chunks,
                     std::vector<std::string> headers, std::string content_type) {
  Reply r;
  headers.push_back("Transfer-Encoding: chunked");
  r.pieces.push_back(head(status, headers, content_type) + "\r\n");
  char size[32];
  for (auto& c : chunks) {
    if (c.empty()) continue;
    std::snprintf(size, sizeof size, "%zx\r\n", c.size());
    r.pieces.push_back(size + c + "\r\n");
  }
  r.pieces.push_back("0\r\n\r\n");
  return r;
}

Reply Reply::cut(int status, const std::string& body, std::size_t content_length,
                 std::vector<std::string> headers, std::string content_type) {
  Reply r;
  headers.push_back("Content-Length: " + std::to_string(content_length));
  r.pieces.push_back(head(status, headers, content_type) + "\r\n" + body);
  r.close = true;
  return r;
}

Reply Reply::split(std::size_t size) const {
  Reply r = *this;
  std::string all;
  for (auto& p : pieces) all += p;
  r.pieces.clear();
  for (std::size_t i = 0; i < all.size(); i += size) r.pieces.push_back(all.substr(i, size));
  return r;
}

TestServer::TestServer(Handler handler) : handler_(std::move(handler)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::runtime_error("test server: socket failed");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd_, 16) != 0)
    throw std::runtime_error(std::string("test server: bind/listen: ") + std::strerror(errno));
  socklen_t len = sizeof a;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
  port_ = ntohs(a.sin_port);
  acceptor_ = std::thread([this] { accept_loop(); });
}

TestServer::~TestServer() {
  stop_ = true;
  acceptor_.join();
  {
    std::lock_guard lock(mutex_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
  }
  for (auto& t : threads_) t.join();
  ::close(listen_fd_);
}

std::string TestServer::url() const {
  return "http://127.0.0.1:" + std::to_string(port_);
}

std::vector<Received> TestServer::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

std::size_t TestServer::request_count() const {
  std::lock_guard lock(mutex_);
  return requests_.size();
}

void TestServer::accept_loop() {
  while (!stop_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    ++connections_;
    std::lock_guard lock(mutex_);
    if (threads_.size() >= 64) {  // bounded: a test never needs more
      ::close(fd);
      continue;
    }
    fds_.push_back(fd);
    threads_.emplace_back([this, fd] { serve(fd); });
  }
}

// Reads one request (headers, then a Content-Length body) into out; false on
// close, stop or a request over 16 MiB.
bool TestServer::read_request(int fd, std::string& buffer, Received& out) {
  auto fill = [&]() {
    while (!stop_) {
      pollfd p{fd, POLLIN, 0};
      const int r = ::poll(&p, 1, 50);
      if (r == 0) continue;
      if (r < 0) return false;
      char tmp[16384];
      const ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
      if (n <= 0) return false;
      buffer.append(tmp, static_cast<std::size_t>(n));
      return buffer.size() < (16u << 20);
    }
    return false;
  };
  std::size_t end;
  while ((end = buffer.find("\r\n\r\n")) == std::string::npos)
    if (!fill()) return false;
  const std::string headers = buffer.substr(0, end);
  buffer.erase(0, end + 4);
  std::size_t line_end = headers.find("\r\n");
  const std::string request_line = headers.substr(0, line_end);
  const auto sp1 = request_line.find(' ');
  const auto sp2 = request_line.find(' ', sp1 + 1);
  out.method = request_line.substr(0, sp1);
  out.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::size_t pos = line_end == std::string::npos ? headers.size() : line_end + 2;
  while (pos < headers.size()) {
    std::size_t e = headers.find("\r\n", pos);
    if (e == std::string::npos) e = headers.size();
    const std::string line = headers.substr(pos, e - pos);
    pos = e + 2;
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    out.headers[name] = value;
  }
  const std::size_t length =
      out.headers.count("content-length") ? std::stoul(out.headers["content-length"]) : 0;
  while (buffer.size() < length)
    if (!fill()) return false;
  out.body = buffer.substr(0, length);
  buffer.erase(0, length);
  return true;
}

void TestServer::serve(int fd) {
  std::string buffer;
  for (;;) {
    Received req;
    if (!read_request(fd, buffer, req)) break;
    std::size_t index;
    {
      std::lock_guard lock(mutex_);
      index = requests_.size();
      requests_.push_back(req);
    }
    const Reply reply = handler_(req, index);
    auto wait = [&](std::chrono::milliseconds d) {
      const auto until = std::chrono::steady_clock::now() + d;
      while (!stop_ && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    };
    if (reply.hang) {
      while (!stop_) {  // until the client gives up and closes, or the test ends
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) > 0) {
          char tmp[256];
          if (::recv(fd, tmp, sizeof tmp, 0) <= 0) break;
        }
      }
      break;
    }
    wait(reply.delay);
    bool ok = true;
    for (std::size_t i = 0; ok && i < reply.pieces.size(); ++i) {
      if (i > 0) wait(reply.gap);
      ok = send_all(fd, reply.pieces[i]);
    }
    if (!ok || reply.close || stop_) break;
  }
  ::shutdown(fd, SHUT_RDWR);
  std::lock_guard lock(mutex_);
  // The descriptor stays listed (closed below) so the destructor's shutdown
  // never hits a reused number: mark it instead.
  for (auto& f : fds_)
    if (f == fd) f = -1;
  ::close(fd);
}

}  // namespace iaserve::test
