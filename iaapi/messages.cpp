#include "iaapi/messages.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <new>
#include <utility>

namespace iaserve::iaapi {

namespace json = boost::json;

namespace {
// Numbers are written so that reading them back gives the same double:
// Boost.JSON 1.81 does not parse every shortest-form double back exactly (about
// one in seven random coordinates comes back one ulp off, and very large or
// small exponents drift further), which would change a result a little on
// every decode/encode. Rounded to 15 significant digits (absolute 1e-22 below
// 1e-8) a value parses back exactly; integral values and everything from 1e15
// up (decoding refuses magnitudes above 1e18) are written as integers.
constexpr double kPow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                             1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

json::value num(double d) {
  const double a = std::abs(d);
  if (!std::isfinite(d)) return json::value(nullptr);  // JSON has no NaN or infinity
  if (a >= 1e15 || d == std::trunc(d)) {
    if (a < 9.2e18) return json::value(static_cast<std::int64_t>(std::round(d)));
    return json::value(d);
  }
  double q;
  if (a >= 1e-8) {
    const int e = static_cast<int>(std::floor(std::log10(a)));
    const int k = std::clamp(14 - e, 0, 22);
    q = std::round(d * kPow10[k]) / kPow10[k];
  } else {
    q = std::round(d * 1e22) / 1e22;
  }
  if (q == std::trunc(q)) return json::value(static_cast<std::int64_t>(q));
  return json::value(q);
}

// Free-form JSON (contexts, unknown fields) we pass back, its numbers
// written the same way as ours. Numbers from 9.2e18 up are kept as they are.
void normalize_numbers(json::value& v, int depth = 0) {
  if (depth > 64) return;  // parse_json never gets here; hand-built values might
  switch (v.kind()) {
    case json::kind::double_:
      v = num(v.get_double());
      break;
    case json::kind::object:
      for (auto& kv : v.get_object()) normalize_numbers(kv.value(), depth + 1);
      break;
    case json::kind::array:
      for (auto& x : v.get_array()) normalize_numbers(x, depth + 1);
      break;
    default:
      break;
  }
}

}  // namespace

// ================================================================ enums
namespace {
template <class E>
struct EnumName {
  E value;
  std::string_view name;
};

constexpr EnumName<Action> kActions[] = {{Action::create, "create"},
                                         {Action::modify, "modify"},
                                         {Action::delete_, "delete"},
                                         {Action::cancel, "cancel"}};
constexpr EnumName<InputType> kInputTypes[] = {{InputType::wholeSlide, "wholeSlide"},
                                               {InputType::taggedPolygon, "taggedPolygon"},
                                               {InputType::multiArea, "multiArea"}};
constexpr EnumName<ResultType> kResultTypes[] = {{ResultType::primitive, "primitive"},
                                                 {ResultType::patchCollection, "patchCollection"}};
constexpr EnumName<AttachmentState> kAttachmentStates[] = {
    {AttachmentState::new_, "new"},
    {AttachmentState::upload_in_progress, "upload-in-progress"},
    {AttachmentState::stored, "stored"}};
constexpr EnumName<QualityStatus> kQualityStatuses[] = {{QualityStatus::NotSet, "NotSet"},
                                                        {QualityStatus::QualityOk, "QualityOk"},
                                                        {QualityStatus::Rejected, "Rejected"}};

template <class E, std::size_t N>
std::string_view name_of(const EnumName<E> (&table)[N], E e) noexcept {
  for (const auto& entry : table)
    if (entry.value == e) return entry.name;
  return "?";
}

template <class E, std::size_t N>
std::optional<E> value_of(const EnumName<E> (&table)[N], std::string_view s) noexcept {
  for (const auto& entry : table)
    if (entry.name == s) return entry.value;
  return std::nullopt;
}

// "create, modify, delete or cancel"
template <class E, std::size_t N>
std::string expected_names(const EnumName<E> (&table)[N]) {
  std::string out;
  for (std::size_t i = 0; i < N; ++i) {
    if (i > 0) out += (i + 1 == N) ? " or " : ", ";
    out += table[i].name;
  }
  return out;
}
}  // namespace

std::string_view to_string(Action a) noexcept {
  return name_of(kActions, a);
}
std::string_view to_string(InputType t) noexcept {
  return name_of(kInputTypes, t);
}
std::string_view to_string(ResultType t) noexcept {
  return name_of(kResultTypes, t);
}
std::string_view to_string(AttachmentState s) noexcept {
  return name_of(kAttachmentStates, s);
}
std::string_view to_string(QualityStatus s) noexcept {
  return name_of(kQualityStatuses, s);
}
std::optional<Action> parse_action(std::string_view s) noexcept {
  return value_of(kActions, s);
}
std::optional<InputType> parse_input_type(std::string_view s) noexcept {
  return value_of(kInputTypes, s);
}

// ================================================================ small methods
void Result::set_property(std::string name, DisplayValue value) {
  for (auto& p : display_properties)
    if (p.name == name) {
      p.value = std::move(value);
      return;
    }
  display_properties.push_back({std::move(name), std::move(value)});
}

const DisplayValue* Result::property(std::string_view name) const {
  for (const auto& p : display_properties)
    if (p.name == name) return &p.value;
  return nullptr;
}

std::vector<Polygon> InvocationInput::regions() const {
  if (type == InputType::taggedPolygon && tagged_polygon) return {tagged_polygon->polygon};
  if (type == InputType::multiArea && multi_area) return multi_area->polygons;
  return {};
}

Result as_result(const StoredResult& r) {
  return static_cast<const Result&>(r);
}

// ================================================================ decoding
namespace {

// The path of the value being read, formatted only when something fails.
struct Segment {
  std::string_view key;
  std::size_t index = 0;
  bool is_index = false;
};

struct Failed {};

// Larger numbers are not coordinates, sizes or scores; refusing them keeps
// every accepted number exactly representable in what we write back.
constexpr double kMaxMagnitude = 1e18;  // thrown inside a decode; never leaves decode<T>()

// Untrusted text inside an error message: bounded, control characters shown
// as '?', so a message is safe to log and to send back.
void append_clean(std::string& out, std::string_view s, std::size_t limit = 64) {
  const bool cut = s.size() > limit;
  for (char ch : s.substr(0, limit)) {
    const auto c = static_cast<unsigned char>(ch);
    out.push_back(c < 0x20 || c == 0x7f ? '?' : ch);
  }
  if (cut) out += "...";
}

class Reader {
 public:
  Reader() { path_.reserve(16); }

