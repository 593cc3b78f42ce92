// libFuzzer target: see fuzz_entries.h. Run through ci/fuzz.sh.
#include "fuzz_entries.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tg::fuzz::config({data, size});
  return 0;
}
