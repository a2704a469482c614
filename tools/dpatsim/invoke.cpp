// dpatsim invoke: plays DPAT (the pathologist's right-click, the admin's
// "retrieve registration info", a slide import) toward an app.
#include <boost/json.hpp>

#include <iostream>
#include <sstream>

#include "iaapi/client.hpp"
#include "iaapi/messages.hpp"
#include "tools/dpatsim/command.hpp"
#include "tools/dpatsim/peer.hpp"

namespace iaserve::dpatsim {
namespace json = boost::json;
namespace {

struct InvokeOptions {
  std::string app_url, slide, sim, app_id, input = "wholeSlide", polygon, context, token, press;
  std::vector<std::string> tags;
  std::int64_t tag_index = 0;
  double timeout_s = 60;
  bool quiet = false;
};

std::chrono::milliseconds timeout_of(const InvokeOptions& o) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(o.timeout_s * 1000));
}

std::string trim_slash(std::string s) {
  while (!s.empty() && s.back() == '/') s.pop_back();
  return s;
}

void require_2xx(const std::string& what, const Reply& r) {
  if (r.status < 200 || r.status > 299)
    throw ProtocolError(what + ": " + std::to_string(r.status) + " " + r.body.substr(0, 2000));
  if (r.header("x-sectra-apiversion").empty())
    std::cerr << "dpatsim: warning: " << what << ": no X-Sectra-ApiVersion header in the answer\n";
}

iaapi::Registration get_registration(const InvokeOptions& o, bool print) {
  std::string what = "GET " + o.app_url;
  auto r = call("GET", o.app_url, {}, {"Accept: application/json"}, timeout_of(o));
  require_2xx(what, r);
  auto v = parse_answer(what, r);
  auto reg = iaapi::decode<iaapi::Registration>(v);
  if (!reg) throw ProtocolError(what + ": not a registration: " + reg.error.what());
  if (print) std::cout << pretty(v) << std::endl;
  return std::move(*reg.value);
}

// "x,y x,y ..." (or ';' between points) in image-width units.
iaapi::Polygon parse_polygon(const std::string& text) {
  iaapi::Polygon p;
  std::string t = text;
  for (auto& c : t)
    if (c == ';') c = ' ';
  std::istringstream in(t);
  std::string pt;
  while (in >> pt) {
    auto comma = pt.find(',');
    try {
      if (comma == std::string::npos) throw std::invalid_argument(pt);
      p.points.push_back({std::stod(pt.substr(0, comma)), std::stod(pt.substr(comma + 1))});
    } catch (const std::exception&) {
      throw CLI::ValidationError("--polygon", "point '" + pt + "' is not x,y");
    }
  }
  if (p.points.size() < 3) throw CLI::ValidationError("--polygon", "needs at least 3 points, got " + std::to_string(p.points.size()));
  return p;
}

iaapi::Polygon rect(double x0, double y0, double x1, double y1) { return {{{x0, y0}, {x1, y0}, {x1, y1}, {x0, y1}}}; }

struct Invoker {
  InvokeOptions o;
  iaapi::CallbackInfo callback;
  iaapi::Registration reg;

  void prepare() {
    if (o.sim.empty()) throw CLI::ValidationError("--sim", "the simulator's callback URL is required");
    callback.url = trim_slash(o.sim);
    callback.token = o.token.empty() ? mint_token(o.sim) : o.token;
    reg = get_registration(o, false);
    if (!o.app_id.empty()) reg.application_id = o.app_id;
    if (!o.context.empty()) {
      auto c = iaapi::parse_json(o.context);
      if (!c || !c.value->is_object()) throw CLI::ValidationError("--context", "not a JSON object");
      reg.context = c.value->as_object();
    }
  }

  iaapi::Invocation invocation(iaapi::Action action) const {
    iaapi::Invocation inv;
    inv.action = action;
    inv.application_id = reg.application_id;
    inv.slide_id = o.slide;
    inv.callback = callback;
    inv.context = reg.context;
    return inv;
  }

  iaapi::CallbackClient client() const {
    iaapi::ClientOptions co;
    co.max_attempts = 1;
    return iaapi::CallbackClient(callback, co);
  }

