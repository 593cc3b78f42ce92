#include "common/progress.h"

#include <unistd.h>

#include <cstdio>

namespace tg {

bool Progress::terminal_output(bool quiet) { return !quiet && ::isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string label, int64_t total, bool quiet)
    : label_(std::move(label)), total_(total), enabled_(terminal_output(quiet)),
      start_(std::chrono::steady_clock::now()), last_draw_(start_ - std::chrono::seconds(1)) {}

Progress::~Progress() {
  if (enabled_ && !finished_) std::fputc('\n', stderr);
}

double Progress::elapsed_seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

std::string Progress::format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "--:--";
  const auto s = static_cast<long>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  else std::snprintf(buf, sizeof buf, "%02ld:%02ld", s / 60, s % 60);
  return buf;
}

std::string Progress::format_rate(double v) {
  char buf[32];
  if (v >= 1e6) std::snprintf(buf, sizeof buf, "%.1fM", v / 1e6);
  else if (v >= 1e3) std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

void Progress::update(int64_t done, std::string_view status) { draw(done, status, false); }

void Progress::finish(std::string_view status) {
  if (finished_) return;
  if (enabled_) {
    draw(total_, status, true);
    std::fputc('\n', stderr);
  }
  finished_ = true;
}

void Progress::draw(int64_t done, std::string_view status, bool force) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (!force && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  const double t = elapsed_seconds();
  const double frac = total_ > 0 ? static_cast<double>(done) / static_cast<double>(total_) : 0.0;
  const double eta = done > 0 ? t * (static_cast<double>(total_ - done) / static_cast<double>(done)) : -1.0;
  std::fprintf(stderr, "\r\033[K[%s] %lld/%lld %3.0f%% | %s elapsed | ETA %s%s%.*s", label_.c_str(),
               static_cast<long long>(done), static_cast<long long>(total_), 100.0 * frac,
               format_duration(t).c_str(), format_duration(eta).c_str(), status.empty() ? "" : " | ",
               static_cast<int>(status.size()), status.data());
  std::fflush(stderr);
}

}  // namespace tg
