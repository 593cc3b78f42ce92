// The cuBLASLt side of kernels/gemm/gemm.h: handle, workspaces, heuristic cache and the matmul call.
//
// Row-major out[M, N] = A[M, K] * B[N, K]^T is cuBLASLt's column-major TN product
//     D (N x M, ld = ldd) = op_T(Bcl) * Acl,  Bcl = our B seen as K x N (ld = ldb), Acl = our A as K x M (ld = lda)
// so cuBLASLt's "A" is our B and cuBLASLt's "B" is our A: m = N, n = M, k = K, and the A/B scale pointers
// and scale modes swap accordingly (CUBLASLT_MATMUL_DESC_A_SCALE_POINTER = our B's scale_inv, ...).
//
// cuBLASLt attributes used:
//   matmul desc: CUBLASLT_MATMUL_DESC_TRANSA = T, TRANSB = N; compute CUBLAS_COMPUTE_32F, scale type CUDA_R_32F;
//     FP8: CUBLASLT_MATMUL_DESC_FAST_ACCUM, A_SCALE_POINTER / B_SCALE_POINTER, A_SCALE_MODE / B_SCALE_MODE
//     (SCALAR_32F, VEC128_32F, BLK128x128_32F); FP8 out: D_SCALE_POINTER, AMAX_D_POINTER.
//   layouts: cublasLtMatrixLayoutCreate(type, rows, cols, ld) (column-major, the default order).
//   preference: CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, MIN_ALIGNMENT_{A,B,C,D}_BYTES (the real pointer
//     alignment, so an algorithm that needs more is never picked), REDUCTION_SCHEME_MASK (deterministic mode).
//   algo config (reported by gemm_last_algo): ALGO_ID, TILE_ID, STAGES_ID, SPLITK_NUM, REDUCTION_SCHEME.
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "common/cuda_check.h"
#include "common/env.h"
#include "common/nvtx.h"
#include "kernels/cuda/device_sync.h"
#include "kernels/cuda/lib_check.h"
#include "kernels/gemm/gemm.h"

namespace tg::kernels::cuda {

namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::F32: return CUDA_R_32F;
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    case DType::E4M3: return CUDA_R_8F_E4M3;
    case DType::E5M2: return CUDA_R_8F_E5M2;
    default: TG_FAIL("gemm: no cuBLASLt type for ", t);
  }
}

int32_t scale_mode(ScalingMode m) {
  switch (m) {
    case ScalingMode::kPerTensor: return CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F;
    case ScalingMode::kBlock1x128: return CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    case ScalingMode::kBlock128x128: return CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  }
  TG_FAIL("gemm_fp8: unknown scaling mode");
}

// Largest power of two <= 256 dividing the address (what CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*_BYTES wants).
uint32_t alignment(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al /= 2;
  return al;
}

// ---- RAII over the cuBLASLt descriptors (destroyed without throwing) ------------------------------------------
class MatmulDesc {
 public:
  MatmulDesc() { TG_CHECK_CUBLAS(cublasLtMatmulDescCreate(&d_, CUBLAS_COMPUTE_32F, CUDA_R_32F)); }
  ~MatmulDesc() { (void)cublasLtMatmulDescDestroy(d_); }
  MatmulDesc(const MatmulDesc&) = delete;
  MatmulDesc& operator=(const MatmulDesc&) = delete;
  template <typename T>
  void set(cublasLtMatmulDescAttributes_t attr, const T& value) {
    TG_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(d_, attr, &value, sizeof(value)));
  }
  cublasLtMatmulDesc_t get() const { return d_; }

 private:
  cublasLtMatmulDesc_t d_ = nullptr;
};

