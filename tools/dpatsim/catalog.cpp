#include "tools/dpatsim/catalog.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <stdexcept>

#include "iaapi/log.hpp"

namespace iaserve::dpatsim {
namespace {

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e;
}

std::string mime_for(const fs::path& p) {
  auto e = lower_ext(p);
  if (e == ".svs" || e == ".tif" || e == ".tiff") return "image/tiff";
  if (e == ".ndpi") return "image/x-hamamatsu-ndpi";
  if (e == ".mrxs") return "application/x-mirax";
  return "application/octet-stream";
}

// Files OpenSlide opens directly, tried first inside a multi-file folder.
int main_file_rank(const fs::path& p) {
  static const std::vector<std::string> order = {".mrxs", ".vms", ".vmu", ".scn", ".svs", ".ndpi",
                                                 ".bif",  ".tif", ".tiff", ".svslide"};
  auto e = lower_ext(p);
  auto it = std::find(order.begin(), order.end(), e);
  return it == order.end() ? static_cast<int>(order.size()) : static_cast<int>(it - order.begin());
}

CaseData make_case(const std::string& id, int index) {
  std::uint64_t h = fnv1a(id);
  CaseData c;
  char buf[64];
  std::snprintf(buf, sizeof buf, "SIM26-%06llu", static_cast<unsigned long long>(h % 1000000));
  c.accession_number = buf;
  static const char* blocks[] = {"A1", "A2", "B1", "B3", "C2"};
  c.block = blocks[(h >> 20) % 5];
  static const std::pair<const char*, const char*> specimens[] = {
      {"Breast", "Core needle biopsy, left breast"},
      {"Colon", "Polypectomy, sigmoid colon"},
      {"Prostate", "Needle biopsy, right base"},
      {"Skin", "Punch biopsy, forearm"},
      {"Lung", "Wedge resection, right upper lobe"}};
  auto& sp = specimens[(h >> 28) % 5];
  c.specimen_anatomy = sp.first;
  c.specimen_description = sp.second;
  c.body_part = sp.first;
  unsigned long long a = (h >> 8) % 100000000ull, b = (h >> 36) % 1000000ull;
  std::snprintf(buf, sizeof buf, "1.2.752.24.3.%llu.%llu.%d", a, b, index + 1);
  c.series_instance_uid = buf;
  std::snprintf(buf, sizeof buf, "1.2.752.24.2.%llu.%llu", a, b);
  c.study_instance_uid = buf;
  c.lis_slide_id = c.accession_number + "-" + c.block + "-1";
  std::snprintf(buf, sizeof buf, "EX%08llu", a);
  c.exam_id = buf;
  std::snprintf(buf, sizeof buf, "2026-%02d-%02dT%02d:%02d:00", static_cast<int>(1 + (h >> 40) % 12),
                static_cast<int>(1 + (h >> 44) % 28), static_cast<int>(7 + (h >> 50) % 10),
                static_cast<int>((h >> 54) % 60));
  c.exam_date_time = buf;
  c.exam_code = "PAT01";
  c.exam_description = "Histopathology";
  c.station_name = "SIM-SCANNER-1";
  c.priority = static_cast<std::int64_t>((h >> 58) % 3);
  return c;
}

}  // namespace

std::string sanitize_id(std::string_view name) {
  std::string out(name);
  for (auto& ch : out) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (!(std::isalnum(c) || c == '.' || c == '_' || c == '-')) ch = '_';
  }
  if (out.empty() || out == "." || out == "..") out = "_" + out;
  return out;
}

