#include "iaapi/timestamp.hpp"

#include <chrono>
#include <cstdio>
#include <ctime>

namespace iaserve::iaapi {

std::string format_utc(std::chrono::system_clock::time_point when) {
  std::time_t t = std::chrono::system_clock::to_time_t(when);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(when.time_since_epoch()).count() % 1000;
  if (ms < 0) {  // before 1970: to_time_t rounded toward zero
    ms += 1000;
    t -= 1;
  }
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[96];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

std::string utc_now_iso() { return format_utc(std::chrono::system_clock::now()); }

}  // namespace iaserve::iaapi