class MatrixLayout {
 public:
  MatrixLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld) {
    TG_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&l_, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols),
                                               ld));
  }
  ~MatrixLayout() { (void)cublasLtMatrixLayoutDestroy(l_); }
  MatrixLayout(const MatrixLayout&) = delete;
  MatrixLayout& operator=(const MatrixLayout&) = delete;
  cublasLtMatrixLayout_t get() const { return l_; }

 private:
  cublasLtMatrixLayout_t l_ = nullptr;
};

class Preference {
 public:
  Preference() { TG_CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&p_)); }
  ~Preference() { (void)cublasLtMatmulPreferenceDestroy(p_); }
  Preference(const Preference&) = delete;
  Preference& operator=(const Preference&) = delete;
  template <typename T>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const T& value) {
    TG_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(p_, attr, &value, sizeof(value)));
  }
  cublasLtMatmulPreference_t get() const { return p_; }

 private:
  cublasLtMatmulPreference_t p_ = nullptr;
};

// ---- Per-device handle, per-(device, stream) workspace ---------------------------------------------------------
// One workspace per stream, not per device: two streams running GEMMs at the same time must not share scratch
// memory (split-K partials live there). The containers are never destroyed (as cuDNN's state in kernels/attention):
// a cudaFree from a static destructor would run after the CUDA runtime, or LibTorch's, has begun tearing down
// (a suspect for the SIGSEGV at exit of test_impl_parity_gpu, which loads both). Their contents are freed by
// release_gemm_state() (kernels/library_state.h), which the program calls while CUDA is alive; the next GEMM
// creates them again.
struct Context {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
};

std::mutex g_mutex;  // guards the maps below, the heuristic cache and the cache counters

struct Contexts {
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, cudaStream_t>, Buffer> workspaces;
};
Contexts& contexts() {
  static auto& c = *new Contexts();  // never destroyed (see above)
  return c;
}

Context context(int device, cudaStream_t stream) {
  std::lock_guard<std::mutex> lock(g_mutex);
  auto& handles = contexts().handles;
  auto& workspaces = contexts().workspaces;
  Context c;
  auto h = handles.find(device);
  if (h == handles.end()) {
    cublasLtHandle_t handle = nullptr;
    TG_CHECK_CUBLAS(cublasLtCreate(&handle));
    h = handles.emplace(device, handle).first;
  }
  c.handle = h->second;
  auto w = workspaces.find({device, stream});
  if (w == workspaces.end()) {
    w = workspaces.emplace(std::make_pair(device, stream), Buffer(kWorkspaceBytes, Device::CUDA)).first;
    // Zeroed once: cuBLASLt's split-K reduction reads workspace words that no kernel of the call wrote
    // (compute-sanitizer initcheck on the H200, session 5: cublasLt::splitKreduce_kernel in
    // GemmGpu.DeterministicModeIsBitwiseRepeatable, whose results were bit-exact all the same); a read of
    // uninitialised memory is a finding whatever it feeds. Not while the stream is being captured: the memset
    // would become a node of the graph (a captured GEMM's workspace exists from its eager warm-up).
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    TG_CHECK_CUDA(cudaStreamIsCapturing(stream, &capturing));
    if (capturing == cudaStreamCaptureStatusNone) {
      TG_CHECK_CUDA(cudaMemsetAsync(w->second.data(), 0, kWorkspaceBytes, stream));
    }
  }
  c.workspace = w->second.data();
  return c;
}

// ---- Heuristic cache -----------------------------------------------------------------------------------------
struct Key {
  int device;
  int64_t m, n, k, lda, ldb, ldd;              // our row-major terms
  int a_type, b_type, d_type, c_type;           // cudaDataType_t
  int32_t a_mode, b_mode;                       // scale modes (-1: not an FP8 GEMM)
  bool fast_accum, beta_nonzero, d_scale, d_amax, deterministic;
  int candidate;
  bool autotune;  // tuning::gemm_autotune(), m <= kGemmTuneMaxRows, neither deterministic nor a forced candidate
  uint32_t align_a, align_b, align_c, align_d;
  bool trans_a, trans_b;  // BF16 only: our A stored [K, M] / our B stored [K, N]
  auto tie() const {
    return std::tie(device, m, n, k, lda, ldb, ldd, a_type, b_type, d_type, c_type, a_mode, b_mode, fast_accum,
                    beta_nonzero, d_scale, d_amax, deterministic, candidate, autotune, align_a, align_b, align_c,
                    align_d, trans_a, trans_b);
  }
  bool operator<(const Key& o) const { return tie() < o.tie(); }
};

