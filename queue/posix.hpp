#pragma once
// Small POSIX helpers of the queue: descriptors, durable writes, listings.
// Every error is a QueueError naming the file and the cause.
#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "queue/queue.hpp"  // QueueError

namespace iaserve::queue::posix {

namespace fs = std::filesystem;

[[noreturn]] void fail(const fs::path& path, std::string_view step, int err);

// An owned descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset();

 private:
  int fd_ = -1;
};

// Whole file, at most max_bytes (more is an error). nullopt when absent.
// A file read_file refused for its size (what it holds is not what we wrote).
class FileTooLarge : public QueueError {
 public:
  using QueueError::QueueError;
};

std::optional<std::string> read_file(const fs::path& path, std::size_t max_bytes);
// The same through an open descriptor, from its offset (path names it in errors).
std::string read_fd(int fd, const fs::path& path, std::size_t max_bytes);
// Writes content to tmp_dir/<unique>, fsyncs it, renames it to dest (which
// must not be open elsewhere) and fsyncs dest's folder when sync_dir.
// sync_file=false skips the file's fsync (leases: stale after a crash anyway).
void write_file_atomic(const fs::path& tmp_dir, const fs::path& dest, std::string_view content,
                       bool sync_dir, bool sync_file = true);
void fsync_dir(const fs::path& dir);
// Appends content to an existing file (a write at its end), fsynced when
// sync_file.
// False when the file is absent; throws naming the file on anything else.
bool append_file(const fs::path& path, std::string_view content, bool sync_file);
// pwrite(2) of all of content at offset (retried on EINTR and short writes).
void write_at(int fd, const fs::path& path, std::string_view content, off_t offset);
// write_at offset 0 (a record rewritten in place).
void write_at_start(int fd, const fs::path& path, std::string_view content);
// Names in a folder (no "." ".."), sorted. Throws when the folder cannot be read.
std::vector<std::string> list_dir(const fs::path& dir);
// rename(2); false on ENOENT of the source, throws on anything else.
// Retries a few times on EACCES/EBUSY (an SMB share refuses a rename while
// another client has the file open for a moment).
bool rename_file(const fs::path& from, const fs::path& to);
// unlink(2); false when absent. Retries a few times on EBUSY/EACCES (SMB
// refuses to delete a file another handle has open).
bool unlink_file(const fs::path& path);
bool path_exists(const fs::path& path);
std::optional<struct ::stat> stat_path(const fs::path& path);

std::string random_hex(std::size_t bytes);
std::int64_t now_ns();
std::string hostname();
// This boot of the kernel (/proc/sys/kernel/random/boot_id); empty when unreadable.
std::string boot_id();

}  // namespace iaserve::queue::posix
