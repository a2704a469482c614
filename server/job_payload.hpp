#pragma once
// The payload of a queue job written by iaserve and read back by iaworker.
//
// On disk (queue::JobSpec::payload, a JSON object):
//   {
//     "version": 1,
//     "kind": "create" | "modify" | "notification",
//     "applicationId": "tissue",          // the app (config apps[].application_id)
//     "slideId": "...",                   // as DPAT sent it
//     "receivedAt": "2026-11-23T04:10:00.123Z",
//     "invocation": { ... },              // kind create / modify: the Invocation
//                                         //   exactly as to_json(iaapi::Invocation)
//                                         //   writes it (decode<Invocation> reads it)
//     "notification": { ... },            // kind notification: the ImageNotification
//                                         //   as to_json(iaapi::ImageNotification)
//     "actionId": "rerun"                 // kind modify: the pressed patchCollection
//                                         //   button (absent when none)
//   }
// Both "invocation" and "notification" hold callbackInfo with the bearer
// token: the queue keeps job files 0600 and never logs payloads.
// The queue's slide_key is iaapi::slide_key(slideId), its app_id the
// applicationId.
#include <boost/json/object.hpp>

#include <optional>
#include <string>

#include "iaapi/messages.hpp"
#include "iaapi/timestamp.hpp"

namespace iaserve::server {

enum class JobKind { create, modify, notification };
std::string_view to_string(JobKind k);

struct JobPayload {
  static constexpr int kVersion = 1;
  JobKind kind = JobKind::create;
  std::string application_id;
  std::string slide_id;
  std::string received_at;  // ISO 8601 UTC with milliseconds
  std::optional<iaapi::Invocation> invocation;          // create / modify
  std::optional<iaapi::ImageNotification> notification; // notification
  std::optional<std::string> action_id;                  // modify: pressed button

  // The callback of whichever message the job holds.
  const iaapi::CallbackInfo& callback() const;
  const boost::json::object& context() const;
};

boost::json::object to_json(const JobPayload& p);
// Throws std::runtime_error naming the field ("job payload: invocation.slideId: ...").
JobPayload job_payload_from_json(const boost::json::object& o);

using iaapi::utc_now_iso;  // receivedAt stamps

}  // namespace iaserve::server
