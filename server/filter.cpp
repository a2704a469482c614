#include "server/filter.hpp"

#include <algorithm>
#include <cctype>

namespace iaserve::server {
namespace {

bool iequal(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string list_text(const std::vector<std::string>& v) {
  std::string s = "[";
  for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s + "]";
}

std::optional<std::string> check_name(const char* what, const std::vector<std::string>& allowed,
                                      const std::optional<std::string>& value) {
  if (allowed.empty()) return std::nullopt;
  if (!value) return std::string(what) + " unknown, wanted one of " + list_text(allowed);
  for (const auto& a : allowed)
    if (iequal(a, *value)) return std::nullopt;
  return std::string(what) + " \"" + *value + "\" not in " + list_text(allowed);
}

}  // namespace

std::optional<std::string> notification_rejection(const NotificationFilter& f, const iaapi::ImageInfo& info) {
  if (!f.enabled) return "notifications disabled for this app";
  if (auto r = check_name("staining", f.staining, info.staining)) return r;
  if (auto r = check_name("block", f.block, info.block)) return r;
  auto w = static_cast<std::uint64_t>(std::max<std::int64_t>(0, info.image_size.width));
  auto h = static_cast<std::uint64_t>(std::max<std::int64_t>(0, info.image_size.height));
  if (f.min_width && w < f.min_width)
    return "width " + std::to_string(w) + " below min_width " + std::to_string(f.min_width);
  if (f.min_height && h < f.min_height)
    return "height " + std::to_string(h) + " below min_height " + std::to_string(f.min_height);
  if (f.max_width && w > f.max_width)
    return "width " + std::to_string(w) + " above max_width " + std::to_string(f.max_width);
  if (f.max_height && h > f.max_height)
    return "height " + std::to_string(h) + " above max_height " + std::to_string(f.max_height);
  return std::nullopt;
}

}  // namespace iaserve::server
