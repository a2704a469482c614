#include <stdexcept>

#include "iaapi/decode.hpp"
#include "server/job_payload.hpp"
#include "worker/job.hpp"

namespace iaserve::worker {

JobRequest request_from_payload(const boost::json::object& payload) {
  server::JobPayload p;
  try {
    p = server::job_payload_from_json(payload);
  } catch (const std::exception& e) {
    throw std::invalid_argument(e.what());
  }
  JobRequest r;
  r.app_id = p.application_id;
  r.slide_id = p.slide_id;
  r.slide_key = iaapi::slide_key(p.slide_id);
  r.callback = p.callback();
  r.context = p.context();
  if (p.kind == server::JobKind::notification) {
    r.input_type = "wholeSlide";  // an imported slide: the whole of it
    r.expect_frame = false;
  } else {
    if (!p.invocation) throw std::invalid_argument("job payload: invocation: missing");
    const auto& inv = *p.invocation;
    if (inv.input && !inv.input->result) {
      r.input_type = std::string(iaapi::to_string(inv.input->type));
      boost::json::value input = iaapi::to_json(*inv.input);
      if (auto* o = input.if_object(); o && o->contains("content")) r.input_content = o->at("content");
    } else if (inv.input && inv.input->result) {
      // modify (a pressed button): the whole slide (the original request's
      // regions are not kept), with the button and the stored content.
      r.input_type = "wholeSlide";
      r.action_id = p.action_id;
      if (const auto& content = inv.input->result->data.result)
        r.action_content = iaapi::to_json(*content).as_object().at("content");
    }
  }
  return r;
}

}  // namespace iaserve::worker
