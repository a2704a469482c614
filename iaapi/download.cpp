#include "iaapi/download.hpp"

#include "iaapi/decode.hpp"
#include "iaapi/log.hpp"
#include "iaapi/multipart.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <system_error>

namespace iaserve::iaapi {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_errno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

std::optional<std::uint64_t> parse_length(const std::string& v) {
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || p != v.data() + v.size() || v.empty()) return std::nullopt;
  return n;
}

std::string header(const HeaderList& h, std::string_view name) {
  for (auto& [n, v] : h)
    if (n == name) return v;
  return {};
}

void write_all(int fd, const char* p, std::size_t n, const std::string& what) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + what);
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

FileDownload::FileDownload(fs::path folder, std::string_view slide_id, ProgressFn progress)
    : folder_(std::move(folder)), slide_id_(slide_id), progress_(std::move(progress)) {
  fs::create_directories(folder_);
  dirfd_ = ::open(folder_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirfd_ < 0) throw_errno("open folder " + folder_.string());
  // One download per folder at a time: a second caller for the same slide
  // waits, then finds the manifest complete. Some network file systems do
  // not lock directories; there the caller's own job lock has to do.
  while (::flock(dirfd_, LOCK_EX) != 0) {
    if (errno == EINTR) continue;
    log::get("iaapi")->debug("cannot lock {}: {}", folder_.string(), std::strerror(errno));
    break;
  }
  load_manifest();
}

FileDownload::~FileDownload() {
  abort();
  if (dirfd_ >= 0) ::close(dirfd_);
}

