// Provenance: where a result came from. Every JSON output (parity, benchmarks, training logs) carries
// it. The base part is collected here (commit, build, host, time, CUDA runtime/driver and GPU where
// available); kernels/ adds cuBLASLt/cuDNN versions and reference/ adds the LibTorch version.
#pragma once

#include <map>
#include <string>

namespace tg {

using Provenance = std::map<std::string, std::string>;

// commit (TEGEMMA_COMMIT env overrides the configure-time value), version, build_type, compiler,
// host, when (UTC, ISO 8601), and with CUDA: cuda_runtime, cuda_driver, gpu, gpu_sm_count.
Provenance base_provenance();
std::string utc_now_iso8601();

}  // namespace tg
