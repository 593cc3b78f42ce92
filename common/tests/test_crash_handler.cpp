// common/crash_handler: a crash through a null function pointer (the kind a debugger cannot unwind) is reported
// with the program name, the signal and the caller's return address resolved to this binary; the process still
// dies of the signal (death test: the exit status is the signal's).
#include <gtest/gtest.h>

#include <csignal>

#include "common/crash_handler.h"

namespace tg {
namespace {

using Fn = void (*)();
// volatile: the compiler must not see that the pointer is null and drop the call.
Fn volatile g_null_fn = nullptr;

[[gnu::noinline, maybe_unused]] void call_through_null() { g_null_fn(); }  // unused under ASan (skipped)

TEST(CrashHandlerDeathTest, NullCallNamesTheSignalAndTheCaller) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "under AddressSanitizer the handler stays off (ASan reports itself)";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        install_crash_handler("crashtest");
        call_through_null();
      },
      ::testing::KilledBySignal(SIGSEGV),
      "crashtest: fatal signal 11[^\n]*\n"        // the signal
      "crashtest: pc \\(nil\\): \\(not in a loaded object\\)\n"  // a jump to address 0
      "(.|\n)*crashtest: stack word 0x[0-9a-f]+: [^\n]*test_common");  // a return address into this binary
#endif
}

}  // namespace
}  // namespace tg
