#include "queue/posix.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "queue/queue.hpp"

namespace iaserve::queue::posix {

void fail(const fs::path& path, std::string_view step, int err) {
  throw QueueError("queue " + path.string() + ": " + std::string(step) + ": " +
                   std::strerror(err));
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.release();
  }
  return *this;
}

Fd::~Fd() { reset(); }

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

std::optional<std::string> read_file(const fs::path& path, std::size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    fail(path, "open", errno);
  }
  return read_fd(fd.get(), path, max_bytes);
}

std::string read_fd(int fd, const fs::path& path, std::size_t max_bytes) {
  struct ::stat st {};
  if (::fstat(fd, &st) != 0) fail(path, "fstat", errno);
  if (static_cast<std::uint64_t>(st.st_size) > max_bytes)
    throw FileTooLarge("queue " + path.string() + ": " + std::to_string(st.st_size) +
                       " bytes, more than the limit of " + std::to_string(max_bytes));
  std::string out;
  out.resize(static_cast<std::size_t>(st.st_size));
  std::size_t got = 0;
  for (;;) {
    if (got == out.size()) {
      if (out.size() >= max_bytes) break;
      out.resize(std::min(max_bytes, out.size() + 4096));
    }
    ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, "read", errno);
    }
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  return out;
}

void fsync_dir(const fs::path& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) fail(dir, "open folder", errno);
  // Some network filesystems refuse fsync on a folder; the rename is then
  // as durable as that filesystem makes it.
  if (::fsync(fd.get()) != 0 && errno != EINVAL && errno != EROFS && errno != ENOTSUP)
    fail(dir, "fsync folder", errno);
}

bool append_file(const fs::path& path, std::string_view content, bool sync_file) {
  // Not O_APPEND: libsmbclient (smbnetfs) fails such an open, and the mount
  // then fails every request for seconds. Appenders hold the job's lock, and
  // a record's framing ("\n...\n") makes a lost race an ignored line.
  Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return false;
    fail(path, "open for append", errno);
  }
  struct ::stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(path, "fstat", errno);
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::pwrite(fd.get(), content.data() + done, content.size() - done,
                         static_cast<off_t>(st.st_size) + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, "append", errno);
    }
    done += static_cast<std::size_t>(n);
  }
  if (sync_file && ::fsync(fd.get()) != 0) fail(path, "fsync", errno);
  if (::close(fd.release()) != 0) fail(path, "close", errno);
  return true;
}

void write_at(int fd, const fs::path& path, std::string_view content, off_t offset) {
  std::size_t done = 0;
  while (done < content.size()) {
    ssize_t n = ::pwrite(fd, content.data() + done, content.size() - done, offset + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(path, "write", errno);
    }
    done += static_cast<std::size_t>(n);
  }
}

void write_at_start(int fd, const fs::path& path, std::string_view content) { write_at(fd, path, content, 0); }

void write_file_atomic(const fs::path& tmp_dir, const fs::path& dest, std::string_view content,
                       bool sync_dir, bool sync_file) {
  fs::path tmp = tmp_dir / (dest.filename().string() + "." + random_hex(6) + ".tmp");
  {
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) fail(tmp, "create", errno);
    std::size_t done = 0;
    while (done < content.size()) {
      ssize_t n = ::write(fd.get(), content.data() + done, content.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        int err = errno;
        fd.reset();
        ::unlink(tmp.c_str());
        fail(tmp, "write", err);
      }
      done += static_cast<std::size_t>(n);
    }
    if (sync_file && ::fsync(fd.get()) != 0) {
      int err = errno;
      fd.reset();
      ::unlink(tmp.c_str());
      fail(tmp, "fsync", err);
    }
    if (::close(fd.release()) != 0) {
      int err = errno;
      ::unlink(tmp.c_str());
      fail(tmp, "close", err);
    }
  }
  try {
    if (!rename_file(tmp, dest)) fail(tmp, "rename to " + dest.string(), ENOENT);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  if (sync_dir) fsync_dir(dest.parent_path());
}

std::vector<std::string> list_dir(const fs::path& dir) {
  DIR* d = ::opendir(dir.c_str());  // glibc opens it O_CLOEXEC
  if (!d) fail(dir, "list folder", errno);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n(e->d_name);
    if (n == "." || n == "..") continue;
    names.emplace_back(n);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) fail(dir, "read folder", err);
  std::sort(names.begin(), names.end());
  return names;
}

bool rename_file(const fs::path& from, const fs::path& to) {
  for (int attempt = 0;; ++attempt) {
    if (::rename(from.c_str(), to.c_str()) == 0) return true;
    int err = errno;
    if (err == ENOENT) {
      // The source is gone (another process won), unless the destination
      // folder itself is missing: that is a broken queue, not a lost race.
      if (!path_exists(to.parent_path())) fail(to.parent_path(), "rename target folder", ENOENT);
      return false;
    }
    if ((err == EACCES || err == EBUSY) && attempt < 20) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + attempt * 5));
      continue;
    }
    fail(from, "rename to " + to.string(), err);
  }
}

bool unlink_file(const fs::path& path) {
  for (int attempt = 0;; ++attempt) {
    if (::unlink(path.c_str()) == 0) return true;
    if (errno == ENOENT) return false;
    // SMB refuses to delete a file that is open; a FUSE client closes its
    // handle a moment after close() returns.
    if ((errno == EBUSY || errno == EACCES) && attempt < 20) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5 + attempt * 5));
      continue;
    }
    fail(path, "remove", errno);
  }
}

bool path_exists(const fs::path& path) {
  struct ::stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::optional<struct ::stat> stat_path(const fs::path& path) {
  struct ::stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

std::string random_hex(std::size_t bytes) {
  std::string raw(bytes, '\0');
  std::size_t got = 0;
  while (got < bytes) {
    ssize_t n = ::getrandom(raw.data() + got, bytes - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw QueueError(std::string("queue: getrandom: ") + std::strerror(errno));
    }
    got += static_cast<std::size_t>(n);
  }
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes * 2);
  for (unsigned char c : raw) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string boot_id() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return in || in.eof() ? id : std::string();
}

}  // namespace iaserve::queue::posix
