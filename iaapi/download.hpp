#pragma once
// Writing the answer of GET /slides/{id}/files into a folder, as the client
// streams it: one file (Content-Disposition filename) or several
// (multipart/related, one file per part). Each file goes to NAME.part,
// is fsynced, then renamed to NAME; the folder is fsynced after each rename.
//
// The manifest folder/.iaserve-download (JSON, replaced atomically) records
// {"slide": id, "complete": bool, "files": [{"name", "size"}]}: a file is
// added once renamed; "complete" is set when the whole answer arrived. A
// complete manifest of the same slide whose files all exist with their sizes
// makes a repeat download a no-op (no request). A file the manifest lists
// with its size (and whose part announces the same Content-Length, if any)
// is not rewritten when an interrupted download is requested again.
// The folder is flock()ed for the life of a FileDownload, so two downloads
// into one folder run one after the other.
#include "iaapi/client.hpp"

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace iaserve::iaapi {

class MultipartParser;
struct PartHeaders;

using HeaderList = std::vector<std::pair<std::string, std::string>>;  // names lower-cased

// Where the body of a streamed 2xx answer goes. One attempt is
// begin, data..., end; a failed attempt (transport error, or a throw from
// any of these) gets abort() and may be followed by a new begin.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  virtual void begin(long status, const HeaderList& headers) = 0;
  virtual void data(const char* p, std::size_t n) = 0;
  virtual void end() = 0;
  virtual void abort() noexcept = 0;
};

class FileDownload final : public StreamSink {
 public:
  static constexpr const char* kManifest = ".iaserve-download";

  // Creates the folder if absent; throws std::filesystem::filesystem_error
  // or std::system_error naming it when it cannot.
  FileDownload(std::filesystem::path folder, std::string_view slide_id, ProgressFn progress);
  ~FileDownload() override;
  FileDownload(const FileDownload&) = delete;
  FileDownload& operator=(const FileDownload&) = delete;

  // The files, when a complete manifest of this slide matches the folder.
  std::optional<std::vector<std::filesystem::path>> already_complete() const;

  void begin(long status, const HeaderList& headers) override;
  void data(const char* p, std::size_t n) override;
  void end() override;
  void abort() noexcept override;

  // After end(): the files of the answer, in arrival order.
  std::vector<std::filesystem::path> files() const;

 private:
  struct Entry {
    std::string name;
    std::uint64_t size = 0;
  };
  void open_file(std::string name, std::optional<std::uint64_t> expected);
  void write_file(const char* p, std::size_t n);
  void close_file();
  void load_manifest();
  void save_manifest();
  const Entry* manifest_entry(const std::string& name) const;
  std::optional<std::uint64_t> size_on_disk(const std::string& name) const;

  std::filesystem::path folder_;
  std::string slide_id_;
  ProgressFn progress_;
  int dirfd_ = -1;

  // Manifest.
  std::string manifest_slide_;
  bool manifest_complete_ = false;
  std::vector<Entry> entries_;

  // This attempt.
  std::unique_ptr<MultipartParser> parser_;
  std::uint64_t done_ = 0;
  std::uint64_t total_ = 0;
  std::vector<Entry> names_;
  std::set<std::string> seen_;

  // The file being written.
  int fd_ = -1;
  bool open_ = false;
  bool skipping_ = false;
  std::string name_;
  std::uint64_t written_ = 0;
  std::optional<std::uint64_t> expected_;
};

}  // namespace iaserve::iaapi
