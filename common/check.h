// Errors: one family of macros for argument checks and library status codes.
//
//   TG_CHECK(cond, msg...)           argument/invariant check; throws tg::Error with file:line and the message
//   TG_CHECK_EQ(a, b, what)          "<what>: expected <b>, got <a>"
//   TG_FAIL(msg...)                  unconditional failure
//   TG_CHECK_STATUS(lib, expr, ok, to_string)   the generic library-status check the CUDA macros build on
//   TG_CHECK_CUDA / TG_CHECK_CUBLAS / TG_CHECK_CUDNN  (common/cuda_check.h, kernels/cuda/lib_check.h)
//
// Every message part is streamed with operator<<, so call sites read like sentences:
//   TG_CHECK(x.ndim() == 2, "rmsnorm: input must be 2-D [tokens, hidden], got shape ", x.shape());
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace tg {

// The one exception type of the project. `what()` holds "file:line: message".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace tg

#define TG_FAIL(...) ::tg::detail::throw_error(__FILE__, __LINE__, ::tg::detail::concat(__VA_ARGS__))

#define TG_CHECK(cond, ...)                                                                     \
  do {                                                                                          \
    if (!(cond)) [[unlikely]] {                                                                 \
      ::tg::detail::throw_error(__FILE__, __LINE__,                                             \
                                ::tg::detail::concat(__VA_ARGS__ __VA_OPT__(, ) " [check `", \
                                                     #cond, "` failed]"));                      \
    }                                                                                           \
  } while (0)

#define TG_CHECK_EQ(actual, expected, what)                                                   \
  do {                                                                                        \
    const auto& tg_a_ = (actual);                                                             \
    const auto& tg_e_ = (expected);                                                           \
    if (!(tg_a_ == tg_e_)) [[unlikely]] {                                                     \
      ::tg::detail::throw_error(__FILE__, __LINE__,                                           \
                                ::tg::detail::concat(what, ": expected ", tg_e_, ", got ", tg_a_)); \
    }                                                                                         \
  } while (0)

// Generic status check: `expr` returns a status; anything but `ok` throws with the library name,
// the expression, the numeric status and the library's own message (to_string(status)).
#define TG_CHECK_STATUS(lib, expr, ok, to_string)                                              \
  do {                                                                                         \
    const auto tg_s_ = (expr);                                                                 \
    if (tg_s_ != (ok)) [[unlikely]] {                                                          \
      ::tg::detail::throw_error(__FILE__, __LINE__,                                            \
                                ::tg::detail::concat(lib, " error ", static_cast<long>(tg_s_), \
                                                     " (", to_string(tg_s_), ") in `", #expr,   \
                                                     "`"));                                     \
    }                                                                                          \
  } while (0)
