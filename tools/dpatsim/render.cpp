// dpatsim render: the slide as DPAT's viewer shows it with an app's result
// drawn over it. The picture comes from the simulator's own DZI tiles (as a
// viewer gets it), the overlay from the stored results.
#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <iostream>

#include "iaapi/client.hpp"
#include "iaapi/dzi.hpp"
#include "tools/dpatsim/command.hpp"
#include "tools/dpatsim/peer.hpp"
#include "worker/slide/draw.hpp"
#include "worker/slide/image_io.hpp"

namespace iaserve::dpatsim {
namespace json = boost::json;
namespace {

struct RenderOptions {
  std::string sim, slide, app, out;
  int size = 1024;
};

slide::Ring ring_of(const iaapi::Polygon& p, double scale) {
  slide::Ring r;
  r.reserve(p.points.size());
  for (const auto& pt : p.points) r.push_back({pt.x * scale, pt.y * scale});
  return r;
}

slide::Rgba colour_or(const std::optional<std::string>& text, slide::Rgba fallback) {
  if (!text || text->empty()) return fallback;
  try {
    return slide::parse_color(*text);
  } catch (const std::exception& e) {
    std::cerr << "dpatsim: " << e.what() << "\n";
    return fallback;
  }
}

// Points are in image-width units: pixel = unit * picture width, for y too.
void draw_result(slide::Image& img, const iaapi::Result& r) {
  double scale = img.width;
  if (!r.data.result) return;
  const auto& content = *r.data.result;
  if (content.type == iaapi::ResultType::primitive) {
    for (const auto& item : content.primitives) {
      slide::PolygonStyle st;
      std::optional<iaapi::Style> s = item.style;
      st.stroke = colour_or(s ? s->stroke_style : std::nullopt, {0, 200, 0, 255});
      if (s && s->fill_style) st.fill = colour_or(s->fill_style, {0, 200, 0, 64});
      st.thickness = std::clamp<double>(s && s->size ? static_cast<double>(*s->size) : 2.0, 1.0, 8.0);
      for (const auto& p : item.polygons) slide::draw_polygon(img, {ring_of(p, scale)}, st);
      for (const auto& p : item.polylines) slide::stroke_polyline(img, ring_of(p, scale), st.stroke, st.thickness);
      for (const auto& l : item.labels) {
        int x = static_cast<int>(std::lround(l.location.x * scale));
        int y = static_cast<int>(std::lround(l.location.y * scale));
        slide::draw_text(img, x, y, l.label, st.stroke, 2, slide::Rgba{255, 255, 255, 200});
      }
    }
  } else {
    const auto& pc = content.patches;
    slide::PolygonStyle st;
    st.stroke = {0, 120, 255, 255};
    for (const auto& p : pc.polygons) slide::draw_polygon(img, {ring_of(p, scale)}, st);
    // patchSize is in level-0 pixels of a slide we only know in width units here; draw a marker.
    for (const auto& patch : pc.patches) {
      int x = static_cast<int>(std::lround(patch.position.x * scale));
      int y = static_cast<int>(std::lround(patch.position.y * scale));
      slide::stroke_polyline(img, {{x - 4.0, y - 4.0}, {x + 4.0, y - 4.0}, {x + 4.0, y + 4.0}, {x - 4.0, y + 4.0}},
                             {255, 0, 255, 255}, 1.5, true);
    }
  }
}

Registration render_command{
    "render",
    "Draw a slide with the results stored on it (newest per app, or of --app) into a PNG: what a pathologist "
    "would see in DPAT",
    [](CLI::App& sub) -> std::function<int()> {
      auto o = std::make_shared<RenderOptions>();
      sub.add_option("--sim", o->sim, "The simulator's callback URL")->required();
      sub.add_option("--slide", o->slide, "Slide id")->required();
      sub.add_option("--app", o->app, "Only this app's result");
      sub.add_option("--out", o->out, "PNG file to write")->required();
      sub.add_option("--size", o->size, "Longest side of the picture at most (a whole DZI level)")
          ->capture_default_str()
          ->check(CLI::Range(16, 16384));
      return [o]() -> int {
        iaapi::ClientOptions co;
        co.max_attempts = 2;
        iaapi::CallbackClient client({o->sim, mint_token(o->sim)}, co);
        auto info = client.get_image_info(o->slide);
        iaapi::Dzi dzi(info.image_size.width, info.image_size.height, info.tile_size.width);
        int level = 0;
        for (int l = 0; l < dzi.level_count(); ++l) {
          auto s = dzi.level_size(l);
          if (std::max(s.width, s.height) <= o->size) level = l;
        }
        auto ls = dzi.level_size(level);
        slide::Image img(static_cast<int>(ls.width), static_cast<int>(ls.height));
        auto grid = dzi.grid(level);
        for (std::int64_t row = 0; row < grid.rows; ++row)
          for (std::int64_t col = 0; col < grid.cols; ++col) {
            auto bytes = client.get_tile(o->slide, level, static_cast<int>(col), static_cast<int>(row));
            auto tile = slide::decode_jpeg(bytes);
            auto rect = dzi.tile_rect(level, col, row);
            for (int y = 0; y < tile.height && rect.y + y < img.height; ++y)
              std::copy_n(tile.at(0, y), static_cast<std::size_t>(std::min<std::int64_t>(tile.width, img.width - rect.x)) * 3,
                          img.at(static_cast<int>(rect.x), static_cast<int>(rect.y + y)));
          }
        // The newest result of each app (or of --app), as DPAT lists them.
        auto r = call("GET", origin_of(o->sim) + "/_sim/results?slide=" + iaapi::url_encode(o->slide));
        if (r.status != 200) throw ProtocolError("GET /_sim/results: " + std::to_string(r.status));
        std::map<std::string, json::object> newest;
        auto all = parse_answer("GET /_sim/results", r);
        if (!all.is_array()) throw ProtocolError("GET /_sim/results: not a list");
        for (auto& e : all.as_array()) {
          auto app = std::string(e.as_object().at("applicationId").as_string());
          if (!o->app.empty() && app != o->app) continue;
          auto res = e.as_object().at("result").as_object();
          auto& cur = newest[app];
          if (cur.empty() || res.at("id").to_number<std::int64_t>() > cur.at("id").to_number<std::int64_t>()) cur = res;
        }
        int y = 4;
        for (auto& [app, obj] : newest) {
          auto decoded = iaapi::decode<iaapi::StoredResult>(obj);
          if (!decoded) throw ProtocolError("stored result of " + app + ": " + decoded.error.what());
          draw_result(img, *decoded);
          std::string caption = app + ": " + decoded->display_result;
          slide::draw_text(img, 4, y, caption, {0, 0, 0, 255}, 2, slide::Rgba{255, 255, 255, 210});
          y += slide::text_height(caption, 2) + 4;
        }
        slide::write_png(o->out, img);
        std::cerr << "dpatsim: " << o->out << ": " << img.width << "x" << img.height << ", " << newest.size()
                  << " result" << (newest.size() == 1 ? "" : "s") << "\n";
        return kExitOk;
      };
    }};

}  // namespace
}  // namespace iaserve::dpatsim
