#pragma once
// The queue's records: job ids, job files and lease files as JSON.
#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "queue/queue.hpp"

namespace iaserve::queue::record {

// "<priority inverted, 5 digits>-<ns timestamp, 20 digits>-<slide hash, 16
// hex>-<random, 8 hex>": a plain name sort is the claim order.
struct IdParts {
  int priority = 0;
  std::int64_t time_ns = 0;
  std::string slide_hash;
  std::string random;
};
constexpr int kMaxPriority = 49999;
std::string make_id(int priority, std::int64_t time_ns, std::string_view slide_hash,
                    std::string_view random);
std::optional<IdParts> parse_id(std::string_view id);
std::string slide_hash(std::string_view app_id, std::string_view slide_key);

// The transition a job file records before it moves out of active/, so that
// recovery finishes an interrupted one instead of counting a lost run. It is
// trusted only when its run matches the lease's run.
struct Outcome {
  std::string state;  // "done", "failed", "pending", "cancelled"
  std::string run;
};

// Who claimed the job last: the run (an id per claim) and the file name of
// the claiming process's lease in leases/. Appended before the claim's rename.
struct ClaimRecord {
  std::string run;
  std::string lease;
};

struct JobFile {
  Job job;  // state is not stored: the folder says it
  std::optional<Outcome> outcome;
  std::optional<ClaimRecord> claim;
  // How many times the job has left active/ (updates with an "outcome" key,
  // set or cleared). Claims on a share take the marker claims/<id>.<generation>
  // with an exclusive create, so two hosts never rename one job at once.
  int generation = 0;
};

// A job file is JSON lines: the first line is the whole job as enqueued
// (encode_job); every later line is an update appended by a state change
// (encode_update: attempts, finished time, last error, summary, outcome), so
// a state change appends to the file it moves instead of writing a new one.
std::string encode_job(const JobFile& f);
// "\n<update>\n": the leading newline ends a line torn by a crash.
std::string encode_update(const JobFile& f);
// The update a claim appends.
std::string encode_claim(const ClaimRecord& c);
// An update that only starts a new generation (a claim that died before its
// rename left that generation's marker behind).
std::string encode_bump();
// An update that only records why a job left and when (superseded jobs).
std::string encode_note(const std::string& last_error, std::chrono::system_clock::time_point finished);
// The first line with every update applied. Throws QueueError("... : <why>")
// when the first line is not a well-formed job; an update line that does not
// parse (torn by a crash before its move) is ignored.
JobFile decode_job(std::string_view text, std::string_view id_from_name);

struct LeaseFile {
  Lease lease;
  std::string run;
};
std::string encode_lease(const LeaseFile& l);
std::optional<LeaseFile> decode_lease(std::string_view text);  // nullopt when malformed

std::chrono::system_clock::time_point from_ns(std::int64_t ns);
std::int64_t to_ns(std::chrono::system_clock::time_point t);

}  // namespace iaserve::queue::record
