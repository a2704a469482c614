#pragma once
// What the disk under a bench costs, printed beside its figures so that a run
// on a disturbed filesystem can be told apart from a slow program.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace iaserve::bench {

// Microseconds to create (and close) one new empty file in a fresh folder:
// a job creates one or two. On ext4 without a journal this depends on how
// many inodes of the folder's block group were freed in the last 60 s (5 min
// while their inode table is not yet written back): each is looked at and
// skipped. The files stay (deleting them would disturb what follows).
inline double create_cost_us(const std::filesystem::path& dir, int files) {
  std::filesystem::create_directories(dir);
  auto t = std::chrono::steady_clock::now();
  for (int i = 0; i < files; ++i) {
    auto p = dir / ("c" + std::to_string(i));
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) std::abort();
    ::close(fd);
  }
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count() / files;
}

}  // namespace iaserve::bench
