#pragma once
// A curl multi handle driven by epoll (curl_multi_socket_action): curl names
// the sockets it waits on and for what, so a turn costs the sockets that are
// ready, not a pass over every transfer as curl_multi_perform/poll do. Used
// by CallbackEngine and by bench_invoke's load generator.
//
// One thread runs turn(); wake() may be called from any thread.
#include <curl/curl.h>

#include <chrono>
#include <optional>
#include <set>

namespace iaserve::iaapi {

// curl_global_init, once per process, before the first handle.
void curl_global_once();

class CurlLoop {
 public:
  CurlLoop();  // throws std::runtime_error naming what could not be set up
  ~CurlLoop();
  CurlLoop(const CurlLoop&) = delete;
  CurlLoop& operator=(const CurlLoop&) = delete;

  // Add and remove easy handles here, read curl_multi_info_read after turn().
  CURLM* multi() const { return multi_; }

  // Waits at most max_wait (less when curl's own timer is due sooner) for a
  // socket, curl's timer or wake(), then lets curl act on what is ready.
  void turn(std::chrono::milliseconds max_wait);

  // Ends the current turn's wait, or the next one's, at once.
  void wake();

 private:
  static int on_socket(CURL*, curl_socket_t s, int what, void* userp, void* socketp);
  static int on_timer(CURLM*, long timeout_ms, void* userp);
  void act(curl_socket_t fd, int flags);
  void close_all();

  CURLM* multi_ = nullptr;
  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::optional<std::chrono::steady_clock::time_point> due_;  // curl's timer
  std::set<curl_socket_t> unwatched_;  // epoll refused them: polled every 10 ms
};

}  // namespace iaserve::iaapi