struct CachedAlgo {
  cublasLtMatmulAlgo_t algo;
  GemmAlgoInfo info;
};

std::map<Key, CachedAlgo>& cache() {  // guarded by g_mutex; emptied by release_gemm_state()
  static std::map<Key, CachedAlgo> c;
  return c;
}
GemmCacheStats g_stats;
thread_local GemmAlgoInfo t_last;

int algo_config(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
  // The config attributes are 32-bit (uint32_t / int32_t / uint16_t fields written into a 4-byte buffer).
  uint32_t v = 0;
  std::size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written) != CUBLAS_STATUS_SUCCESS) return -1;
  return static_cast<int>(v);
}

const char* type_name(int t) {
  switch (t) {
    case CUDA_R_32F: return "F32";
    case CUDA_R_16BF: return "BF16";
    case CUDA_R_16F: return "F16";
    case CUDA_R_8F_E4M3: return "E4M3";
    case CUDA_R_8F_E5M2: return "E5M2";
    default: return "?";
  }
}

std::string describe(const Key& k) {
  auto mode = [](int32_t m) {
    switch (m) {
      case -1: return "none";
      case CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F: return "per-tensor";
      case CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F: return "1x128";
      case CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F: return "128x128";
      default: return "?";
    }
  };
  std::ostringstream os;
  os << "out[M=" << k.m << ", N=" << k.n << "] = A[M, K=" << k.k << "] * B[N, K]^T with A " << type_name(k.a_type)
     << " (" << mode(k.b_mode) << " scaling, row stride " << k.lda << "), B " << type_name(k.b_type) << " ("
     << mode(k.a_mode) << " scaling, row stride " << k.ldb << "), out " << type_name(k.d_type) << " (row stride "
     << k.ldd << "), fast_accum=" << k.fast_accum << ", deterministic=" << k.deterministic
     << ", transpose_a=" << k.trans_a << ", transpose_b=" << k.trans_b << ", pointer alignment A/B/C/D " << k.align_a
     << "/" << k.align_b << "/" << k.align_c << "/" << k.align_d
     << " bytes (cuBLASLt " << cublasLtGetVersion() << ", device " << k.device << ")";
  return os.str();
}

// Everything one cublasLtMatmul call needs besides the descriptors.
struct Operands {
  const void* a = nullptr;  // ours
  const void* b = nullptr;
  void* out = nullptr;
  const void* c = nullptr;  // nullptr: C is not read (beta = 0 with an FP8 out)
  std::size_t out_elem_bytes = 0;
  const void* amax = nullptr;  // the FP8 GEMM's out_amax (F32 [1]) when requested (AMAX_D_POINTER)
};

