#pragma once
// Removal of slide data folders (<data>/<slide_key>/) not used for longer
// than the retention age. A folder's age is the newest modification time of
// the folder and the files in it, so a slide analysed again stays.
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace iaserve::worker {

struct RetentionReport {
  std::size_t removed = 0;
  std::uintmax_t bytes = 0;
};

// in_use(slide_key) true keeps a folder whatever its age (a job runs on it).
RetentionReport remove_old_slide_data(const std::filesystem::path& data_dir,
                                      std::chrono::seconds older_than,
                                      const std::function<bool(const std::string&)>& in_use);

}  // namespace iaserve::worker
