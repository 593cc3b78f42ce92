// Terminal progress for long work (training, generation, benchmarks): one line on stderr, redrawn at
// most every 100 ms, with counts, rate, ETA and a free-form status ("loss 3.21 | 41.2k tok/s").
// Silent when `quiet` is set or stderr is not a TTY (CI logs stay clean).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace tg {

class Progress {
 public:
  Progress(std::string label, int64_t total, bool quiet);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  // Records that `done` of `total` units are finished; `status` is appended to the line.
  void update(int64_t done, std::string_view status = "");
  // Ends the line (prints the final state once if enabled).
  void finish(std::string_view status = "");
  bool enabled() const { return enabled_; }
  double elapsed_seconds() const;

  // Whether progress output should be shown: not quiet, and stderr is a terminal.
  static bool terminal_output(bool quiet);
  static std::string format_duration(double seconds);  // "1:02:03" or "02:03"
  static std::string format_rate(double per_second);   // "812", "41.2k", "1.3M"

 private:
  void draw(int64_t done, std::string_view status, bool force);
  std::string label_;
  int64_t total_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace tg