  [[noreturn]] void fail(std::string message) {
    error = {path_string(), std::move(message)};
    throw Failed{};
  }

  std::string path_string() const {
    std::string out;
    for (const auto& s : path_) {
      if (s.is_index) {
        out += '[';
        out += std::to_string(s.index);
        out += ']';
      } else {
        if (!out.empty()) out += '.';
        append_clean(out, s.key);
      }
    }
    return out;
  }

  void push(std::string_view key) { path_.push_back({key, 0, false}); }
  void push(std::size_t index) { path_.push_back({{}, index, true}); }
  void pop() { path_.pop_back(); }

  FieldError error;

 private:
  std::vector<Segment> path_;
};

// RAII path segment; popping during unwinding is harmless.
class At {
 public:
  template <class K>
  At(Reader& r, K k) : r_(r) {
    r_.push(k);
  }
  ~At() { r_.pop(); }
  At(const At&) = delete;
  At& operator=(const At&) = delete;

 private:
  Reader& r_;
};

std::string expected(const char* what, const json::value& v) {
  std::string out = "expected ";
  out += what;
  out += ", got ";
  out += json_kind_name(v);
  return out;
}

const json::object& read_object(Reader& r, const json::value& v) {
  if (!v.is_object()) r.fail(expected("object", v));
  return v.get_object();
}

const json::array& read_array(Reader& r, const json::value& v, std::size_t limit) {
  if (!v.is_array()) r.fail(expected("array", v));
  const auto& a = v.get_array();
  if (a.size() > limit)
    r.fail("too many elements (" + std::to_string(a.size()) + ", limit " + std::to_string(limit) +
           ")");
  return a;
}

std::string read_string_limited(Reader& r, const json::value& v, std::size_t limit) {
  if (!v.is_string()) r.fail(expected("string", v));
  const auto& s = v.get_string();
  if (s.size() > limit)
    r.fail("too long (" + std::to_string(s.size()) + " bytes, limit " + std::to_string(limit) +
           ")");
  return std::string(s.data(), s.size());
}

std::string read_string(Reader& r, const json::value& v) {
  return read_string_limited(r, v, kMaxStringLength);
}

std::string read_id(Reader& r, const json::value& v) {
  if (!v.is_string()) r.fail(expected("string", v));
  const auto& s = v.get_string();
  if (auto problem = id_problem(std::string_view(s.data(), s.size()))) r.fail(*problem);
  return std::string(s.data(), s.size());
}

double read_number(Reader& r, const json::value& v) {
  double d = 0;
  switch (v.kind()) {
    case json::kind::int64:
      d = static_cast<double>(v.get_int64());
      break;
    case json::kind::uint64:
      d = static_cast<double>(v.get_uint64());
      break;
    case json::kind::double_:
      d = v.get_double();
      break;
    default:
      r.fail(expected("number", v));
  }
  if (!std::isfinite(d)) r.fail("not a finite number");
  if (std::abs(d) > kMaxMagnitude) r.fail("out of range (magnitude above 1e18)");
  return d;
}

std::int64_t read_int(Reader& r, const json::value& v) {
  switch (v.kind()) {
    case json::kind::int64:
      return v.get_int64();
    case json::kind::uint64:
      if (v.get_uint64() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        r.fail("integer out of range");
      return static_cast<std::int64_t>(v.get_uint64());
    case json::kind::double_: {
      const double d = v.get_double();
      // 3.0 is an integer written by a sloppy encoder; 3.5 is not.
      if (std::isfinite(d) && d == std::trunc(d) && std::abs(d) < 9.0e15)
        return static_cast<std::int64_t>(d);
      if (std::isfinite(d) && d == std::trunc(d)) r.fail("integer out of range");
      r.fail("expected integer, got a fractional number");
    }
    default:
      r.fail(expected("integer", v));
  }
}

bool read_bool(Reader& r, const json::value& v) {
  if (!v.is_bool()) r.fail(expected("bool", v));
  return v.get_bool();
}

json::object read_free_object(Reader& r, const json::value& v) {
  json::value copy(read_object(r, v));
  normalize_numbers(copy);
  return std::move(copy.get_object());
}

// A required member: "key: missing" when absent.
template <class F>
auto required(Reader& r, const json::object& o, std::string_view key, F&& f) {
  At at(r, key);
  const json::value* v = o.if_contains(key);
  if (!v) r.fail("missing");
  return f(r, *v);
}

// An optional member: absent or null gives nullopt.
template <class F>
auto optional(Reader& r, const json::object& o, std::string_view key, F&& f)
    -> std::optional<decltype(f(r, std::declval<const json::value&>()))> {
  const json::value* v = o.if_contains(key);
  if (!v || v->is_null()) return std::nullopt;
  At at(r, key);
  return f(r, *v);
}

template <class F>
auto read_list(Reader& r, const json::value& v, std::size_t limit, F&& f) {
  using T = decltype(f(r, std::declval<const json::value&>()));
  const auto& a = read_array(r, v, limit);
  std::vector<T> out;
  out.reserve(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    At at(r, i);
    out.push_back(f(r, a[i]));
  }
  return out;
}

// An optional list: absent or null gives an empty list.
template <class F>
auto optional_list(Reader& r, const json::object& o, std::string_view key, std::size_t limit,
                   F&& f) {
  using T = decltype(f(r, std::declval<const json::value&>()));
  auto list = optional(
      r, o, key, [&](Reader& rr, const json::value& v) { return read_list(rr, v, limit, f); });
  return list ? std::move(*list) : std::vector<T>{};
}

template <class E, std::size_t N>
E read_enum(Reader& r, const json::value& v, const EnumName<E> (&table)[N]) {
  if (!v.is_string()) r.fail(expected("string", v));
  const auto& s = v.get_string();
  if (auto e = value_of(table, std::string_view(s.data(), s.size()))) return *e;
  std::string msg = "unknown value \"";
  append_clean(msg, std::string_view(s.data(), s.size()));
  msg += "\" (expected " + expected_names(table) + ")";
  r.fail(std::move(msg));
}

// Members not in `known`, kept verbatim.
json::object collect_extra(const json::object& o, std::initializer_list<std::string_view> known) {
  json::object extra;
  for (const auto& kv : o) {
    const std::string_view k(kv.key().data(), kv.key().size());
    if (std::find(known.begin(), known.end(), k) == known.end()) {
      json::value copy = kv.value();
      normalize_numbers(copy);
      extra.emplace(k, std::move(copy));
    }
  }
  return extra;
}

std::vector<std::string> read_string_list(Reader& r, const json::value& v) {
  return read_list(r, v, kMaxListLength, read_string);
}

// ---------------------------------------------------------------- geometry
Point read_point(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Point p;
  p.x = required(r, o, "x", read_number);
  p.y = required(r, o, "y", read_number);
  return p;
}

Polygon read_polygon_min(Reader& r, const json::value& v, std::size_t min_points) {
  const auto& o = read_object(r, v);
  Polygon poly;
  poly.points = required(r, o, "points", [](Reader& rr, const json::value& pv) {
    return read_list(rr, pv, kMaxPointsPerPolygon, read_point);
  });
  if (poly.points.size() < min_points) {
    At at(r, "points");
    r.fail(std::to_string(poly.points.size()) + " points, need at least " +
           std::to_string(min_points));
  }
  return poly;
}

Polygon read_polygon(Reader& r, const json::value& v) {
  return read_polygon_min(r, v, 0);
}
// A region the user drew: a real area.
Polygon read_region(Reader& r, const json::value& v) {
  return read_polygon_min(r, v, 3);
}

// ---------------------------------------------------------------- small messages
CallbackInfo read_callback(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  CallbackInfo c;
  c.url = required(r, o, "url", read_string);
  c.token = required(r, o, "token", read_string);
  return c;
}

ApplicationInfo read_app_info(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  ApplicationInfo i;
  i.api_version = required(r, o, "apiVersion", read_string);
  i.software_version = optional(r, o, "softwareVersion", read_string).value_or("");
  return i;
}

Registration read_registration(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Registration reg;
  reg.application_id = required(r, o, "applicationId", read_id);
  reg.display_name = required(r, o, "displayName", read_string);
  reg.url = required(r, o, "url", read_string);
  reg.manufacturer = optional(r, o, "manufacturer", read_string).value_or("");
  reg.input_template = required(r, o, "inputTemplate", [](Reader& rr, const json::value& tv) {
    const auto& t = read_object(rr, tv);
    InputTemplate it;
    it.type = required(rr, t, "type", [](Reader& r3, const json::value& x) {
      return read_enum(r3, x, kInputTypes);
    });
    it.tags = optional(rr, t, "content", [](Reader& r3, const json::value& cv) {
      const auto& c = read_object(r3, cv);
      return optional(r3, c, "tags", read_string_list).value_or(std::vector<std::string>{});
    });
    return it;
  });
  reg.context = optional(r, o, "context", read_free_object).value_or(json::object{});
  return reg;
}

QualityControlData read_qc_data(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  QualityControlData q;
  q.status = required(r, o, "status", [](Reader& rr, const json::value& x) {
    return read_enum(rr, x, kQualityStatuses);
  });
  q.version_id = optional(r, o, "versionId", read_string).value_or("");
  return q;
}

QualityControl read_quality_control(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  QualityControl q;
  q.application_version = required(r, o, "applicationVersion", read_string);
  q.quality_control = required(r, o, "qualityControl", read_qc_data);
  return q;
}

// ---------------------------------------------------------------- image info
// Sizes in pixels, 1 to max: the largest slides are a few hundred thousand
// pixels a side and tiles a few thousand; anything near int64's end would
// overflow the tile arithmetic that follows.
Size read_positive_size(Reader& r, const json::value& v, std::int64_t max) {
  const auto& o = read_object(r, v);
  auto positive = [max](Reader& rr, const json::value& x) {
    const std::int64_t n = read_int(rr, x);
    if (n <= 0) rr.fail(std::to_string(n) + " is not positive");
    if (n > max) rr.fail(std::to_string(n) + " is more than " + std::to_string(max));
    return n;
  };
  Size s;
  s.width = required(r, o, "width", positive);
  s.height = required(r, o, "height", positive);
  return s;
}
constexpr std::int64_t kMaxImageSide = std::int64_t{1} << 31;
constexpr std::int64_t kMaxTileSide = 65536;

std::string read_display_name(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  return optional(r, o, "displayName", read_string).value_or("");
}

Specimen read_specimen(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Specimen s;
  s.anatomy = optional(r, o, "anatomy", read_string);
  s.description = optional(r, o, "description", read_string);
  return s;
}

TileFormat read_tile_format(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  TileFormat f;
  f.mime_type = optional(r, o, "mimeType", read_string).value_or("");
  f.extension = optional(r, o, "extension", read_string).value_or("");
  return f;
}

json::array read_free_array(Reader& r, const json::value& v) {
  json::value copy(read_array(r, v, kMaxListLength));
  normalize_numbers(copy);
  return std::move(copy.get_array());
}

ImageInfo read_image_info(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  ImageInfo i;
  i.id = required(r, o, "id", read_id);
  i.is_streamable = optional(r, o, "isStreamable", read_bool).value_or(false);
  i.image_size = required(r, o, "imageSize", [](Reader& rr, const json::value& x) {
    return read_positive_size(rr, x, kMaxImageSide);
  });
  i.tile_size = required(r, o, "tileSize", [](Reader& rr, const json::value& x) {
    return read_positive_size(rr, x, kMaxTileSide);
  });
  i.microns_per_pixel = optional(r, o, "micronsPerPixel", [](Reader& rr, const json::value& x) {
                          const double d = read_number(rr, x);
                          if (d < 0) rr.fail("negative");
                          return d;
                        }).value_or(0.0);
  i.focal_planes =
      optional_list(r, o, "focalPlanes", kMaxListLength, [](Reader& rr, const json::value& x) {
        const auto& fo = read_object(rr, x);
        FocalPlane f;
        f.id = required(rr, fo, "id", read_string);
        f.offset_um = optional(rr, fo, "offsetUm", read_number).value_or(0.0);
        return f;
      });
  i.optical_paths =
      optional_list(r, o, "opticalPaths", kMaxListLength, [](Reader& rr, const json::value& x) {
        const auto& po = read_object(rr, x);
        OpticalPath p;
        p.id = required(rr, po, "id", read_string);
        p.description = optional(rr, po, "description", read_string).value_or("");
        return p;
      });
  i.stored_tile_format = optional(r, o, "storedTileFormat", read_tile_format);
  i.available_tile_formats =
      optional_list(r, o, "availableTileFormats", kMaxListLength, read_tile_format);
  i.file_format = optional(r, o, "fileFormat", [](Reader& rr, const json::value& x) {
    const auto& fo = read_object(rr, x);
    return optional(rr, fo, "mimeType", read_string).value_or("");
  });
  i.staining = optional(r, o, "staining", read_display_name);
  i.block = optional(r, o, "block", read_display_name);
  i.specimen = optional(r, o, "specimen", read_specimen);
  i.body_part = optional(r, o, "bodyPart", read_string);
  i.exam_code = optional(r, o, "examCode", read_string);
  i.exam_description = optional(r, o, "examDescription", read_string);
  i.station_name = optional(r, o, "stationName", read_string);
  i.priority = optional(r, o, "priority", read_int);
  i.quality_control = optional(r, o, "qualityControl", read_qc_data);
  i.series_instance_uid = optional(r, o, "seriesInstanceUid", read_string);
  i.lis_slide_id = optional(r, o, "lisSlideId", read_string);
  i.accession_number = optional(r, o, "accessionNumber", read_string);
  i.accession_number_issuer = optional(r, o, "accessionNumberIssuer", read_string);
  i.study_instance_uid = optional(r, o, "studyInstanceUid", read_string);
  i.exam_id = optional(r, o, "examId", read_string);
  i.exam_date_time = optional(r, o, "examDateTime", read_string);
  i.exam_free_fields = optional(r, o, "examFreeFields", read_free_array);
  i.extra = collect_extra(o, {"id",
                              "isStreamable",
                              "imageSize",
                              "tileSize",
                              "micronsPerPixel",
                              "focalPlanes",
                              "opticalPaths",
                              "storedTileFormat",
                              "availableTileFormats",
                              "fileFormat",
                              "staining",
                              "block",
                              "specimen",
                              "bodyPart",
                              "examCode",
                              "examDescription",
                              "stationName",
                              "priority",
                              "qualityControl",
                              "seriesInstanceUid",
                              "lisSlideId",
                              "accessionNumber",
                              "accessionNumberIssuer",
                              "studyInstanceUid",
                              "examId",
                              "examDateTime",
                              "examFreeFields"});
  return i;
}

CaseImageInfo read_case_image_info(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  CaseImageInfo i;
  i.id = required(r, o, "id", read_id);
  i.staining = optional(r, o, "staining", read_display_name);
  i.block = optional(r, o, "block", read_display_name);
  i.specimen = optional(r, o, "specimen", read_specimen);
  i.series_instance_uid = optional(r, o, "seriesInstanceUid", read_string);
  i.lis_slide_id = optional(r, o, "lisSlideId", read_string);
  i.extra =
      collect_extra(o, {"id", "staining", "block", "specimen", "seriesInstanceUid", "lisSlideId"});
  return i;
}

// ---------------------------------------------------------------- results
Style read_style(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Style s;
  s.stroke_style = optional(r, o, "strokeStyle", read_string);
  s.fill_style = optional(r, o, "fillStyle", read_string);
  s.size = optional(r, o, "size", read_int);
  return s;
}

Label read_label(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Label l;
  l.location = required(r, o, "location", read_point);
  l.label = required(r, o, "label", read_string);
  return l;
}

PrimitiveItem read_primitive_item(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  PrimitiveItem item;
  item.style = optional(r, o, "style", read_style);
  item.polygons = optional_list(r, o, "polygons", kMaxPolygons, read_polygon);
  item.polylines = optional_list(r, o, "polylines", kMaxPolygons, read_polygon);
  item.labels = optional_list(r, o, "labels", kMaxListLength, read_label);
  item.extra = collect_extra(o, {"style", "polygons", "polylines", "labels"});
  return item;
}

PatchCollection read_patch_collection(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  PatchCollection pc;
  pc.description = optional(r, o, "description", read_string).value_or("");
  pc.polygons = optional_list(r, o, "polygons", kMaxPolygons, read_polygon);
  pc.tags = optional(r, o, "tags", read_string_list).value_or(std::vector<std::string>{});
  const std::size_t tag_count = pc.tags.size();
  pc.patches =
      optional_list(r, o, "patches", kMaxListLength, [tag_count](Reader& rr, const json::value& x) {
        const auto& po = read_object(rr, x);
        Patch p;
        p.tag = required(rr, po, "tag", [tag_count](Reader& r3, const json::value& t) {
          const std::int64_t n = read_int(r3, t);
          if (n < 0 || static_cast<std::size_t>(n) >= tag_count)
            r3.fail(std::to_string(n) + " out of range [0," + std::to_string(tag_count) + ")");
          return n;
        });
        p.position = required(rr, po, "position", read_point);
        p.sort_key_value = optional(rr, po, "sortKeyValue", read_number).value_or(0.0);
        return p;
      });
  pc.patch_size = optional(r, o, "patchSize", read_int).value_or(0);
  pc.magnification = optional(r, o, "magnification", read_number).value_or(0.0);
  if (const json::value* sv = o.if_contains("statuses"); sv && !sv->is_null()) {
    At at(r, "statuses");
    const auto& so = read_object(r, *sv);
    for (const auto& kv : so) {
      const std::string_view name(kv.key().data(), kv.key().size());
      At at_name(r, name);
      const auto& st = read_object(r, kv.value());
      PatchStatus status;
      status.value = optional(r, st, "value", read_bool).value_or(true);
      status.message = optional(r, st, "message", read_string);
      pc.statuses.emplace_back(std::string(name), std::move(status));
    }
  }
  pc.actions = optional_list(r, o, "actions", kMaxListLength, [](Reader& rr, const json::value& x) {
    const auto& ao = read_object(rr, x);
    PatchAction a;
    a.id = required(rr, ao, "id", read_string);
    a.state = optional(rr, ao, "state", read_int).value_or(0);
    a.name = optional(rr, ao, "name", read_string).value_or("");
    a.tooltip = optional(rr, ao, "tooltip", read_string);
    return a;
  });
  pc.extra = collect_extra(o, {"description", "polygons", "patches", "tags", "patchSize",
                               "magnification", "statuses", "actions"});
  return pc;
}

ResultContent read_result_content(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  ResultContent c;
  c.type = required(r, o, "type", [](Reader& rr, const json::value& x) {
    return read_enum(rr, x, kResultTypes);
  });
  At at(r, "content");
  const json::value* cv = o.if_contains("content");
  if (!cv) r.fail("missing");
  if (c.type == ResultType::primitive) {
    if (cv->is_object()) {  // the single-object form of Sectra's examples
      c.single_object = true;
      c.primitives.push_back(read_primitive_item(r, *cv));
    } else if (cv->is_array()) {
      c.primitives = read_list(r, *cv, kMaxListLength, read_primitive_item);
    } else {
      r.fail(expected("array or object", *cv));
    }
  } else {
    c.patches = read_patch_collection(r, *cv);
  }
  return c;
}

ResultData read_result_data(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  ResultData d;
  d.context = optional(r, o, "context", read_free_object).value_or(json::object{});
  d.result = optional(r, o, "result", read_result_content);
  d.extra = collect_extra(o, {"context", "result"});
  return d;
}

Attachment read_attachment(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Attachment a;
  a.name = required(r, o, "name", read_string);
  a.state = required(r, o, "state", [](Reader& rr, const json::value& x) {
    return read_enum(rr, x, kAttachmentStates);
  });
  return a;
}

DisplayValue read_display_value(Reader& r, const json::value& v) {
  switch (v.kind()) {
    case json::kind::string:
      return read_string(r, v);
    case json::kind::int64:
    case json::kind::uint64:
      return read_int(r, v);
    case json::kind::double_:
      return read_number(r, v);
    default:
      r.fail(expected("string or number", v));
  }
}

void read_result_fields(Reader& r, const json::object& o, Result& out) {
  out.slide_id = required(r, o, "slideId", read_id);
  out.display_result = optional(r, o, "displayResult", read_string).value_or("");
  if (const json::value* pv = o.if_contains("displayProperties"); pv && !pv->is_null()) {
    At at(r, "displayProperties");
    const auto& po = read_object(r, *pv);
    if (po.size() > kMaxListLength)
      r.fail("too many properties (" + std::to_string(po.size()) + ", limit " +
             std::to_string(kMaxListLength) + ")");
    out.display_properties.reserve(po.size());
    for (const auto& kv : po) {
      const std::string_view name(kv.key().data(), kv.key().size());
      At at_name(r, name);
      out.display_properties.push_back({std::string(name), read_display_value(r, kv.value())});
    }
  }
  out.application_version = optional(r, o, "applicationVersion", read_string).value_or("");
  out.attachments = optional(r, o, "attachments", [](Reader& rr, const json::value& x) {
    return read_list(rr, x, kMaxListLength, read_attachment);
  });
  out.data = optional(r, o, "data", read_result_data).value_or(ResultData{});
  out.extra = collect_extra(o, {"slideId", "displayResult", "displayProperties",
                                "applicationVersion", "attachments", "data", "id", "versionId"});
}

Result read_result(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Result res;
  read_result_fields(r, o, res);
  return res;
}

StoredResult read_stored_result(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  StoredResult res;
  res.id = required(r, o, "id", read_int);
  res.version_id = required(r, o, "versionId", read_string);
  read_result_fields(r, o, res);
  return res;
}

// ---------------------------------------------------------------- invocations
InvocationInput read_create_input(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  InvocationInput in;
  in.type = required(
      r, o, "type", [](Reader& rr, const json::value& x) { return read_enum(rr, x, kInputTypes); });
  if (in.type == InputType::wholeSlide) return in;  // content, if any, means nothing
  At at(r, "content");
  const json::value* cv = o.if_contains("content");
  if (!cv || cv->is_null())
    r.fail("missing (required for input type " + std::string(to_string(in.type)) + ")");
  const auto& c = read_object(r, *cv);
  if (in.type == InputType::taggedPolygon) {
    TaggedPolygonContent t;
    t.polygon = required(r, c, "polygon", read_region);
    t.tags = optional(r, c, "tags", read_string_list);
    t.tag_index = optional(r, c, "tagIndex", read_int);
    if (t.tags) {
      At at_index(r, "tagIndex");
      if (!t.tag_index) r.fail("missing (required when tags is given)");
      if (*t.tag_index < 0 || static_cast<std::size_t>(*t.tag_index) >= t.tags->size())
        r.fail(std::to_string(*t.tag_index) + " out of range [0," + std::to_string(t.tags->size()) +
               ")");
    }
    in.tagged_polygon = std::move(t);
  } else {
    MultiAreaContent m;
    m.polygons = required(r, c, "polygons", [](Reader& rr, const json::value& x) {
      auto polys = read_list(rr, x, kMaxPolygons, read_region);
      if (polys.empty()) rr.fail("empty");
      return polys;
    });
    in.multi_area = std::move(m);
  }
  return in;
}

struct InvocationBase {
  std::string application_id;
  std::string slide_id;
  CallbackInfo callback;
  json::object context;
  std::optional<std::string> cancellation_token;
};

InvocationBase read_base(Reader& r, const json::object& o) {
  InvocationBase b;
  b.application_id = required(r, o, "applicationId", read_id);
  b.slide_id = required(r, o, "slideId", read_id);
  b.callback = required(r, o, "callbackInfo", read_callback);
  b.context = optional(r, o, "context", read_free_object).value_or(json::object{});
  b.cancellation_token = optional(r, o, "cancellationToken", read_string);
  return b;
}

Invocation read_invocation(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  Invocation inv;
  inv.action = required(
      r, o, "action", [](Reader& rr, const json::value& x) { return read_enum(rr, x, kActions); });
  InvocationBase b = read_base(r, o);
  inv.application_id = std::move(b.application_id);
  inv.slide_id = std::move(b.slide_id);
  inv.callback = std::move(b.callback);
  inv.context = std::move(b.context);
  inv.cancellation_token = std::move(b.cancellation_token);
  if (inv.action == Action::cancel) return inv;  // input, if any, means nothing
  At at(r, "input");
  const json::value* iv = o.if_contains("input");
  if (!iv || iv->is_null())
    r.fail("missing (required for action " + std::string(to_string(inv.action)) + ")");
  if (inv.action == Action::create) {
    inv.input = read_create_input(r, *iv);
  } else {
    InvocationInput in;
    in.result = read_stored_result(r, *iv);
    inv.input = std::move(in);
  }
  return inv;
}

ImageNotification read_image_notification(Reader& r, const json::value& v) {
  const auto& o = read_object(r, v);
  ImageNotification n;
  InvocationBase b = read_base(r, o);
  n.application_id = std::move(b.application_id);
  n.slide_id = std::move(b.slide_id);
  n.callback = std::move(b.callback);
  n.context = std::move(b.context);
  n.cancellation_token = std::move(b.cancellation_token);
  n.image_info = required(r, o, "imageInfo", read_image_info);
  return n;
}

// ---------------------------------------------------------------- entry
template <class T, class F>
Decoded<T> run(const json::value& v, F&& f) noexcept {
  Reader r;
  try {
    return Decoded<T>::success(f(r, v));
  } catch (const Failed&) {
    return Decoded<T>::failure(std::move(r.error));
  } catch (const std::bad_alloc&) {
    return Decoded<T>::failure({"", "out of memory"});
  } catch (const std::exception& e) {
    return Decoded<T>::failure({"", e.what()});
  }
}

}  // namespace

template <>
Decoded<Point> decode<Point>(const json::value& v) {
  return run<Point>(v, read_point);
}
template <>
Decoded<Polygon> decode<Polygon>(const json::value& v) {
  return run<Polygon>(v, read_polygon);
}
template <>
Decoded<CallbackInfo> decode<CallbackInfo>(const json::value& v) {
  return run<CallbackInfo>(v, read_callback);
}
template <>
Decoded<Registration> decode<Registration>(const json::value& v) {
  return run<Registration>(v, read_registration);
}
template <>
Decoded<ApplicationInfo> decode<ApplicationInfo>(const json::value& v) {
  return run<ApplicationInfo>(v, read_app_info);
}
template <>
Decoded<ImageInfo> decode<ImageInfo>(const json::value& v) {
  return run<ImageInfo>(v, read_image_info);
}
template <>
Decoded<CaseImageInfo> decode<CaseImageInfo>(const json::value& v) {
  return run<CaseImageInfo>(v, read_case_image_info);
}
template <>
Decoded<ResultContent> decode<ResultContent>(const json::value& v) {
  return run<ResultContent>(v, read_result_content);
}
template <>
Decoded<Result> decode<Result>(const json::value& v) {
  return run<Result>(v, read_result);
}
template <>
Decoded<StoredResult> decode<StoredResult>(const json::value& v) {
  return run<StoredResult>(v, read_stored_result);
}
template <>
Decoded<QualityControl> decode<QualityControl>(const json::value& v) {
  return run<QualityControl>(v, read_quality_control);
}
template <>
Decoded<Invocation> decode<Invocation>(const json::value& v) {
  return run<Invocation>(v, read_invocation);
}
template <>
Decoded<ImageNotification> decode<ImageNotification>(const json::value& v) {
  return run<ImageNotification>(v, read_image_notification);
}
template <>
Decoded<std::vector<StoredResult>> decode<std::vector<StoredResult>>(const json::value& v) {
  return run<std::vector<StoredResult>>(v, [](Reader& r, const json::value& x) {
    return read_list(r, x, kMaxListLength, read_stored_result);
  });
}
template <>
Decoded<std::vector<CaseImageInfo>> decode<std::vector<CaseImageInfo>>(const json::value& v) {
  return run<std::vector<CaseImageInfo>>(v, [](Reader& r, const json::value& x) {
    return read_list(r, x, kMaxListLength, read_case_image_info);
  });
}

// ================================================================ encoding
namespace {

json::string_view sv(std::string_view s) {
  return json::string_view(s.data(), s.size());
}

void merge_extra(json::object& o, const json::object& extra) {
  for (const auto& kv : extra)
    if (!o.contains(kv.key())) o.emplace(kv.key(), kv.value());
}

template <class T, class F>
json::array array_of(const std::vector<T>& items, F&& f) {
  json::array a;
  a.reserve(items.size());
  for (const auto& item : items) a.push_back(f(item));
  return a;
}

json::array strings(const std::vector<std::string>& items) {
  return array_of(items, [](const std::string& s) { return json::value(sv(s)); });
}

json::array polygons(const std::vector<Polygon>& items) {
  return array_of(items, [](const Polygon& p) { return to_json(p); });
}

json::value qc_data(const QualityControlData& q) {
  return json::object{{"status", sv(to_string(q.status))}, {"versionId", sv(q.version_id)}};
}

json::value display_name(const std::string& s) {
  return json::object{{"displayName", sv(s)}};
}

json::value specimen(const Specimen& s) {
  json::object o;
  if (s.anatomy) o["anatomy"] = sv(*s.anatomy);
  if (s.description) o["description"] = sv(*s.description);
  return o;
}

json::value tile_format(const TileFormat& f) {
  return json::object{{"mimeType", sv(f.mime_type)}, {"extension", sv(f.extension)}};
}

json::value callback(const CallbackInfo& c) {
  return to_json(c);
}

void put_opt(json::object& o, std::string_view key, const std::optional<std::string>& s) {
  if (s) o[sv(key)] = sv(*s);
}

void write_result_fields(json::object& o, const Result& r) {
  o["slideId"] = sv(r.slide_id);
  o["displayResult"] = sv(r.display_result);
  json::object props;
  props.reserve(r.display_properties.size());
  for (const auto& p : r.display_properties)
    props[sv(p.name)] = std::visit(
        [](const auto& x) -> json::value {
          if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::string>)
            return json::value(sv(x));
          else if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::int64_t>)
            return json::value(x);
          else
            return num(static_cast<double>(x));
        },
        p.value);
  o["displayProperties"] = std::move(props);
  o["applicationVersion"] = sv(r.application_version);
  if (r.attachments)
    o["attachments"] = array_of(*r.attachments, [](const Attachment& a) -> json::value {
      return json::object{{"name", sv(a.name)}, {"state", sv(to_string(a.state))}};
    });
  json::object data;
  data["context"] = r.data.context;
  if (r.data.result) data["result"] = to_json(*r.data.result);
  merge_extra(data, r.data.extra);
  o["data"] = std::move(data);
}

}  // namespace