  json::value post(const std::string& url, const json::value& body, const std::string& what) const {
    auto r = call("POST", url, json::serialize(body), {"Content-Type: application/json", "Accept: application/json"},
                  timeout_of(o));
    require_2xx(what, r);
    if (r.body.empty()) return json::value(nullptr);
    return parse_answer(what, r);
  }

  int create() {
    prepare();
    auto inv = invocation(iaapi::Action::create);
    iaapi::InvocationInput in;
    auto type = iaapi::parse_input_type(o.input);
    if (!type) throw CLI::ValidationError("--input", o.input + " is not wholeSlide, taggedPolygon or multiArea");
    in.type = *type;
    if (in.type != iaapi::InputType::wholeSlide) {
      // Without --polygon: shapes in the middle of the slide, as a user might draw.
      auto info = client().get_image_info(o.slide);
      double h = static_cast<double>(info.image_size.height) / static_cast<double>(info.image_size.width);
      if (in.type == iaapi::InputType::taggedPolygon) {
        iaapi::TaggedPolygonContent c;
        c.polygon = o.polygon.empty() ? rect(0.3, 0.3 * h, 0.7, 0.7 * h) : parse_polygon(o.polygon);
        if (!o.tags.empty()) {
          c.tags = o.tags;
          c.tag_index = o.tag_index;
        } else if (!reg.input_template.tags.value_or(std::vector<std::string>{}).empty()) {
          c.tags = reg.input_template.tags;
          c.tag_index = 0;
        }
        in.tagged_polygon = c;
      } else {
        iaapi::MultiAreaContent c;
        if (!o.polygon.empty())
          c.polygons = {parse_polygon(o.polygon)};
        else
          c.polygons = {rect(0.1, 0.1 * h, 0.4, 0.4 * h), rect(0.55, 0.55 * h, 0.9, 0.9 * h)};
        in.multi_area = c;
      }
    }
    inv.input = in;
    std::string what = "POST " + o.app_url + " (create)";
    auto answer = post(o.app_url, iaapi::to_json(inv), what);
    auto stored = iaapi::decode<iaapi::StoredResult>(answer);
    if (!stored) throw ProtocolError(what + ": the answer is not a stored result: " + stored.error.what());
    if (stored->id <= 0) throw ProtocolError(what + ": the stored result has no database id");
    if (stored->slide_id != o.slide) throw ProtocolError(what + ": the result is for slide " + stored->slide_id);
    if (!o.quiet) std::cout << pretty(answer) << std::endl;
    return kExitOk;
  }

  int notify() {
    prepare();
    iaapi::ImageNotification n;
    n.application_id = reg.application_id;
    n.slide_id = o.slide;
    n.callback = callback;
    n.context = reg.context;
    n.image_info = client().get_image_info(o.slide, true, false);
    auto answer = post(trim_slash(o.app_url) + "/imagenotification", iaapi::to_json(n),
                       "POST " + trim_slash(o.app_url) + "/imagenotification");
    if (!o.quiet) std::cout << pretty(answer) << std::endl;
    return kExitOk;
  }

  int cancel() {
    prepare();
    auto inv = invocation(iaapi::Action::cancel);
    auto answer = post(o.app_url, iaapi::to_json(inv), "POST " + o.app_url + " (cancel)");
    if (!o.quiet) std::cout << pretty(answer) << std::endl;
    return kExitOk;
  }

