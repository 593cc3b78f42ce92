// The message of the tg::Error that f() throws, or "(no error)" when it throws none: for tests that check what a
// bad input's error says (EXPECT_THAT(error_of([&] { ... }), HasSubstr("...")).
#pragma once

#include <string>

#include "common/check.h"

namespace tg::testing {

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace tg::testing
