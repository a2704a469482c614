#pragma once
// The slides a simulator serves: one per slide file in its folder, or one per
// sub-folder holding a multi-file slide. Each gets a stable id and a
// generated case (accession number, block, staining, specimen) so metadata
// looks like a real PACS's.
//
// Slide ids: the file name without its extension (for a folder, the folder
// name), every character outside [A-Za-z0-9._-] replaced by '_'. When two
// entries would get the same id, both use their whole sanitised file name
// (extension included) instead. GET /_sim/slides lists ids and files.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "iaapi/messages.hpp"
#include "worker/slide/slide.hpp"

namespace iaserve::dpatsim {

namespace fs = std::filesystem;

struct CaseData {
  std::string accession_number;  // "SIM26-004711"
  std::string issuer = "DPATSIM";
  std::string block;             // "A1"
  std::string staining = "H&E";
  std::string specimen_anatomy, specimen_description;
  std::string series_instance_uid, study_instance_uid;  // "1.2.752.24.x.y"
  std::string lis_slide_id, exam_id, exam_date_time, exam_code, exam_description;
  std::string body_part, station_name;
  std::int64_t priority = 0;
};

struct SlideEntry {
  std::string id;
  fs::path source;                 // the entry in the folder: a file or a folder
  fs::path main_file;              // what OpenSlide opens
  std::vector<fs::path> files;     // what /files sends (one, or several)
  std::string file_mime;           // fileFormat.mimeType
  std::int64_t width = 0, height = 0;
  double mpp = 0;                  // micronsPerPixel (level 0)
  bool mpp_known = false;
  CaseData case_data;
};

class Catalog {
 public:
  // Scans `folder` (not recursively, except inside a multi-file slide's
  // sub-folder). Files OpenSlide cannot open are skipped with a log line.
  // Throws std::runtime_error naming the folder when it is not a folder.
  explicit Catalog(const fs::path& folder, std::int64_t tile_size = 256);

  const std::vector<SlideEntry>& slides() const { return slides_; }
  const SlideEntry* find(std::string_view id) const;
  std::int64_t tile_size() const { return tile_size_; }
  // Opened on first use and kept (shared, thread-safe reads).
  std::shared_ptr<const slide::Slide> open(const SlideEntry& entry) const;

  // ImageInfo as DPAT answers GET /slides/{id}/info. Without `extended` only
  // the image description and staining/block/specimen; extended adds exam
  // and series fields; include_phi adds the patient-identifying ones
  // (accession number, LIS slide id, study, exam id and time).
  iaapi::ImageInfo image_info(const SlideEntry& entry, bool extended, bool include_phi,
                              std::optional<iaapi::QualityControlData> qc) const;
  iaapi::CaseImageInfo case_image_info(const SlideEntry& entry, bool include_phi) const;

 private:
  std::vector<SlideEntry> slides_;
  std::int64_t tile_size_;
  mutable slide::SlideCache cache_{64};
};

// The sanitised id part of a name: [A-Za-z0-9._-] kept, the rest '_'.
std::string sanitize_id(std::string_view name);

}  // namespace iaserve::dpatsim