Catalog::Catalog(const fs::path& folder, std::int64_t tile_size) : tile_size_(tile_size) {
  auto log = iaserve::log::get("sim");
  if (!fs::is_directory(folder)) throw std::runtime_error("--slides " + folder.string() + ": not a folder");
  std::vector<fs::path> entries;
  for (const auto& e : fs::directory_iterator(folder)) {
    auto name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    entries.push_back(e.path());
  }
  std::sort(entries.begin(), entries.end());

  std::vector<SlideEntry> found;
  for (const auto& p : entries) {
    SlideEntry s;
    s.source = p;
    if (fs::is_directory(p)) {
      for (const auto& f : fs::recursive_directory_iterator(p))
        if (f.is_regular_file() && f.path().filename().string()[0] != '.') s.files.push_back(f.path());
      std::sort(s.files.begin(), s.files.end());
      auto candidates = s.files;
      std::stable_sort(candidates.begin(), candidates.end(),
                       [](const fs::path& a, const fs::path& b) { return main_file_rank(a) < main_file_rank(b); });
      for (const auto& c : candidates) {
        try {
          auto opened = slide::Slide::open(c);
          s.main_file = c;
          break;
        } catch (const std::exception&) {
        }
      }
      if (s.main_file.empty()) {
        log->warn("skipping folder {}: no file in it opens as a slide", p.string());
        continue;
      }
    } else if (fs::is_regular_file(p)) {
      s.main_file = p;
      s.files = {p};
    } else {
      continue;
    }
    try {
      auto sl = cache_.get(s.main_file);
      s.width = sl->width();
      s.height = sl->height();
      if (auto m = sl->mpp(); m && *m > 0) {
        s.mpp = *m;
        s.mpp_known = true;
      } else {
        s.mpp = 0.25;  // DPAT always reports one; a slide without says nothing better
      }
    } catch (const std::exception& e) {
      log->info("skipping {}: {}", p.string(), e.what());
      continue;
    }
    s.file_mime = mime_for(s.main_file);
    found.push_back(std::move(s));
  }
  // Ids from names; a clash falls back to the whole file name for all involved.
  std::map<std::string, int> count;
  auto stem_id = [](const SlideEntry& s) {
    return sanitize_id(fs::is_directory(s.source) ? s.source.filename().string() : s.source.stem().string());
  };
  for (const auto& s : found) ++count[stem_id(s)];
  int index = 0;
  for (auto& s : found) {
    auto id = stem_id(s);
    if (count[id] > 1) id = sanitize_id(s.source.filename().string());
    s.id = id;
    s.case_data = make_case(s.id, index++);
    log->info("slide {}: {} ({}x{}, {} file{})", s.id, s.main_file.string(), s.width, s.height, s.files.size(),
              s.files.size() == 1 ? "" : "s");
    slides_.push_back(std::move(s));
  }
}

const SlideEntry* Catalog::find(std::string_view id) const {
  for (const auto& s : slides_)
    if (s.id == id) return &s;
  return nullptr;
}

std::shared_ptr<const slide::Slide> Catalog::open(const SlideEntry& entry) const { return cache_.get(entry.main_file); }

iaapi::ImageInfo Catalog::image_info(const SlideEntry& s, bool extended, bool include_phi,
                                     std::optional<iaapi::QualityControlData> qc) const {
  iaapi::ImageInfo i;
  i.id = s.id;
  i.is_streamable = true;
  i.image_size = {s.width, s.height};
  i.tile_size = {tile_size_, tile_size_};
  i.microns_per_pixel = s.mpp;
  i.focal_planes = {{"0", 0.0}};
  i.optical_paths = {{"0", "Brightfield"}};
  i.stored_tile_format = iaapi::TileFormat{"image/jpeg", "jpg"};
  i.available_tile_formats = {{"image/jpeg", "jpg"}, {"image/png", "png"}};
  i.file_format = s.file_mime;
  const auto& c = s.case_data;
  i.staining = c.staining;
  i.block = c.block;
  i.specimen = iaapi::Specimen{c.specimen_anatomy, c.specimen_description};
  if (extended) {
    i.body_part = c.body_part;
    i.exam_code = c.exam_code;
    i.exam_description = c.exam_description;
    i.station_name = c.station_name;
    i.priority = c.priority;
    i.series_instance_uid = c.series_instance_uid;
    i.quality_control = qc.value_or(iaapi::QualityControlData{});
  }
  if (include_phi) {
    i.accession_number = c.accession_number;
    i.accession_number_issuer = c.issuer;
    i.lis_slide_id = c.lis_slide_id;
    i.study_instance_uid = c.study_instance_uid;
    i.exam_id = c.exam_id;
    i.exam_date_time = c.exam_date_time;
  }
  return i;
}

iaapi::CaseImageInfo Catalog::case_image_info(const SlideEntry& s, bool include_phi) const {
  iaapi::CaseImageInfo i;
  i.id = s.id;
  i.staining = s.case_data.staining;
  i.block = s.case_data.block;
  i.specimen = iaapi::Specimen{s.case_data.specimen_anatomy, s.case_data.specimen_description};
  i.series_instance_uid = s.case_data.series_instance_uid;
  if (include_phi) i.lis_slide_id = s.case_data.lis_slide_id;
  return i;
}

}  // namespace iaserve::dpatsim
