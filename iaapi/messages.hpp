#pragma once
// The messages of the Sectra DPAT Image Analysis API (see IA-API.md) as plain
// structs, each with a non-throwing decoder from untrusted JSON and to_json.
//
// decode<T>(json) exists for every message type below (and for the lists the
// callback API answers with); to_json(T) for every one of them. For any T,
// to_json(*decode<T>(to_json(x))) == to_json(x): doubles are written rounded
// to 15 significant digits (integral ones as integers) because Boost.JSON
// 1.81 does not read every shortest-form double back exactly; decoding
// refuses numbers of magnitude above 1e18 and non-finite ones.
#include "iaapi/decode.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace iaserve::iaapi {

// ---------------------------------------------------------------- enums
// Enumerators spell the protocol value (delete_ and new_ dodge keywords).
enum class Action { create, modify, delete_, cancel };
enum class InputType { wholeSlide, taggedPolygon, multiArea };
enum class ResultType { primitive, patchCollection };
enum class AttachmentState { new_, upload_in_progress, stored };
enum class QualityStatus { NotSet, QualityOk, Rejected };

// The protocol spelling: "create", "wholeSlide", "upload-in-progress", ...
std::string_view to_string(Action a) noexcept;
std::string_view to_string(InputType t) noexcept;
std::string_view to_string(ResultType t) noexcept;
std::string_view to_string(AttachmentState s) noexcept;
std::string_view to_string(QualityStatus s) noexcept;
std::optional<Action> parse_action(std::string_view s) noexcept;
std::optional<InputType> parse_input_type(std::string_view s) noexcept;

// ---------------------------------------------------------------- geometry
// A point in image-width units: x = px / width, y = py / width.
struct Point {
  double x = 0;
  double y = 0;
  friend bool operator==(const Point&, const Point&) = default;
};
struct Polygon {
  std::vector<Point> points;
  friend bool operator==(const Polygon&, const Polygon&) = default;
};

// ---------------------------------------------------------------- registration
// GET {url}: what DPAT's configuration page retrieves.
struct InputTemplate {
  InputType type = InputType::wholeSlide;
  std::optional<std::vector<std::string>> tags;  // content.tags (taggedPolygon)
};
struct Registration {
  std::string application_id;
  std::string display_name;
  std::string url;
  std::string manufacturer;
  InputTemplate input_template;
  boost::json::object context;  // echoed back by DPAT in invocations
};

// GET {url}/info, and DPAT's GET /info.
struct ApplicationInfo {
  std::string api_version;
  std::string software_version;
};

// Where and how to call DPAT back. The token is a secret: never log it.
struct CallbackInfo {
  std::string url;
  std::string token;
};

// ---------------------------------------------------------------- image info
struct Size {
  std::int64_t width = 0;
  std::int64_t height = 0;
  friend bool operator==(const Size&, const Size&) = default;
};
struct FocalPlane {
  std::string id;
  double offset_um = 0;
};
struct OpticalPath {
  std::string id;
  std::string description;
};
struct TileFormat {
  std::string mime_type;
  std::string extension;
};
struct Specimen {
  std::optional<std::string> anatomy;
  std::optional<std::string> description;
};
struct QualityControlData {
  QualityStatus status = QualityStatus::NotSet;
  std::string version_id;
};

// GET /slides/{id}/info and the imageInfo of an image notification.
// Required: id, imageSize, tileSize (positive sizes). micronsPerPixel is 0
// when DPAT does not know it. staining / block are {displayName} objects on
// the wire, flattened here.
struct ImageInfo {
  std::string id;
  bool is_streamable = false;
  Size image_size;
  Size tile_size;
  double microns_per_pixel = 0;
  std::vector<FocalPlane> focal_planes;
  std::vector<OpticalPath> optical_paths;
  std::optional<TileFormat> stored_tile_format;
  std::vector<TileFormat> available_tile_formats;
  std::optional<std::string> file_format;  // fileFormat.mimeType
  std::optional<std::string> staining;     // staining.displayName
  std::optional<std::string> block;        // block.displayName
  std::optional<Specimen> specimen;
  std::optional<std::string> body_part;
  std::optional<std::string> exam_code;
  std::optional<std::string> exam_description;
  std::optional<std::string> station_name;
  std::optional<std::int64_t> priority;
  std::optional<QualityControlData> quality_control;
  std::optional<std::string> series_instance_uid;
  std::optional<std::string> lis_slide_id;
  std::optional<std::string> accession_number;
  std::optional<std::string> accession_number_issuer;
  std::optional<std::string> study_instance_uid;
  std::optional<std::string> exam_id;
  std::optional<std::string> exam_date_time;
  std::optional<boost::json::array> exam_free_fields;
  boost::json::object extra;  // fields this version does not know, kept
};

