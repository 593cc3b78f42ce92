#include "common/provenance.h"

#include <unistd.h>

#include <cstdlib>
#include <ctime>

#if TEGEMMA_HAVE_CUDA
#include <cuda_runtime.h>
#endif

namespace tg {

std::string utc_now_iso8601() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Provenance base_provenance() {
  Provenance p;
  const char* env_commit = std::getenv("TEGEMMA_COMMIT");
  p["commit"] = env_commit && *env_commit ? env_commit : TEGEMMA_GIT_COMMIT;
  p["version"] = TEGEMMA_VERSION;
  p["build_type"] = TEGEMMA_BUILD_TYPE;
#if defined(__clang__)
  p["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  p["compiler"] = "gcc " __VERSION__;
#endif
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) == 0) p["host"] = host;
  p["when"] = utc_now_iso8601();
#if TEGEMMA_HAVE_CUDA
  int rt = 0, drv = 0;
  if (cudaRuntimeGetVersion(&rt) == cudaSuccess) p["cuda_runtime"] = std::to_string(rt);
  if (cudaDriverGetVersion(&drv) == cudaSuccess) p["cuda_driver"] = std::to_string(drv);
  int n = 0;
  if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
      p["gpu"] = prop.name;
      p["gpu_sm_count"] = std::to_string(prop.multiProcessorCount);
      p["gpu_cc"] = std::to_string(prop.major) + "." + std::to_string(prop.minor);
    }
  } else {
    (void)cudaGetLastError();
    p["gpu"] = "none";
  }
#else
  p["gpu"] = "none (built without CUDA)";
#endif
  return p;
}

}  // namespace tg