  // delete / modify: DPAT sends the stored result the user deleted or changed.
  int with_result(iaapi::Action action) {
    prepare();
    auto results = client().list_results(reg.application_id, o.slide);
    if (results.empty())
      throw std::runtime_error("no result of application " + reg.application_id + " on slide " + o.slide);
    auto newest = *std::max_element(results.begin(), results.end(),
                                    [](const auto& a, const auto& b) { return a.id < b.id; });
    auto inv = invocation(action);
    if (!o.press.empty()) {  // the pathologist presses a patchCollection button: its state 1
      bool found = false;
      if (newest.data.result && newest.data.result->type == iaapi::ResultType::patchCollection)
        for (auto& a : newest.data.result->patches.actions)
          if (a.id == o.press) a.state = 1, found = true;
      if (!found) throw std::runtime_error("the newest result on slide " + o.slide + " has no button " + o.press);
    }
    iaapi::InvocationInput in;
    in.result = newest;
    inv.input = in;
    std::string what = "POST " + o.app_url + " (" + std::string(iaapi::to_string(action)) + ")";
    auto answer = post(o.app_url, iaapi::to_json(inv), what);
    if (action == iaapi::Action::modify) {
      auto stored = iaapi::decode<iaapi::StoredResult>(answer);
      if (!stored) throw ProtocolError(what + ": the answer is not a stored result: " + stored.error.what());
    }
    if (!o.quiet) std::cout << pretty(answer) << std::endl;
    return kExitOk;
  }
};

void common(CLI::App& sub, InvokeOptions& o, bool slide) {
  sub.add_option("APP_URL", o.app_url, "The app's registered URL, e.g. http://127.0.0.1:5006/apps/tissue")->required();
  if (!slide) return;
  sub.add_option("--slide", o.slide, "Slide id (see GET /_sim/slides)")->required();
  sub.add_option("--sim", o.sim, "The simulator's callback URL (its 'listening on' URL)")->required();
  sub.add_option("--app", o.app_id, "applicationId to send (default: the registration's)");
  sub.add_option("--context", o.context, "JSON object sent as the invocation's context (default: the registration's)");
  sub.add_option("--token", o.token, "Bearer token to hand the app (default: a fresh one from the simulator)");
  sub.add_option("--timeout", o.timeout_s, "Seconds to wait for the app's answer")->capture_default_str();
  sub.add_flag("--quiet", o.quiet, "Print nothing on success");
}

Registration invoke_command{
    "invoke",
    "Act as DPAT toward an app: register (GET the registration), create, notify, cancel, modify, delete",
    [](CLI::App& sub) -> std::function<int()> {
      sub.require_subcommand(1);
      auto inv = std::make_shared<Invoker>();
      auto chosen = std::make_shared<std::function<int()>>();
      auto add = [&](const std::string& name, const std::string& desc, bool slide, std::function<int(Invoker&)> run) {
        CLI::App* s = sub.add_subcommand(name, desc);
        common(*s, inv->o, slide);
        s->callback([chosen, inv, run] { *chosen = [inv, run] { return run(*inv); }; });
        return s;
      };
      add("register", "GET APP_URL: print the registration; fail unless it decodes", false, [](Invoker& i) {
        get_registration(i.o, true);
        return kExitOk;
      });
      auto* create = add("create", "POST a create invocation; the answer must be a stored result with an id", true,
                         [](Invoker& i) { return i.create(); });
      create->add_option("--input", inv->o.input, "wholeSlide, taggedPolygon or multiArea")->capture_default_str();
      create->add_option("--polygon", inv->o.polygon,
                         "The drawn polygon, 'x,y x,y x,y ...' in image-width units (default: a rectangle in the "
                         "middle; multiArea: two rectangles)");
      create->add_option("--tags", inv->o.tags, "taggedPolygon tags (default: the registration's)")->delimiter(',');
      create->add_option("--tag-index", inv->o.tag_index, "taggedPolygon tagIndex");
      add("notify", "POST APP_URL/imagenotification with the slide's ImageInfo", true,
          [](Invoker& i) { return i.notify(); });
      add("cancel", "POST a cancel invocation", true, [](Invoker& i) { return i.cancel(); });
      auto* modify = add("modify", "POST a modify invocation with the app's newest result on the slide", true,
                         [](Invoker& i) { return i.with_result(iaapi::Action::modify); });
      modify->add_option("--press", inv->o.press,
                         "Press the patchCollection button with this action id (its state 1), as a pathologist does");
      add("delete", "POST a delete invocation with the app's newest result on the slide", true,
          [](Invoker& i) { return i.with_result(iaapi::Action::delete_); });
      return [chosen]() { return *chosen ? (*chosen)() : kExitUsage; };
    }};

}  // namespace
}  // namespace iaserve::dpatsim
