#include "iaapi/curl_loop.hpp"

#include "iaapi/log.hpp"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace iaserve::iaapi {

namespace {
using Clock = std::chrono::steady_clock;

std::shared_ptr<spdlog::logger> logger() { return log::get("iaapi"); }
}  // namespace

void curl_global_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

CurlLoop::CurlLoop() {
  curl_global_once();
  auto fail = [this](const std::string& what) {
    close_all();
    throw std::runtime_error("curl event loop: cannot set it up: " + what);
  };
  if ((epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC)) < 0) fail(std::string("epoll: ") + std::strerror(errno));
  if ((wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) fail(std::string("eventfd: ") + std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = wake_fd_;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &ev) != 0) fail(std::string("epoll_ctl: ") + std::strerror(errno));
  if (!(multi_ = curl_multi_init())) fail("curl_multi_init failed");
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlLoop::on_socket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlLoop::on_timer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
}

CurlLoop::~CurlLoop() { close_all(); }

void CurlLoop::close_all() {
  if (multi_) curl_multi_cleanup(multi_);  // may still call on_socket: the fds go after it
  multi_ = nullptr;
  if (epoll_fd_ >= 0) ::close(epoll_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  epoll_fd_ = wake_fd_ = -1;
}

void CurlLoop::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] const auto n = ::write(wake_fd_, &one, sizeof one);  // EAGAIN: already due
}

// curl: watch socket s for `what` (CURL_POLL_IN/OUT/INOUT), or no more.
// socketp marks the sockets already in the epoll set.
int CurlLoop::on_socket(CURL*, curl_socket_t s, int what, void* userp, void* socketp) {
  auto* self = static_cast<CurlLoop*>(userp);
  if (what == CURL_POLL_REMOVE) {
    ::epoll_ctl(self->epoll_fd_, EPOLL_CTL_DEL, s, nullptr);  // gone already when closed
    self->unwatched_.erase(s);
    return 0;
  }
  epoll_event ev{};
  ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0u) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0u);
  ev.data.fd = s;
  const int first = socketp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
  if (::epoll_ctl(self->epoll_fd_, first, s, &ev) != 0) {
    // A number reused after a close curl did not report, either way round.
    const int again = first == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
    if (::epoll_ctl(self->epoll_fd_, again, s, &ev) != 0) {
      // Out of watches (ENOMEM, ENOSPC). Not -1: that would leave the multi
      // handle dead for good. turn() polls such a socket instead.
      logger()->warn("curl event loop: cannot watch socket {}: {}; polling it", s, std::strerror(errno));
      self->unwatched_.insert(s);
      return 0;
    }
  }
  self->unwatched_.erase(s);
  if (!socketp) curl_multi_assign(self->multi_, s, self);
  return 0;
}

// curl: call socket_action(CURL_SOCKET_TIMEOUT) in timeout_ms (-1: no timer).
int CurlLoop::on_timer(CURLM*, long timeout_ms, void* userp) {
  auto* self = static_cast<CurlLoop*>(userp);
  if (timeout_ms < 0)
    self->due_.reset();
  else
    self->due_ = Clock::now() + std::chrono::milliseconds(timeout_ms);
  return 0;
}

void CurlLoop::act(curl_socket_t fd, int flags) {
  int still = 0;
  if (const CURLMcode mc = curl_multi_socket_action(multi_, fd, flags, &still); mc != CURLM_OK)
    logger()->error("curl event loop: curl_multi_socket_action: {}", curl_multi_strerror(mc));
}

void CurlLoop::turn(std::chrono::milliseconds max_wait) {
  long wait_ms = std::max<long>(0, static_cast<long>(max_wait.count()));
  if (due_) {  // whole ms, rounded up
    const auto left = *due_ - Clock::now();
    const long ms = left <= Clock::duration::zero()
                        ? 0L
                        : static_cast<long>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    wait_ms = std::min(wait_ms, ms);
  }
  if (!unwatched_.empty()) wait_ms = std::min(wait_ms, 10L);
  std::array<epoll_event, 64> events;
  const int n = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), static_cast<int>(wait_ms));
  if (n < 0 && errno != EINTR) throw std::runtime_error(std::string("epoll_wait: ") + std::strerror(errno));
  for (int k = 0; k < n; ++k) {
    const int fd = events[k].data.fd;
    if (fd == wake_fd_) {
      std::uint64_t count = 0;
      [[maybe_unused]] const auto r = ::read(wake_fd_, &count, sizeof count);
      continue;
    }
    const std::uint32_t e = events[k].events;
    act(fd, ((e & EPOLLIN) ? CURL_CSELECT_IN : 0) | ((e & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
                ((e & (EPOLLERR | EPOLLHUP)) ? CURL_CSELECT_ERR : 0));
  }
  for (const curl_socket_t fd : std::vector<curl_socket_t>(unwatched_.begin(), unwatched_.end()))
    act(fd, CURL_CSELECT_IN | CURL_CSELECT_OUT);  // curl reads and writes what it can
  if (due_ && *due_ <= Clock::now()) {
    due_.reset();  // on_timer may set the next one
    act(CURL_SOCKET_TIMEOUT, 0);
  }
}

}  // namespace iaserve::iaapi