std::optional<std::uint64_t> FileDownload::size_on_disk(const std::string& name) const {
  struct stat st {};
  if (::fstatat(dirfd_, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
    return std::nullopt;
  return static_cast<std::uint64_t>(st.st_size);
}

const FileDownload::Entry* FileDownload::manifest_entry(const std::string& name) const {
  if (manifest_slide_ != slide_id_) return nullptr;
  for (auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

void FileDownload::load_manifest() {
  const int fd = ::openat(dirfd_, kManifest, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;  // none yet
  std::string text;
  char buf[8192];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof buf);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    text.append(buf, static_cast<std::size_t>(r));
    if (text.size() > (1u << 20)) break;  // bounded; a manifest is small
  }
  ::close(fd);
  auto parsed = parse_json(text, 8);
  auto bad = [&](const std::string& why) {
    log::get("iaapi")->warn("ignoring download manifest {}/{}: {}", folder_.string(), kManifest,
                            why);
    manifest_slide_.clear();
    manifest_complete_ = false;
    entries_.clear();
  };
  if (!parsed || !parsed.value->is_object()) return bad("not a JSON object");
  const auto& o = parsed.value->get_object();
  const auto* slide = o.if_contains("slide");
  const auto* complete = o.if_contains("complete");
  const auto* files = o.if_contains("files");
  if (!slide || !slide->is_string() || !files || !files->is_array())
    return bad("missing slide or files");
  manifest_slide_ = std::string(slide->get_string());
  manifest_complete_ = complete && complete->is_bool() && complete->get_bool();
  for (const auto& f : files->get_array()) {
    const auto* fo = f.if_object();
    const auto* name = fo ? fo->if_contains("name") : nullptr;
    const auto* size = fo ? fo->if_contains("size") : nullptr;
    if (!name || !name->is_string() || !size || !(size->is_int64() || size->is_uint64()))
      return bad("bad file entry");
    std::string n(name->get_string());
    if (!safe_path_component(n)) return bad("unsafe file name in manifest");
    entries_.push_back({std::move(n), size->is_int64()
                                          ? static_cast<std::uint64_t>(size->get_int64())
                                          : size->get_uint64()});
  }
}

void FileDownload::save_manifest() {
  boost::json::object o;
  o["slide"] = manifest_slide_;
  o["complete"] = manifest_complete_;
  boost::json::array files;
  for (auto& e : entries_) {
    boost::json::object f;
    f["name"] = e.name;
    f["size"] = e.size;
    files.push_back(std::move(f));
  }
  o["files"] = std::move(files);
  const std::string text = boost::json::serialize(o) + "\n";
  const std::string tmp = std::string(kManifest) + ".tmp";
  const std::string what = (folder_ / tmp).string();
  const int fd =
      ::openat(dirfd_, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) throw_errno("open " + what);
  try {
    write_all(fd, text.data(), text.size(), what);
    if (::fsync(fd) != 0) throw_errno("fsync " + what);
  } catch (...) {
    ::close(fd);
    ::unlinkat(dirfd_, tmp.c_str(), 0);
    throw;
  }
  ::close(fd);
  if (::renameat(dirfd_, tmp.c_str(), dirfd_, kManifest) != 0) throw_errno("rename " + what);
  ::fsync(dirfd_);
}

std::optional<std::vector<fs::path>> FileDownload::already_complete() const {
  if (!manifest_complete_ || manifest_slide_ != slide_id_ || entries_.empty()) return std::nullopt;
  std::vector<fs::path> out;
  for (auto& e : entries_) {
    const auto size = size_on_disk(e.name);
    if (!size || *size != e.size) return std::nullopt;
    out.push_back(folder_ / e.name);
  }
  return out;
}

void FileDownload::begin(long, const HeaderList& headers) {
  abort();  // whatever a previous attempt left
  parser_.reset();
  done_ = 0;
  names_.clear();
  seen_.clear();
  total_ = parse_length(header(headers, "content-length")).value_or(0);
  if (manifest_slide_ != slide_id_) {
    manifest_slide_ = slide_id_;
    entries_.clear();
  }
  manifest_complete_ = false;

  const std::string type = header(headers, "content-type");
  const HeaderValue ct = parse_header_value(type);
  if (ct.token.starts_with("multipart/")) {
    const std::string boundary = multipart_boundary(type);
    MultipartParser::Callbacks cb;
    cb.on_part_begin = [this](const PartHeaders& h) {
      const std::string part = "part " + std::to_string(parser_->parts());
      const auto cd = h.get("content-disposition");
      if (!cd) throw MultipartError(part + " has no Content-Disposition (no file name)");
      const auto raw = disposition_filename(*cd);
      if (!raw) throw MultipartError(part + " has no filename in its Content-Disposition");
      std::optional<std::uint64_t> expected;
      if (auto len = h.get("content-length")) {
        expected = parse_length(*len);
        if (!expected) throw MultipartError(part + ": bad Content-Length \"" + *len + "\"");
      }
      open_file(safe_file_name(*raw), expected);
    };
    cb.on_data = [this](std::span<const char> s) { write_file(s.data(), s.size()); };
    cb.on_part_end = [this] { close_file(); };
    parser_ = std::make_unique<MultipartParser>(boundary, std::move(cb));
    return;
  }
  const std::string cd = header(headers, "content-disposition");
  const auto raw = cd.empty() ? std::nullopt : disposition_filename(cd);
  if (!raw)
    throw MultipartError("answer (Content-Type \"" + type +
                         "\") has no Content-Disposition filename");
  std::optional<std::uint64_t> expected;
  if (total_) expected = total_;
  open_file(safe_file_name(*raw), expected);
}

void FileDownload::data(const char* p, std::size_t n) {
  done_ += n;
  if (parser_) {
    parser_->feed(std::span<const char>(p, n));
  } else {
    write_file(p, n);
  }
  if (progress_) progress_(done_, total_);
}

void FileDownload::end() {
  if (parser_) {
    parser_->finish();
    if (parser_->parts() == 0) throw MultipartError("multipart answer without any part");
  } else {
    close_file();
  }
  manifest_slide_ = slide_id_;
  entries_ = names_;
  manifest_complete_ = true;
  save_manifest();
}

void FileDownload::abort() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (open_ && !skipping_) ::unlinkat(dirfd_, (name_ + ".part").c_str(), 0);
  open_ = false;
}

std::vector<fs::path> FileDownload::files() const {
  std::vector<fs::path> out;
  for (auto& e : names_) out.push_back(folder_ / e.name);
  return out;
}

void FileDownload::open_file(std::string name, std::optional<std::uint64_t> expected) {
  if (!seen_.insert(name).second)
    throw MultipartError("file name \"" + name + "\" appears twice in the answer");
  name_ = std::move(name);
  written_ = 0;
  expected_ = expected;
  open_ = true;
  skipping_ = false;
  if (const Entry* e = manifest_entry(name_)) {
    const auto size = size_on_disk(name_);
    if (size && *size == e->size && (!expected || *expected == e->size)) {
      skipping_ = true;  // already here from an earlier, interrupted download
      return;
    }
  }
  const std::string tmp = name_ + ".part";
  fd_ = ::openat(dirfd_, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd_ < 0) {
    open_ = false;
    throw_errno("open " + (folder_ / tmp).string());
  }
}

void FileDownload::write_file(const char* p, std::size_t n) {
  written_ += n;
  if (expected_ && written_ > *expected_)
    throw MultipartError("file \"" + name_ + "\": more than the " + std::to_string(*expected_) +
                         " bytes its Content-Length announced");
  if (!skipping_) write_all(fd_, p, n, (folder_ / (name_ + ".part")).string());
}

void FileDownload::close_file() {
  if (expected_ && written_ != *expected_)
    throw MultipartError("file \"" + name_ + "\": " + std::to_string(written_) +
                         " bytes, Content-Length announced " + std::to_string(*expected_));
  if (skipping_) {
    // Kept from an earlier attempt because its size matched what was on
    // disk; the answer now holds another length (without a Content-Length
    // to tell at the start): the file changed. Forgotten, so that the next
    // attempt downloads it whole.
    const Entry* e = manifest_entry(name_);
    if (e && e->size != written_) {
      const std::string why = "file \"" + name_ + "\": " + std::to_string(written_) + " bytes now, " +
                              std::to_string(e->size) + " kept from an earlier attempt: it changed";
      std::erase_if(entries_, [&](const Entry& x) { return x.name == name_; });
      save_manifest();
      ::unlinkat(dirfd_, name_.c_str(), 0);
      open_ = false;
      throw MultipartError(why);
    }
  }
  if (!skipping_) {
    const std::string tmp = name_ + ".part";
    const std::string what = (folder_ / tmp).string();
    if (::fsync(fd_) != 0) throw_errno("fsync " + what);
    ::close(fd_);
    fd_ = -1;
    if (::renameat(dirfd_, tmp.c_str(), dirfd_, name_.c_str()) != 0) throw_errno("rename " + what);
    ::fsync(dirfd_);
    // Recorded at once, so an interrupted multipart download keeps it.
    bool found = false;
    for (auto& e : entries_)
      if (e.name == name_) {
        e.size = written_;
        found = true;
      }
    if (!found) entries_.push_back({name_, written_});
    save_manifest();
  }
  open_ = false;
  names_.push_back({name_, written_});
}

}  // namespace iaserve::iaapi
