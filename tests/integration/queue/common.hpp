#pragma once
// Helpers of the multi-process queue tests: many jobs fast, iaqueue worker
// command lines, reading the side files the workers leave.
#include <catch2/catch.hpp>

#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "iaapi/log.hpp"
#include "queue/queue.hpp"
#include "tests/support/process.hpp"

namespace iaserve::test::queue_support {

namespace fs = std::filesystem;

// n jobs of distinct slides, enqueued from several threads (fsync-bound).
inline std::vector<std::string> enqueue_many(const fs::path& dir, int n, int threads = 8,
                                             queue::Options o = {}, const std::string& slide_prefix = "slide-") {
  log::setup("warn");  // a line per job would drown the test's own report
  queue::Queue q(dir, o);
  std::vector<std::vector<std::string>> ids(threads);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = t; i < n; i += threads) {
        queue::JobSpec s;
        s.slide_key = slide_prefix + std::to_string(i);
        s.app_id = "stress";
        s.payload = boost::json::object{{"i", i}};
        ids[t].push_back(q.enqueue(s));
      }
    });
  }
  for (auto& t : ts) t.join();
  std::vector<std::string> all;
  for (auto& v : ids) all.insert(all.end(), v.begin(), v.end());
  return all;
}

// Side files "<kind>-<job id>-<attempt>" written by `iaqueue work --out`.
struct SideFiles {
  std::map<std::string, std::set<int>> start, done, kill;
  std::vector<std::string> doubles;
};

inline SideFiles read_side_files(const fs::path& out) {
  SideFiles s;
  for (auto& e : fs::directory_iterator(out)) {
    std::string n = e.path().filename().string();
    if (n.rfind("DOUBLE-", 0) == 0) {
      s.doubles.push_back(n);
      continue;
    }
    auto dash = n.find('-');
    auto last = n.rfind('-');
    if (dash == std::string::npos || last == dash) continue;
    std::string kind = n.substr(0, dash), id = n.substr(dash + 1, last - dash - 1);
    // Only these carry an attempt; "running-<id>" (left by a run killed
    // mid-job) ends in the id's random hex.
    if (kind != "start" && kind != "done" && kind != "kill") continue;
    int attempt = std::stoi(n.substr(last + 1));
    if (kind == "start") s.start[id].insert(attempt);
    if (kind == "done") s.done[id].insert(attempt);
    if (kind == "kill") s.kill[id].insert(attempt);
  }
  return s;
}

inline std::vector<std::string> worker_argv(const fs::path& dir, const fs::path& out,
                                            std::vector<std::string> extra = {}) {
  std::vector<std::string> argv = {bin("iaqueue"), "--dir", dir.string(), "work", "--out", out.string()};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return argv;
}

// Each job started and completed once, at attempt 0, and no worker caught a
// double run (a run with nothing killed).
inline void check_each_ran_once(const fs::path& out, const std::vector<std::string>& ids) {
  auto side = read_side_files(out);
  CHECK(side.doubles.empty());
  std::size_t wrong = 0;
  for (auto& id : ids)
    if (side.done[id] != std::set<int>{0} || side.start[id] != std::set<int>{0}) ++wrong;
  CHECK(wrong == 0);
}

// Jobs an `iaqueue work` process completed (its stdout: "completed N").
inline std::size_t completed_by(Process& worker) {
  auto text = worker.stdout_text();
  return text.rfind("completed ", 0) == 0 ? std::stoul(text.substr(10)) : 0;
}

inline const std::map<std::string, std::string> kQuiet = {{"IASERVE_LOG", "warn"}};

}  // namespace iaserve::test::queue_support