class Event {  // a timing event, destroyed without throwing
 public:
  Event() { TG_CHECK_CUDA(cudaEventCreate(&e_)); }
  ~Event() { (void)cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// tuning::set_gemm_autotune (gemm.h): the index of the fastest of `found` heuristic results on these operands, or 0
// where none is kGemmTuneMinGain faster than the first; -1: not timed (the scratch output would be too large). The
// trial runs leave the caller's results untouched (see gemm.h); `desc` gets its amax pointer back.
int fastest_candidate(const Context& ctx, MatmulDesc& desc, const cublasLtMatmulHeuristicResult_t* results, int found,
                      const Key& key, const Operands& ops, const GemmOptions& opt, cudaStream_t s,
                      cublasLtMatrixLayout_t la, cublasLtMatrixLayout_t lb, cublasLtMatrixLayout_t lc,
                      cublasLtMatrixLayout_t ld) {
  TG_NVTX_RANGE("gemm_autotune");
  void* out = ops.out;
  Buffer scratch_out;
  if (opt.beta != 0.0f) {  // the trials must not accumulate into the caller's output
    const std::size_t bytes =
        static_cast<std::size_t>(key.m) * static_cast<std::size_t>(key.ldd) * ops.out_elem_bytes;
    if (bytes > tuning::kGemmTuneScratchBytes) return -1;
    scratch_out = Buffer(bytes, Device::CUDA);
    out = scratch_out.data();
  }
  Buffer scratch_amax;
  if (ops.amax != nullptr) {
    scratch_amax = Buffer(sizeof(float), Device::CUDA);
    desc.set(CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, scratch_amax.data());
  }
  const float alpha = opt.alpha, beta = opt.beta;
  const auto launch = [&](int i) {
    TG_CHECK_CUBLAS(cublasLtMatmul(ctx.handle, desc.get(), &alpha, ops.b, la, ops.a, lb, &beta, ops.c, lc, out, ld,
                                   &results[i].algo, ctx.workspace, kWorkspaceBytes, s));
  };
  const Event start, stop;
  const auto time_runs = [&](int i, int reps) {  // ms per run
    TG_CHECK_CUDA(cudaEventRecord(start.get(), s));
    for (int r = 0; r < reps; ++r) launch(i);
    TG_CHECK_CUDA(cudaEventRecord(stop.get(), s));
    TG_CHECK_CUDA(cudaEventSynchronize(stop.get()));
    float ms = 0.0f;
    TG_CHECK_CUDA(cudaEventElapsedTime(&ms, start.get(), stop.get()));
    return static_cast<double>(ms) / reps;
  };
  for (int i = 0; i < found; ++i) launch(i);  // first launches (module loading, caches) are not timed
  constexpr double kRoundMs = 0.2;
  const int reps = static_cast<int>(std::clamp(kRoundMs / std::max(time_runs(0, 1), 1e-6), 1.0, 8.0));
  std::vector<double> best(static_cast<std::size_t>(found), std::numeric_limits<double>::infinity());
  for (int round = 0; round < 2; ++round) {
    for (int i = 0; i < found; ++i) best[i] = std::min(best[i], time_runs(i, reps));
  }
  if (ops.amax != nullptr) desc.set(CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, ops.amax);
  const int pick = static_cast<int>(std::min_element(best.begin(), best.end()) - best.begin());
  return best[pick] < best[0] * (1.0 - tuning::kGemmTuneMinGain) ? pick : 0;
}

void run(const Key& key, MatmulDesc& desc, const Operands& ops, const GemmOptions& opt, Stream stream) {
  const cudaStream_t s = cuda_stream(stream);
  const Context ctx = context(key.device, s);
  // cuBLASLt's view: A = our B (K x N, op T; or N x K, op N when our B is stored [K, N]), B = our A (K x M,
  // op N; or M x K, op T when our A is stored [K, M]), C/D = N x M.
  const MatrixLayout la(static_cast<cudaDataType_t>(key.b_type), key.trans_b ? key.n : key.k,
                        key.trans_b ? key.k : key.n, key.ldb);
  const MatrixLayout lb(static_cast<cudaDataType_t>(key.a_type), key.trans_a ? key.m : key.k,
                        key.trans_a ? key.k : key.m, key.lda);
  const MatrixLayout lc(static_cast<cudaDataType_t>(key.c_type), key.n, key.m, key.ldd);
  const MatrixLayout ld(static_cast<cudaDataType_t>(key.d_type), key.n, key.m, key.ldd);

  CachedAlgo chosen{};
  bool hit = false;
  {
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = cache().find(key);
    if (it != cache().end()) {
      chosen = it->second;
      hit = true;
      ++g_stats.hits;
    }
  }
  if (!hit) {
    Preference pref;
    pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(kWorkspaceBytes));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_b);  // cuBLASLt's A is our B
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_a);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_c);
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d);
    if (key.deterministic || key.d_type != CUDA_R_32F) {
      // Split-K only with a separate FP32 (compute type) reduction step; never the schemes that accumulate
      // partials in the output type (INPLACE, OUTPUT_TYPE). Deterministic mode: determinism comes from the cached
      // (fixed) algorithm, and tall-K shapes such as wgrad need split-K (with NONE alone, FP8 64x64x65536 -> F32
      // has no algorithm on the H200, cuBLASLt 13.1). BF16/FP8 outputs: the contract is FP32 accumulation, and a
      // reduction in the output type would round every partial (the likely cause of a 3-ulp miss vs the twin at
      // [256, 2048, 512] on the H200; to be confirmed by GemmTransposeGpu).
      pref.set(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
               static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE));
    }
    // The fastest of the first few candidates on these operands (tuning::set_gemm_autotune), else the first, or the
    // one tuning::set_gemm_candidate asks for. Session 19 (H200, bench_gemm): the FP32-only split-K reduction above
    // is not what kept 64x3072x24576 behind at::_scaled_mm (26.9 vs 25.3 us): without the mask cuBLASLt picks the
    // same split 3 with the FP32 reduction; session 20: its second candidate (split 4) takes 25.3 us.
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    TG_CHECK_CUDA(cudaStreamIsCapturing(s, &capturing));
    const bool tune = key.autotune && capturing == cudaStreamCaptureStatusNone;
    cublasLtMatmulHeuristicResult_t results[8]{};
    int found = 0;
    const int asked = tune ? tuning::kGemmTuneCandidates : key.candidate + 1;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(ctx.handle, desc.get(), la.get(), lb.get(), lc.get(),
                                                             ld.get(), pref.get(), asked, results, &found);
    TG_CHECK(st == CUBLAS_STATUS_SUCCESS || st == CUBLAS_STATUS_NOT_SUPPORTED, "gemm: cublasLtMatmulAlgoGetHeuristic "
             "failed with ", cublasLtGetStatusString(st), " for ", describe(key));
    TG_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0, "gemm: cuBLASLt has no algorithm for ", describe(key),
             "; this combination of types, scaling modes and shape is not supported on this GPU");
    TG_CHECK(found > key.candidate, "gemm: heuristic candidate ", key.candidate, " asked for (tuning::",
             "set_gemm_candidate), but cuBLASLt offers ", found, " candidate(s) for ", describe(key));
    const int timed = tune && found > 1 ? fastest_candidate(ctx, desc, results, found, key, ops, opt, s, la.get(),
                                                            lb.get(), lc.get(), ld.get())
                                        : -1;
    const int pick = timed >= 0 ? timed : key.candidate;
    const cublasLtMatmulHeuristicResult_t& result = results[pick];
    chosen.info.candidate = pick;
    chosen.info.tuned = timed >= 0;
    chosen.algo = result.algo;
    chosen.info.algo_id = algo_config(result.algo, CUBLASLT_ALGO_CONFIG_ID);
    chosen.info.tile_id = algo_config(result.algo, CUBLASLT_ALGO_CONFIG_TILE_ID);
    chosen.info.stages_id = algo_config(result.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID);
    chosen.info.split_k = algo_config(result.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM);
    chosen.info.reduction_scheme = algo_config(result.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME);
    chosen.info.workspace_bytes = result.workspaceSize;
    std::lock_guard<std::mutex> lock(g_mutex);
    chosen = cache().emplace(key, chosen).first->second;  // a thread that tuned the same key first wins
    ++g_stats.misses;
  }
  chosen.info.cache_hit = hit;
  t_last = chosen.info;

  const float alpha = opt.alpha, beta = opt.beta;
  // cuBLASLt's A is our B and its B is our A (see the top of the file).
  TG_CHECK_CUBLAS(cublasLtMatmul(ctx.handle, desc.get(), &alpha, ops.b, la.get(), ops.a, lb.get(), &beta, ops.c,
                                 lc.get(), ops.out, ld.get(), &chosen.algo, ctx.workspace, kWorkspaceBytes, s));
  // compute-sanitizer's initcheck does not see cuBLASLt's TMA stores as writes (common/nvtx.h): mark what this
  // matmul writes, our row-major out's M rows of N elements (not the gaps of a row stride ldd > N) and the amax.
  // No-ops without a tool attached. (The workspace is cuBLASLt's own: written and read by its kernels alone.)
  const auto elem = ops.out_elem_bytes;
  nvtx::mark_initialized_rows(ops.out, static_cast<std::size_t>(key.m), static_cast<std::size_t>(key.n) * elem,
                              static_cast<std::size_t>(key.ldd) * elem, stream);
  nvtx::mark_initialized(ops.amax, ops.amax ? sizeof(float) : 0, stream);
}

