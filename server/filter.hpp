#pragma once
// Which image notifications an app takes (config apps[].notifications).
#include <optional>
#include <string>

#include "iaapi/messages.hpp"
#include "server/config.hpp"

namespace iaserve::server {

// nullopt when the slide is accepted, else why not ("staining \"PAS\" not in
// [HE]", "width 800 below min_width 1000", "notifications disabled").
std::optional<std::string> notification_rejection(const NotificationFilter& filter,
                                                  const iaapi::ImageInfo& info);

}  // namespace iaserve::server
