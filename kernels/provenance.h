// Provenance including the kernel libraries: base_provenance() plus cuBLASLt and cuDNN versions
// (compile-time and run-time) in CUDA builds.
#pragma once

#include "common/provenance.h"

namespace tg::kernels {
Provenance provenance();
}
