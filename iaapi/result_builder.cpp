#include "iaapi/result_builder.hpp"

#include "iaapi/text.hpp"

#include "iaapi/geometry.hpp"

#include <algorithm>

namespace iaserve::iaapi {

namespace {
// A failure reason comes from exceptions and external programs: keep the
// annotation list readable.
constexpr std::size_t kMaxReasonLength = 500;

std::string clip(std::string_view s, std::size_t limit) { return clip_utf8(s, limit); }

// The frame round the slide with a label at its top, or only the label when
// the slide size is not known yet.
PrimitiveItem frame_item(std::int64_t width, std::int64_t height, std::string label, Style style) {
  PrimitiveItem item;
  item.style = std::move(style);
  if (width > 0 && height > 0) item.polygons.push_back(frame_polygon(width, height));
  // A little inside the top-left corner so DPAT draws it on the slide.
  item.labels.push_back({Point{0.01, 0.01}, std::move(label)});
  return item;
}
}  // namespace

Style progress_style() {
  return Style{"#ffb000", std::nullopt, 3};
}
Style failed_style() {
  return Style{"#e00000", "rgba(224,0,0,0.15)", 3};
}

Style region_style(std::string stroke, std::string fill, std::int64_t size) {
  Style s;
  s.stroke_style = std::move(stroke);
  if (!fill.empty()) s.fill_style = std::move(fill);
  s.size = size;
  return s;
}

PrimitiveItem primitive_item(std::vector<Polygon> polygons, std::vector<Label> labels,
                             std::optional<Style> style, std::vector<Polygon> polylines) {
  PrimitiveItem item;
  item.style = std::move(style);
  item.polygons = std::move(polygons);
  item.polylines = std::move(polylines);
  item.labels = std::move(labels);
  return item;
}

Result primitive_result(std::string slide_id, std::vector<PrimitiveItem> items,
                        std::string display_result, std::string app_version,
                        std::vector<DisplayProperty> properties) {
  Result r;
  r.slide_id = std::move(slide_id);
  r.display_result = std::move(display_result);
  r.application_version = std::move(app_version);
  r.display_properties = std::move(properties);
  ResultContent content;
  content.type = ResultType::primitive;
  content.primitives = std::move(items);
  r.data.result = std::move(content);
  return r;
}

Result progress_result(std::string slide_id, std::int64_t width, std::int64_t height,
                       std::string text, int percent, std::string app_version) {
  std::string shown = text;
  std::vector<DisplayProperty> props{{"Status", text}};
  if (percent >= 0) {
    const std::string pct = std::to_string(std::min(percent, 100)) + " %";
    shown += " (" + pct + ")";
    props.push_back({"Progress", pct});
  }
  std::vector<PrimitiveItem> items{frame_item(width, height, shown, progress_style())};
  return primitive_result(std::move(slide_id), std::move(items), std::move(shown),
                          std::move(app_version), std::move(props));
}

std::string failed_text(std::string_view reason) {
  return "analysis failed: " + clip(reason, kMaxReasonLength);
}

Result failed_result(std::string slide_id, std::int64_t width, std::int64_t height,
                     std::string reason, std::string app_version) {
  const std::string text = failed_text(reason);
  std::vector<DisplayProperty> props{{"Status", std::string("failed")},
                                     {"Error", clip(reason, kMaxReasonLength)}};
  std::vector<PrimitiveItem> items{frame_item(width, height, text, failed_style())};
  return primitive_result(std::move(slide_id), std::move(items), text, std::move(app_version),
                          std::move(props));
}

}  // namespace iaserve::iaapi