json::value to_json(const Point& p) {
  return json::object{{"x", num(p.x)}, {"y", num(p.y)}};
}

json::value to_json(const Polygon& p) {
  return json::object{{"points", array_of(p.points, [](const Point& pt) { return to_json(pt); })}};
}

json::value to_json(const Registration& r) {
  json::object tmpl{{"type", sv(to_string(r.input_template.type))}};
  if (r.input_template.tags)
    tmpl["content"] = json::object{{"tags", strings(*r.input_template.tags)}};
  return json::object{{"applicationId", sv(r.application_id)},
                      {"displayName", sv(r.display_name)},
                      {"url", sv(r.url)},
                      {"manufacturer", sv(r.manufacturer)},
                      {"inputTemplate", std::move(tmpl)},
                      {"context", r.context}};
}

json::value to_json(const ApplicationInfo& i) {
  return json::object{{"apiVersion", sv(i.api_version)},
                      {"softwareVersion", sv(i.software_version)}};
}

json::value to_json(const CallbackInfo& c) {
  return json::object{{"url", sv(c.url)}, {"token", sv(c.token)}};
}

json::value to_json(const ImageInfo& i) {
  json::object o;
  o.reserve(32);
  o["id"] = sv(i.id);
  o["isStreamable"] = i.is_streamable;
  o["imageSize"] = json::object{{"width", i.image_size.width}, {"height", i.image_size.height}};
  o["tileSize"] = json::object{{"width", i.tile_size.width}, {"height", i.tile_size.height}};
  o["micronsPerPixel"] = num(i.microns_per_pixel);
  o["focalPlanes"] = array_of(i.focal_planes, [](const FocalPlane& f) -> json::value {
    return json::object{{"id", sv(f.id)}, {"offsetUm", num(f.offset_um)}};
  });
  o["opticalPaths"] = array_of(i.optical_paths, [](const OpticalPath& p) -> json::value {
    return json::object{{"id", sv(p.id)}, {"description", sv(p.description)}};
  });
  if (i.stored_tile_format) o["storedTileFormat"] = tile_format(*i.stored_tile_format);
  o["availableTileFormats"] = array_of(i.available_tile_formats, tile_format);
  if (i.file_format) o["fileFormat"] = json::object{{"mimeType", sv(*i.file_format)}};
  if (i.staining) o["staining"] = display_name(*i.staining);
  if (i.block) o["block"] = display_name(*i.block);
  if (i.specimen) o["specimen"] = specimen(*i.specimen);
  put_opt(o, "bodyPart", i.body_part);
  put_opt(o, "examCode", i.exam_code);
  put_opt(o, "examDescription", i.exam_description);
  put_opt(o, "stationName", i.station_name);
  if (i.priority) o["priority"] = *i.priority;
  if (i.quality_control) o["qualityControl"] = qc_data(*i.quality_control);
  put_opt(o, "seriesInstanceUid", i.series_instance_uid);
  put_opt(o, "lisSlideId", i.lis_slide_id);
  put_opt(o, "accessionNumber", i.accession_number);
  put_opt(o, "accessionNumberIssuer", i.accession_number_issuer);
  put_opt(o, "studyInstanceUid", i.study_instance_uid);
  put_opt(o, "examId", i.exam_id);
  put_opt(o, "examDateTime", i.exam_date_time);
  if (i.exam_free_fields) o["examFreeFields"] = *i.exam_free_fields;
  merge_extra(o, i.extra);
  return o;
}

