#pragma once
#include <string>

namespace iaserve::iaapi {

// The current time as ISO 8601 UTC with milliseconds: "2026-11-23T06:10:47.123Z".
std::string utc_now_iso();

}  // namespace iaserve::iaapi
