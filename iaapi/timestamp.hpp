#pragma once
#include <chrono>
#include <string>

namespace iaserve::iaapi {

// A time as ISO 8601 UTC with milliseconds: "2026-11-23T06:10:47.123Z".
std::string format_utc(std::chrono::system_clock::time_point t);
// The current time so.
std::string utc_now_iso();

}  // namespace iaserve::iaapi
