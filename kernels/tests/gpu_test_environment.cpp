// Compiled into every gpu-labelled test executable that links tegemma_kernels (cmake/TegemmaTest.cmake adds it):
// after the last test, frees the kernels' process-lifetime library state (cuBLASLt handles and workspaces, cuDNN
// handles and plans, the attention scratch; kernels/library_state.h) while CUDA is still alive, so that
// compute-sanitizer --leak-check full (ci/gpu_sanitize.sh) reports only real leaks.
#include <gtest/gtest.h>

#include <exception>

#include "common/tensor.h"
#include "kernels/library_state.h"

namespace {

class ReleaseLibraryState : public ::testing::Environment {
 public:
  void TearDown() override {
    if (!tg::cuda_available()) return;
    try {
      tg::kernels::release_library_state();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "release_library_state after the last test: " << e.what();
    }
  }
};

// Registered before gtest_main's RUN_ALL_TESTS (GoogleTest allows that from a namespace-scope initializer; it
// owns the environment). This object file is linked into the executable directly (an OBJECT library, not an
// archive member), so the linker keeps it.
[[maybe_unused]] ::testing::Environment* const g_release_library_state =
    ::testing::AddGlobalTestEnvironment(new ReleaseLibraryState);

}  // namespace
