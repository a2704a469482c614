// The exec analysis's spec: its parameters and their checks, with the
// splitting of its argument line and the finding of its program, which the
// analysis (../exec.cpp) uses too.
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>

#include "worker/analysis/exec_guard.hpp"
#include "worker/analysis/spec/spec.hpp"

namespace iaserve::analysis {

namespace fs = std::filesystem;

namespace exec {

std::vector<std::string> split_args(const std::string& text) {
  std::vector<std::string> out;
  std::string word;
  bool in_word = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ' || c == '\t' || c == '\n') {
      if (in_word) out.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\\') {
      if (++i == text.size()) throw ParameterError("parameter args: ends with a lone backslash: " + text);
      word += text[i];
    } else if (c == '\'') {
      const auto end = text.find('\'', i + 1);
      if (end == std::string::npos)
        throw ParameterError("parameter args: unclosed ' at character " + std::to_string(i + 1) + ": " + text);
      word.append(text, i + 1, end - i - 1);
      i = end;
    } else if (c == '"') {
      const std::size_t open = i;
      for (++i;; ++i) {
        if (i == text.size())
          throw ParameterError("parameter args: unclosed \" at character " + std::to_string(open + 1) + ": " + text);
        if (text[i] == '"') break;
        if (text[i] == '\\' && i + 1 < text.size() && (text[i + 1] == '"' || text[i + 1] == '\\')) ++i;
        word += text[i];
      }
    } else {
      word += c;
    }
  }
  if (in_word) out.push_back(std::move(word));
  return out;
}

std::optional<std::string> resolve(const std::string& command) {
  auto runnable = [](const fs::path& p) {
    struct ::stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (command.find('/') != std::string::npos) return runnable(command) ? std::optional(command) : std::nullopt;
  const char* path = std::getenv("PATH");
  std::string dirs = path ? path : "/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= dirs.size()) {
    std::size_t end = dirs.find(':', start);
    if (end == std::string::npos) end = dirs.size();
    fs::path candidate = fs::path(dirs.substr(start, end - start)) / command;
    if (end > start && runnable(candidate)) return candidate.string();
    start = end + 1;
  }
  return std::nullopt;
}

std::optional<std::string> guard_path() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return std::nullopt;
  const fs::path guard = self.parent_path() / exec_guard::kProgram;
  if (::access(guard.c_str(), X_OK) != 0) return std::nullopt;
  return guard.string();
}

}  // namespace exec

namespace {

void check_params(const Params& p) {
  if (p.text("command").empty()) throw ParameterError("parameter command: required (the program to run)");
  exec::split_args(p.text("args"));  // its quoting, at start-up rather than at the first job
}

// On the host that runs it: the program is there.
void check_program(const Params& p) {
  const std::string& command = p.text("command");
  if (!exec::resolve(command))
    throw ParameterError("parameter command: \"" + command + "\" is not an executable file (nor on PATH)");
}

}  // namespace

const Spec& exec_spec() {
  static const Spec spec{
      "exec",
      "Any program as the analysis: a JSON job on stdin, progress and one result as JSON lines on stdout "
      "(docs/exec.md)",
      {InputType::whole_slide, InputType::tagged_polygon, InputType::multi_area},
      {
          {"command", ParamType::text, std::string(), {}, {}, {}, "the program: a path, or a name on PATH"},
          {"args", ParamType::text, std::string(), {}, {}, {},
           "its arguments, split as a shell would: quotes and backslashes group, nothing is expanded"},
          {"max_output_mb", ParamType::integer, std::int64_t{64}, 1.0, 4096.0, {},
           "most bytes it may write to stdout, MB"},
      },
      "1",
      check_params,
      check_program,
  };
  return spec;
}

}  // namespace iaserve::analysis