Key base_key(const detail::GemmDims& d, const Operands& ops, DType a, DType b, DType out, const GemmOptions& opt) {
  Key k{};
  TG_CHECK_CUDA(cudaGetDevice(&k.device));
  k.m = d.m;
  k.n = d.n;
  k.k = d.k;
  k.lda = d.lda;
  k.ldb = d.ldb;
  k.ldd = d.ldd;
  k.a_type = cuda_type(a);
  k.b_type = cuda_type(b);
  k.d_type = cuda_type(out);
  k.c_type = k.d_type;
  k.a_mode = k.b_mode = -1;
  k.beta_nonzero = opt.beta != 0.0f;
  k.deterministic = opt.deterministic || gemm_deterministic();
  k.candidate = tuning::gemm_candidate();
  k.autotune = tuning::gemm_autotune() && k.candidate == 0 && !k.deterministic && k.m <= tuning::kGemmTuneMaxRows;
  k.align_a = alignment(ops.a);
  k.align_b = alignment(ops.b);
  k.align_c = ops.c ? alignment(ops.c) : 256;
  k.align_d = alignment(ops.out);
  k.trans_a = opt.transpose_a;
  k.trans_b = opt.transpose_b;
  return k;
}

// TN by default; a transposed-stored operand flips its op (cuBLASLt's A is our B, its B our A).
void set_transposes(MatmulDesc& desc, const Key& key) {
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, key.trans_b ? CUBLAS_OP_N : CUBLAS_OP_T);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, key.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N);
}

}  // namespace

