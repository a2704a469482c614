#include "server/options.hpp"

namespace iaserve::server {

queue::Options queue_options(const Config& c) {
  queue::Options o;
  o.lease_timeout = c.queue.lease_timeout;
  o.max_attempts = static_cast<int>(c.queue.max_attempts);
  switch (c.queue.wakeup) {
    case Wakeup::auto_: o.wakeup = queue::Wakeup::automatic; break;
    case Wakeup::inotify: o.wakeup = queue::Wakeup::inotify; break;
    case Wakeup::poll: o.wakeup = queue::Wakeup::poll; break;
  }
  o.poll_interval = c.worker.poll_interval;
  o.lease_only = c.queue.lease_only;
  o.sync_finish = c.queue.sync_finish;
  switch (c.queue.commit) {
    case Commit::auto_: o.commit = queue::Commit::automatic; break;
    case Commit::journal: o.commit = queue::Commit::journal; break;
    case Commit::fsync: o.commit = queue::Commit::fsync; break;
  }
  // The lease is refreshed well inside its timeout.
  o.lease_interval = std::max(std::chrono::milliseconds(100), c.queue.lease_timeout / 10);
  o.label = "iaserve";  // (the listen port may be 0 here: host and pid tell servers apart)
  return o;
}

iaapi::ClientOptions client_options(const Config& c) {
  iaapi::ClientOptions o;
  o.connect_timeout = c.callback.connect_timeout;
  o.total_timeout = c.callback.total_timeout;
  o.max_attempts = static_cast<int>(c.callback.retries) + 1;
  o.max_retry_time = c.callback.retry_max_time;
  o.ca_file = c.callback.ca_file.string();
  o.verify_tls = c.callback.verify_tls;
  return o;
}

}  // namespace iaserve::server
