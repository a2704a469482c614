#pragma once
// The configuration turned into the options of the queue and of the callback
// client, so iaserve and iaworker read the same keys the same way.
#include "iaapi/client.hpp"
#include "queue/queue.hpp"
#include "server/config.hpp"

namespace iaserve::server {

// queue.* (and worker.poll_interval for polling).
queue::Options queue_options(const Config& config);
// callback.*: retries count the tries after the first.
iaapi::ClientOptions client_options(const Config& config);

}  // namespace iaserve::server