void gemm_warmup(Stream stream) {
  int device = 0;
  TG_CHECK_CUDA(cudaGetDevice(&device));
  (void)context(device, cuda_stream(stream));
}

void release_gemm_state() {
  std::lock_guard<std::mutex> lock(g_mutex);
  Contexts& c = contexts();
  std::set<int> devices;
  for (const auto& [device, handle] : c.handles) devices.insert(device);
  for (const auto& [key, workspace] : c.workspaces) devices.insert(key.first);
  if (devices.empty()) return;  // nothing was created (the heuristic cache fills only once a handle exists)
  state_release::synchronize_devices(devices);  // throws before anything is freed
  cache().clear();
  c.workspaces.clear();  // cudaFree (Buffer)
  cublasStatus_t first_error = CUBLAS_STATUS_SUCCESS;
  for (const auto& [device, handle] : c.handles) {
    const state_release::CurrentDevice current(device);
    const cublasStatus_t st = cublasLtDestroy(handle);
    if (st != CUBLAS_STATUS_SUCCESS && first_error == CUBLAS_STATUS_SUCCESS) first_error = st;
  }
  c.handles.clear();
  TG_CHECK_CUBLAS(first_error);  // (the maps are empty either way)
}

GemmCacheStats gemm_cache_stats() {
  std::lock_guard<std::mutex> lock(g_mutex);
  return g_stats;
}