// One slide of a case (GET /requests/.../images/info and
// /slides/{id}/request/images/info answer with a list of these).
struct CaseImageInfo {
  std::string id;
  std::optional<std::string> staining;
  std::optional<std::string> block;
  std::optional<Specimen> specimen;
  std::optional<std::string> series_instance_uid;
  std::optional<std::string> lis_slide_id;
  boost::json::object extra;
};

// ---------------------------------------------------------------- results
struct Style {
  std::optional<std::string> stroke_style;  // CSS colour, e.g. "#00ff00"
  std::optional<std::string> fill_style;    // e.g. "rgba(0,255,0,0.3)"
  std::optional<std::int64_t> size;
};
struct Label {
  Point location;
  std::string label;
};
// One item of primitive content; absent lists are empty (and not written).
struct PrimitiveItem {
  std::optional<Style> style;
  std::vector<Polygon> polygons;
  std::vector<Polygon> polylines;
  std::vector<Label> labels;
  boost::json::object extra;
};

struct Patch {
  std::int64_t tag = 0;  // index into PatchCollection::tags
  Point position;
  double sort_key_value = 0;
};
struct PatchStatus {
  bool value = true;
  std::optional<std::string> message;
};
// A button; pressing it sends a modify invocation with its state = 1.
struct PatchAction {
  std::string id;
  std::int64_t state = 0;
  std::string name;
  std::optional<std::string> tooltip;
};
struct PatchCollection {
  std::string description;
  std::vector<Polygon> polygons;
  std::vector<Patch> patches;
  std::vector<std::string> tags;
  std::int64_t patch_size = 0;
  double magnification = 0;
  // statuses {"allowVerify": {value, message}}, kept in document order.
  std::vector<std::pair<std::string, PatchStatus>> statuses;
  std::vector<PatchAction> actions;
  boost::json::object extra;
};

// data.result: exactly one of the two contents is meaningful, by type.
struct ResultContent {
  ResultType type = ResultType::primitive;
  std::vector<PrimitiveItem> primitives;
  // Sectra's examples send primitive content as one object instead of a list;
  // such a result is written back in the form it came in.
  bool single_object = false;
  PatchCollection patches;
};

struct ResultData {
  boost::json::object context;
  std::optional<ResultContent> result;  // absent in e.g. "data": {}
  boost::json::object extra;
};

struct Attachment {
  std::string name;
  AttachmentState state = AttachmentState::new_;
};

using DisplayValue = std::variant<std::string, std::int64_t, double>;
struct DisplayProperty {
  std::string name;
  DisplayValue value;
};

struct Result {
  std::string slide_id;
  std::string display_result;
  std::vector<DisplayProperty> display_properties;  // in display order
  std::string application_version;
  std::optional<std::vector<Attachment>> attachments;
  ResultData data;
  boost::json::object extra;  // unknown fields, kept so a PUT gives them back

  // Replaces the property of that name or appends it.
  void set_property(std::string name, DisplayValue value);
  const DisplayValue* property(std::string_view name) const;
};

// A Result as DPAT stores it: with its database id and version.
struct StoredResult : Result {
  std::int64_t id = 0;
  std::string version_id;
};

// PUT /slides/{id}/qualityControl.
struct QualityControl {
  std::string application_version;
  QualityControlData quality_control;
};

// ---------------------------------------------------------------- invocations
struct TaggedPolygonContent {
  Polygon polygon;
  std::optional<std::vector<std::string>> tags;
  std::optional<std::int64_t> tag_index;  // required when tags is given, in range
};
struct MultiAreaContent {
  std::vector<Polygon> polygons;
};

// Invocation.input. For create: type plus the content of that type. For
// modify / delete: the stored result the user changed (or deleted).
struct InvocationInput {
  InputType type = InputType::wholeSlide;
  std::optional<TaggedPolygonContent> tagged_polygon;  // type taggedPolygon
  std::optional<MultiAreaContent> multi_area;          // type multiArea
  std::optional<StoredResult> result;                  // modify / delete

  // The regions the user drew (none for a whole slide), in image-width units.
  std::vector<Polygon> regions() const;
};