json::value to_json(const CaseImageInfo& i) {
  json::object o;
  o["id"] = sv(i.id);
  if (i.staining) o["staining"] = display_name(*i.staining);
  if (i.block) o["block"] = display_name(*i.block);
  if (i.specimen) o["specimen"] = specimen(*i.specimen);
  put_opt(o, "seriesInstanceUid", i.series_instance_uid);
  put_opt(o, "lisSlideId", i.lis_slide_id);
  merge_extra(o, i.extra);
  return o;
}

json::value to_json(const PrimitiveItem& i) {
  json::object o;
  if (i.style) {
    json::object s;
    put_opt(s, "strokeStyle", i.style->stroke_style);
    put_opt(s, "fillStyle", i.style->fill_style);
    if (i.style->size) s["size"] = *i.style->size;
    o["style"] = std::move(s);
  }
  if (!i.polygons.empty()) o["polygons"] = polygons(i.polygons);
  if (!i.polylines.empty()) o["polylines"] = polygons(i.polylines);
  if (!i.labels.empty())
    o["labels"] = array_of(i.labels, [](const Label& l) -> json::value {
      return json::object{{"location", to_json(l.location)}, {"label", sv(l.label)}};
    });
  merge_extra(o, i.extra);
  return o;
}

json::value to_json(const PatchCollection& p) {
  json::object o;
  o["description"] = sv(p.description);
  o["polygons"] = polygons(p.polygons);
  o["patches"] = array_of(p.patches, [](const Patch& x) -> json::value {
    return json::object{
        {"tag", x.tag}, {"position", to_json(x.position)}, {"sortKeyValue", num(x.sort_key_value)}};
  });
  o["tags"] = strings(p.tags);
  o["patchSize"] = p.patch_size;
  o["magnification"] = num(p.magnification);
  if (!p.statuses.empty()) {
    json::object st;
    for (const auto& [name, s] : p.statuses) {
      json::object so{{"value", s.value}};
      put_opt(so, "message", s.message);
      st[sv(name)] = std::move(so);
    }
    o["statuses"] = std::move(st);
  }
  if (!p.actions.empty())
    o["actions"] = array_of(p.actions, [](const PatchAction& a) -> json::value {
      json::object ao{{"id", sv(a.id)}, {"state", a.state}, {"name", sv(a.name)}};
      put_opt(ao, "tooltip", a.tooltip);
      return ao;
    });
  merge_extra(o, p.extra);
  return o;
}

