#pragma once
// Results the server and the worker post to DPAT: the progress frame shown
// while an analysis is queued or running, the failure frame, and primitive
// content built from polygons and labels.
#include "iaapi/messages.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace iaserve::iaapi {

// Styles used by the builders (CSS colours as DPAT draws them).
Style progress_style();  // amber outline, no fill
Style failed_style();    // red outline, translucent red fill
Style region_style(std::string stroke, std::string fill = {}, std::int64_t size = 2);

// One primitive item from polygons, polylines and labels with a style.
PrimitiveItem primitive_item(std::vector<Polygon> polygons, std::vector<Label> labels = {},
                             std::optional<Style> style = std::nullopt,
                             std::vector<Polygon> polylines = {});

// A Result with primitive content.
Result primitive_result(std::string slide_id, std::vector<PrimitiveItem> items,
                        std::string display_result, std::string app_version,
                        std::vector<DisplayProperty> properties = {});

// "analysis queued" / progress: a frame round the whole slide (in image-width
// units; a label only when width or height is unknown, i.e. <= 0), a label
// "<text> (<percent> %)" at the top, displayResult "<text> (<percent> %)",
// displayProperties {"Status": text, "Progress": "<percent> %"}. percent is
// clamped to [0, 100]; a negative percent means unknown and is left out.
Result progress_result(std::string slide_id, std::int64_t width, std::int64_t height,
                       std::string text, int percent, std::string app_version);

// "analysis failed: <reason>": the same frame in red,
// displayProperties {"Status": "failed", "Error": reason}.
Result failed_result(std::string slide_id, std::int64_t width, std::int64_t height,
                     std::string reason, std::string app_version);

// The displayResult text of failed_result, "analysis failed: <reason>".
std::string failed_text(std::string_view reason);

}  // namespace iaserve::iaapi