// POST {url}. Validated: application_id and slide_id pass id_problem(),
// input is present unless action is cancel, polygons have >= 3 finite points.
struct Invocation {
  Action action = Action::create;
  std::string application_id;
  std::string slide_id;
  CallbackInfo callback;
  boost::json::object context;  // written only when not empty
  std::optional<std::string> cancellation_token;
  std::optional<InvocationInput> input;
};

// POST {url}/imagenotification.
struct ImageNotification {
  std::string application_id;
  std::string slide_id;
  CallbackInfo callback;
  boost::json::object context;
  std::optional<std::string> cancellation_token;
  ImageInfo image_info;
};

// ---------------------------------------------------------------- decoding
// decode<T>(v) is defined for: Registration, ApplicationInfo, CallbackInfo,
// Point, Polygon, ImageInfo, CaseImageInfo, ResultContent (a data.result
// object {type, content}), Result, StoredResult,
// QualityControl, Invocation, ImageNotification, std::vector<StoredResult>,
// std::vector<CaseImageInfo>. It never throws (an allocation failure is
// reported as an error too).
template <class T>
Decoded<T> decode(const boost::json::value& v);

template <>
Decoded<Point> decode<Point>(const boost::json::value& v);
template <>
Decoded<Polygon> decode<Polygon>(const boost::json::value& v);
template <>
Decoded<CallbackInfo> decode<CallbackInfo>(const boost::json::value& v);
template <>
Decoded<Registration> decode<Registration>(const boost::json::value& v);
template <>
Decoded<ApplicationInfo> decode<ApplicationInfo>(const boost::json::value& v);
template <>
Decoded<ImageInfo> decode<ImageInfo>(const boost::json::value& v);
template <>
Decoded<CaseImageInfo> decode<CaseImageInfo>(const boost::json::value& v);
template <>
Decoded<ResultContent> decode<ResultContent>(const boost::json::value& v);
template <>
Decoded<Result> decode<Result>(const boost::json::value& v);
template <>
Decoded<StoredResult> decode<StoredResult>(const boost::json::value& v);
template <>
Decoded<QualityControl> decode<QualityControl>(const boost::json::value& v);
template <>
Decoded<Invocation> decode<Invocation>(const boost::json::value& v);
template <>
Decoded<ImageNotification> decode<ImageNotification>(const boost::json::value& v);
template <>
Decoded<std::vector<StoredResult>> decode<std::vector<StoredResult>>(const boost::json::value& v);
template <>
Decoded<std::vector<CaseImageInfo>> decode<std::vector<CaseImageInfo>>(const boost::json::value& v);

// parse_json + decode<T>: "body: ..." for bad JSON, field errors otherwise.
template <class T>
Decoded<T> decode_body(std::string_view body, unsigned max_depth = kMaxJsonDepth) {
  auto json = parse_json(body, max_depth);
  if (!json) return Decoded<T>::failure(std::move(json.error));
  return decode<T>(*json.value);
}

inline Decoded<Invocation> decode_invocation(std::string_view body) {
  return decode_body<Invocation>(body);
}
inline Decoded<ImageNotification> decode_image_notification(std::string_view body) {
  return decode_body<ImageNotification>(body);
}

// ---------------------------------------------------------------- encoding
boost::json::value to_json(const Point& p);
boost::json::value to_json(const Polygon& p);
boost::json::value to_json(const Registration& r);
boost::json::value to_json(const ApplicationInfo& i);
boost::json::value to_json(const CallbackInfo& c);
boost::json::value to_json(const ImageInfo& i);
boost::json::value to_json(const CaseImageInfo& i);
boost::json::value to_json(const PrimitiveItem& i);
boost::json::value to_json(const PatchCollection& p);
boost::json::value to_json(const ResultContent& c);
boost::json::value to_json(const Result& r);
boost::json::value to_json(const StoredResult& r);  // Result fields + id, versionId
boost::json::value to_json(const QualityControl& q);
boost::json::value to_json(const InvocationInput& i);
boost::json::value to_json(const Invocation& i);
boost::json::value to_json(const ImageNotification& n);
boost::json::value to_json(const std::vector<StoredResult>& list);
boost::json::value to_json(const std::vector<CaseImageInfo>& list);

// A stored result as a plain Result (for a PUT body); drops id and versionId.
Result as_result(const StoredResult& r);

}  // namespace iaserve::iaapi
