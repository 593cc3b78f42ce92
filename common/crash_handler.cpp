#include "common/crash_handler.h"

#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <ucontext.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <initializer_list>

namespace tg {

namespace {

const char* g_program = "tegemma";

// "what 0x...: object (symbol+0x...)". fprintf from a handler is not async-signal-safe; the process is dying
// and this is best effort (the backtrace below uses the safe backtrace_symbols_fd).
void print_address(const char* what, const void* a) {
  Dl_info info{};
  if (a != nullptr && ::dladdr(a, &info) != 0) {
    const void* base = info.dli_sname != nullptr ? info.dli_saddr : info.dli_fbase;
    std::fprintf(stderr, "%s: %s %p: %s (%s+%#lx)\n", g_program, what, a,
                 info.dli_fname != nullptr ? info.dli_fname : "?", info.dli_sname != nullptr ? info.dli_sname : "?",
                 static_cast<unsigned long>(static_cast<const char*>(a) - static_cast<const char*>(base)));
  } else {
    std::fprintf(stderr, "%s: %s %p: (not in a loaded object)\n", g_program, what, a);
  }
}

void on_fatal_signal(int sig, siginfo_t* si, void* uc) {
  std::fprintf(stderr, "%s: fatal signal %d (%s)\n", g_program, sig, strsignal(sig));
#if defined(__x86_64__) && defined(REG_RIP)
  const auto* ctx = static_cast<const ucontext_t*>(uc);
  print_address("pc", reinterpret_cast<const void*>(ctx->uc_mcontext.gregs[REG_RIP]));
  if (sig != SIGABRT) print_address("fault address", si->si_addr);
  const auto* sp = reinterpret_cast<void* const*>(ctx->uc_mcontext.gregs[REG_RSP]);
  for (int i = 0; i < 4; ++i) print_address("stack word", sp[i]);
#else
  (void)si;
  (void)uc;
#endif
  std::fflush(stderr);
  void* frames[64];
  const int n = ::backtrace(frames, 64);
  ::backtrace_symbols_fd(frames, n, STDERR_FILENO);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

}  // namespace

void install_crash_handler(const char* program) {
#if defined(__SANITIZE_ADDRESS__)
  (void)program;
  return;  // AddressSanitizer's own SEGV report says more
#endif
  static std::atomic<bool> installed{false};
  if (installed.exchange(true)) return;
  g_program = program;
  struct sigaction sa {};
  sa.sa_sigaction = on_fatal_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) sigaction(sig, &sa, nullptr);
}

}  // namespace tg