json::value to_json(const ResultContent& c) {
  json::object o{{"type", sv(to_string(c.type))}};
  if (c.type == ResultType::patchCollection) {
    o["content"] = to_json(c.patches);
  } else if (c.single_object && c.primitives.size() == 1) {
    o["content"] = to_json(c.primitives.front());
  } else {
    o["content"] = array_of(c.primitives, [](const PrimitiveItem& i) { return to_json(i); });
  }
  return o;
}

json::value to_json(const Result& r) {
  json::object o;
  o.reserve(8 + r.extra.size());
  write_result_fields(o, r);
  merge_extra(o, r.extra);
  return o;
}

json::value to_json(const StoredResult& r) {
  json::object o;
  o.reserve(10 + r.extra.size());
  o["id"] = r.id;
  o["versionId"] = sv(r.version_id);
  write_result_fields(o, r);
  merge_extra(o, r.extra);
  return o;
}

json::value to_json(const QualityControl& q) {
  return json::object{{"applicationVersion", sv(q.application_version)},
                      {"qualityControl", qc_data(q.quality_control)}};
}

json::value to_json(const InvocationInput& i) {
  if (i.result) return to_json(*i.result);
  json::object o{{"type", sv(to_string(i.type))}};
  if (i.type == InputType::taggedPolygon && i.tagged_polygon) {
    json::object c{{"polygon", to_json(i.tagged_polygon->polygon)}};
    if (i.tagged_polygon->tags) c["tags"] = strings(*i.tagged_polygon->tags);
    if (i.tagged_polygon->tag_index) c["tagIndex"] = *i.tagged_polygon->tag_index;
    o["content"] = std::move(c);
  } else if (i.type == InputType::multiArea && i.multi_area) {
    o["content"] = json::object{{"polygons", polygons(i.multi_area->polygons)}};
  }
  return o;
}

json::value to_json(const Invocation& i) {
  json::object o;
  o["action"] = sv(to_string(i.action));
  o["applicationId"] = sv(i.application_id);
  o["slideId"] = sv(i.slide_id);
  o["callbackInfo"] = callback(i.callback);
  if (!i.context.empty()) o["context"] = i.context;
  if (i.cancellation_token) o["cancellationToken"] = sv(*i.cancellation_token);
  if (i.input) o["input"] = to_json(*i.input);
  return o;
}

json::value to_json(const ImageNotification& n) {
  json::object o;
  o["applicationId"] = sv(n.application_id);
  o["slideId"] = sv(n.slide_id);
  o["callbackInfo"] = callback(n.callback);
  if (!n.context.empty()) o["context"] = n.context;
  if (n.cancellation_token) o["cancellationToken"] = sv(*n.cancellation_token);
  o["imageInfo"] = to_json(n.image_info);
  return o;
}

json::value to_json(const std::vector<StoredResult>& list) {
  return array_of(list, [](const StoredResult& r) { return to_json(r); });
}

json::value to_json(const std::vector<CaseImageInfo>& list) {
  return array_of(list, [](const CaseImageInfo& i) { return to_json(i); });
}

}  // namespace iaserve::iaapi
