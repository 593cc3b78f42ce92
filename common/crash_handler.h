// A fatal-signal report: on SIGSEGV / SIGBUS / SIGFPE / SIGILL / SIGABRT, print to stderr where it happened --
// the program counter, the faulting address and the first words at the stack pointer (after a call through a null
// function pointer the first is the caller's return address), each resolved to "object (symbol+offset)" with
// dladdr -- then a backtrace, then die of the same signal (the exit status stays 128 + signal). For bug reports
// of crashes that a debugger cannot unwind (a jump to address 0 leaves no frame). Linux / x86-64 reads the
// registers; elsewhere only the backtrace is printed.
#pragma once

namespace tg {

// Installs the handler once per process (later calls do nothing; nothing under AddressSanitizer, whose own report
// says more). `program` prefixes the report.
void install_crash_handler(const char* program);

}  // namespace tg