GemmAlgoInfo gemm_last_algo() { return t_last; }

namespace tuning {
namespace {
std::atomic<int>& candidate_setting() {  // TEGEMMA_GEMM_CANDIDATE, read once
  static std::atomic<int> v{static_cast<int>(env_int("TEGEMMA_GEMM_CANDIDATE", 0, 0, 7))};
  return v;
}
std::atomic<bool>& autotune_setting() {  // TEGEMMA_GEMM_AUTOTUNE, read once
  static std::atomic<bool> v{env_int("TEGEMMA_GEMM_AUTOTUNE", 1, 0, 1) != 0};
  return v;
}
}  // namespace
void set_gemm_autotune(bool on) { autotune_setting().store(on); }
bool gemm_autotune() { return autotune_setting().load(); }
void set_gemm_candidate(int index) {
  TG_CHECK(index >= 0 && index <= 7, "set_gemm_candidate: 0 .. 7, got ", index);
  candidate_setting().store(index);
}
int gemm_candidate() { return candidate_setting().load(); }
}  // namespace tuning

void gemm(const TensorView& a, const TensorView& b, const TensorView& out, const GemmOptions& opt, Stream stream) {
  TG_NVTX_RANGE("gemm_bf16");
  const detail::GemmDims d = detail::check_gemm(a, b, out, opt);
  check_device(out, Device::CUDA, "cuda::gemm(out)");
  const Operands ops{a.data, b.data, out.data, out.data, dtype_size(out.dtype)};
  const Key key = base_key(d, ops, a.dtype, b.dtype, out.dtype, opt);
  MatmulDesc desc;
  set_transposes(desc, key);
  run(key, desc, ops, opt, stream);
}

void gemm_fp8(const Fp8View& a, const Fp8View& b, const TensorView& out, const GemmOptions& opt, Stream stream,
              const TensorView& out_amax, const TensorView& out_scale) {
  TG_NVTX_RANGE("gemm_fp8");
  const detail::GemmDims d = detail::check_gemm_fp8(a, b, out, opt, out_amax, out_scale);
  check_device(out, Device::CUDA, "cuda::gemm_fp8(out)");
  const bool fp8_out = is_fp8(out.dtype);
  // An FP8 out is never accumulated into (beta = 0, checked); cuBLASLt then wants C typed BF16 and unread.
  const Operands ops{a.data.data, b.data.data, out.data, fp8_out ? nullptr : out.data, dtype_size(out.dtype),
                     out_amax.empty() ? nullptr : out_amax.data};
  Key key = base_key(d, ops, a.data.dtype, b.data.dtype, out.dtype, opt);
  if (fp8_out) key.c_type = CUDA_R_16BF;
  key.a_mode = scale_mode(b.mode);  // cuBLASLt's A is our B
  key.b_mode = scale_mode(a.mode);
  key.fast_accum = !opt.split_accumulate;
  key.d_scale = fp8_out;
  key.d_amax = !out_amax.empty();

  MatmulDesc desc;
  set_transposes(desc, key);
  desc.set(CUBLASLT_MATMUL_DESC_FAST_ACCUM, static_cast<int8_t>(key.fast_accum ? 1 : 0));
  desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, key.a_mode);
  desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, key.b_mode);
  desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, static_cast<const void*>(b.scale_inv.data));
  desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, static_cast<const void*>(a.scale_inv.data));
  if (fp8_out) desc.set(CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, static_cast<const void*>(out_scale.data));
  if (key.d_amax) desc.set(CUBLASLT_MATMUL_DESC_AMAX_D_POINTER, static_cast<void*>(out_amax.data));
  run(key, desc, ops, opt, stream);
}

}  // namespace tg::kernels::cuda
