#include "worker/retention.hpp"

#include <system_error>

#include "iaapi/log.hpp"
#include <spdlog/spdlog.h>

namespace iaserve::worker {
namespace fs = std::filesystem;

RetentionReport remove_old_slide_data(const fs::path& data_dir, std::chrono::seconds older_than,
                                      const std::function<bool(const std::string&)>& in_use) {
  RetentionReport report;
  std::error_code ec;
  if (!fs::is_directory(data_dir, ec)) return report;
  const auto now = fs::file_time_type::clock::now();
  for (fs::directory_iterator it(data_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::directory_entry& slide = *it;
    std::error_code e;
    if (!slide.is_directory(e) || slide.is_symlink(e)) continue;
    const std::string key = slide.path().filename().string();
    if (in_use && in_use(key)) continue;
    auto newest = fs::last_write_time(slide.path(), e);
    if (e) continue;
    std::uintmax_t size = 0;
    for (fs::recursive_directory_iterator f(slide.path(), e), fend; !e && f != fend; f.increment(e)) {
      std::error_code fe;
      auto t = f->symlink_status(fe).type() == fs::file_type::regular
                   ? fs::last_write_time(f->path(), fe)
                   : newest;
      if (!fe && t > newest) newest = t;
      if (f->is_regular_file(fe)) size += f->file_size(fe);
    }
    if (now - newest < older_than) continue;
    std::error_code re;
    fs::remove_all(slide.path(), re);
    if (re) {
      log::get("worker")->warn("retention: cannot remove {}: {}", slide.path().string(), re.message());
      continue;
    }
    ++report.removed;
    report.bytes += size;
    log::get("worker")->info("retention: removed {} ({} bytes)", slide.path().string(), size);
  }
  return report;
}

}  // namespace iaserve::worker
