// cuDNN fused flash attention (forward and backward) through the cuDNN 9 graph API, backend descriptors only
// (cudnn-frontend is not available). The operation graphs are the ones cudnn-frontend's CompositeSDPANode /
// CompositeSDPABackwardNode emit for cuDNN < 9.21, which cuDNN's fused SDPA engines recognise:
//
// forward  : S = matmul(Q, K^T) [M/N overrides = seq lengths] -> *scale -> (packed) padding mask
//            [GEN_INDEX rows/cols, CMP_LT seq_len, LOGICAL_AND, BINARY_SELECT(lowest)] -> (causal) mask
//            [GEN_INDEX, CMP_GE(row, col), BINARY_SELECT] -> softmax [REDUCTION MAX, SUB, EXP, REDUCTION ADD,
//            LOG, ADD -> Stats (= lse), DIV -> P (BF16)] -> O = matmul(P, V)
// backward : softmax_sum = REDUCTION ADD(dO * O) * 1 (workspace); S recomputed as above but P = EXP(S*scale -
//            Stats - masks); dV = matmul(RESHAPE(P)^T, dO) (GQA: [B, H, S, Dh] then REDUCTION ADD over the group);
//            dP = matmul(dO, V^T); dS = (dP - softmax_sum) * P * scale; dK = matmul(RESHAPE(dS)^T, Q) (GQA as
//            dV); dQ = matmul(dS, K) into an FP32 accumulator (workspace) + IDENTITY -> dQ, or, deterministic,
//            straight into dQ (the "dP workspace" engine path; engines with the NONDETERMINISTIC note skipped).
//
// Layouts: dense [B, S, H, Dh] tensors map to cuDNN's [b, h, s, d] dims with their strides; packed THD tensors
// use ragged offsets (element offsets cu_seqlens[b] * token_stride, INT64) plus per-sequence lengths (padding
// mask), batch padded to a power of two with empty sequences and max_seqlen bucketed, so the number of plans
// stays small. lse: dense [B, H, S] (packed BHS1 Stats), packed [T, H] (ragged Stats, strides {., 1, H, 1}).
//
// Plans are built once per shape class and cached; the per-call work is a small kernel for lengths and
// offsets, a variant pack and cudnnBackendExecute. Failures throw tg::Error with the step, the cuDNN status
// and cuDNN's own last error message.
#include <cudnn.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/cuda_check.h"
#include "common/nvtx.h"
#include "kernels/attention/attention_cuda.h"
#include "kernels/cuda/device_sync.h"

namespace tg::kernels::cuda::attn_detail {

namespace {

// ---- errors ----------------------------------------------------------------------------------------------------
std::string last_cudnn_message() {
  char buf[2048] = {0};
  cudnnGetLastErrorString(buf, sizeof(buf));
  return buf;
}

void check(cudnnStatus_t st, const std::string& step) {
  if (st == CUDNN_STATUS_SUCCESS) return;
  const std::string msg = last_cudnn_message();
  TG_FAIL("cuDNN SDPA: ", step, " failed: ", cudnnGetErrorString(st), " (", static_cast<int>(st), ")",
          msg.empty() ? "" : ": ", msg);
}

// ---- RAII backend descriptor -----------------------------------------------------------------------------------
class Desc {
 public:
  Desc(cudnnBackendDescriptorType_t type, std::string name) : name_(std::move(name)) {
    check(cudnnBackendCreateDescriptor(type, &d_), "create " + name_);
  }
  ~Desc() {
    if (d_ != nullptr) cudnnBackendDestroyDescriptor(d_);
  }
  Desc(const Desc&) = delete;
  Desc& operator=(const Desc&) = delete;

  cudnnBackendDescriptor_t get() const { return d_; }
  const std::string& name() const { return name_; }
  void set(cudnnBackendAttributeName_t attr, cudnnBackendAttributeType_t type, int64_t count, const void* value,
           const char* attr_name) {
    check(cudnnBackendSetAttribute(d_, attr, type, count, value), name_ + ": set " + attr_name);
  }
  void set_desc(cudnnBackendAttributeName_t attr, cudnnBackendDescriptor_t value, const char* attr_name) {
    set(attr, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value, attr_name);
  }
  void finalize() { check(cudnnBackendFinalize(d_), name_ + ": finalize"); }
  cudnnStatus_t try_finalize() { return cudnnBackendFinalize(d_); }

 private:
  cudnnBackendDescriptor_t d_ = nullptr;
  std::string name_;
};

using Dims4 = std::array<int64_t, 4>;

// Fixed tensor UIDs of the graphs (virtual tensors get UIDs from kFirstVirtual up).
// clang-format off
enum Uid : int64_t {
  kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV, kScale, kOne, kSeqQ, kSeqKV, kSoftmaxSum, kDQAccum,
  kLowest0, kLowest1,   // by-value masking constants (padding, causal)
  kOffset0 = 40,        // kOffset0 + i: ragged offset array i
  kFirstVirtual = 100,
};
// clang-format on

// ---- graph construction ----------------------------------------------------------------------------------------
class GraphBuilder {
 public:
  cudnnBackendDescriptor_t tensor(int64_t uid, cudnnDataType_t dtype, const Dims4& dims, const Dims4& strides,
                                  bool is_virtual, bool by_value = false, cudnnBackendDescriptor_t ragged = nullptr) {
    auto& t = keep(CUDNN_BACKEND_TENSOR_DESCRIPTOR, "tensor " + std::to_string(uid));
    const int64_t alignment = 16;
    t.set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &dtype, "DATA_TYPE");
    t.set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data(), "DIMENSIONS");
    t.set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data(), "STRIDES");
    t.set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "UNIQUE_ID");
    t.set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "BYTE_ALIGNMENT");
    if (is_virtual) {
      const bool v = true;
      t.set(CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &v, "IS_VIRTUAL");
    }
    if (by_value) {
      const bool v = true;
      t.set(CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &v, "IS_BY_VALUE");
    }
    if (ragged != nullptr) t.set_desc(CUDNN_ATTR_TENSOR_RAGGED_OFFSET_DESC, ragged, "RAGGED_OFFSET_DESC");
    t.finalize();
    return t.get();
  }
  cudnnBackendDescriptor_t virt(cudnnDataType_t dtype, const Dims4& dims, const Dims4& strides,
                                cudnnBackendDescriptor_t ragged = nullptr) {
    return tensor(next_uid_++, dtype, dims, strides, true, false, ragged);
  }
  cudnnBackendDescriptor_t scalar(int64_t uid, cudnnDataType_t dtype) {
    return tensor(uid, dtype, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true);
  }

  void matmul(cudnnBackendDescriptor_t a, cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t c,
              cudnnBackendDescriptor_t m_override = nullptr, cudnnBackendDescriptor_t n_override = nullptr,
              cudnnBackendDescriptor_t k_override = nullptr) {
    auto& desc = keep(CUDNN_BACKEND_MATMUL_DESCRIPTOR, "matmul descriptor");
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    const double padding = 0.0;
    desc.set(CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "MATMUL_COMP_TYPE");
    desc.set(CUDNN_ATTR_MATMUL_PADDING_VALUE, CUDNN_TYPE_DOUBLE, 1, &padding, "MATMUL_PADDING_VALUE");
    desc.finalize();
    auto& op = keep(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR, "matmul operation " + std::to_string(ops_.size()));
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_ADESC, a, "MATMUL_ADESC");
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_BDESC, b, "MATMUL_BDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_CDESC, c, "MATMUL_CDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_DESC, desc.get(), "MATMUL_DESC");
    if (m_override) op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_GEMM_M_OVERRIDE_DESC, m_override, "GEMM_M_OVERRIDE_DESC");
    if (n_override) op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_GEMM_N_OVERRIDE_DESC, n_override, "GEMM_N_OVERRIDE_DESC");
    if (k_override) op.set_desc(CUDNN_ATTR_OPERATION_MATMUL_GEMM_K_OVERRIDE_DESC, k_override, "GEMM_K_OVERRIDE_DESC");
    op.finalize();
    ops_.push_back(op.get());
  }

  // y = mode(x[, b[, t]]). GEN_INDEX takes `axis`.
  void pointwise(cudnnPointwiseMode_t mode, cudnnDataType_t compute, cudnnBackendDescriptor_t x,
                 cudnnBackendDescriptor_t b, cudnnBackendDescriptor_t t, cudnnBackendDescriptor_t y,
                 int64_t axis = -1) {
    auto& pw = keep(CUDNN_BACKEND_POINTWISE_DESCRIPTOR, "pointwise descriptor mode " + std::to_string(mode));
    pw.set(CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "POINTWISE_MODE");
    pw.set(CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &compute, "POINTWISE_MATH_PREC");
    if (mode == CUDNN_POINTWISE_GEN_INDEX)
      pw.set(CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "POINTWISE_AXIS");
    pw.finalize();
    auto& op = keep(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR,
                    "pointwise operation " + std::to_string(ops_.size()) + " mode " + std::to_string(mode));
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw.get(), "POINTWISE_PW_DESCRIPTOR");
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x, "POINTWISE_XDESC");
    if (b) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b, "POINTWISE_BDESC");
    if (t) op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t, "POINTWISE_TDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y, "POINTWISE_YDESC");
    op.finalize();
    ops_.push_back(op.get());
  }

  void reduction(cudnnReduceTensorOp_t red_op, cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    auto& desc = keep(CUDNN_BACKEND_REDUCTION_DESCRIPTOR, "reduction descriptor");
    const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
    desc.set(CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &red_op, "REDUCTION_OPERATOR");
    desc.set(CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "REDUCTION_COMP_TYPE");
    desc.finalize();
    auto& op = keep(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR, "reduction operation " + std::to_string(ops_.size()));
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x, "REDUCTION_XDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y, "REDUCTION_YDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_REDUCTION_DESC, desc.get(), "REDUCTION_DESC");
    op.finalize();
    ops_.push_back(op.get());
  }

  void reshape(cudnnBackendDescriptor_t x, cudnnBackendDescriptor_t y) {
    auto& op = keep(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR, "reshape operation " + std::to_string(ops_.size()));
    op.set_desc(CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x, "RESHAPE_XDESC");
    op.set_desc(CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y, "RESHAPE_YDESC");
    op.finalize();
    ops_.push_back(op.get());
  }

  cudnnBackendDescriptor_t graph(cudnnHandle_t handle) {
    auto& g = keep(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR, "operation graph");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    g.set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "OPERATIONGRAPH_HANDLE");
#pragma GCC diagnostic pop
    g.set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops_.size()), ops_.data(),
          "OPERATIONGRAPH_OPS");
    g.finalize();
    return g.get();
  }

  Desc& keep(cudnnBackendDescriptorType_t type, std::string name) {
    descs_.push_back(std::make_unique<Desc>(type, std::move(name)));
    return *descs_.back();
  }
  std::vector<std::unique_ptr<Desc>> release() { return std::move(descs_); }

 private:
  std::vector<std::unique_ptr<Desc>> descs_;
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_uid_ = kFirstVirtual;
};

// ---- shape classes and plans -----------------------------------------------------------------------------------
struct Key {
  int device = 0;
  bool backward = false;
  bool causal = false;
  bool packed = false;
  bool deterministic = false;
  int64_t B = 0, S = 0, H = 0, Hkv = 0, Dh = 0;
  // element strides (token; batch for dense) of q, k, v, o, dout, dq, dk, dv
  std::array<int64_t, 8> token{}, batch{};
  auto operator<=>(const Key&) const = default;
};

struct Plan {
  std::vector<std::unique_ptr<Desc>> descs;  // everything the plan references, kept alive
  cudnnBackendDescriptor_t plan = nullptr;
  int64_t plan_workspace = 0;
  int64_t engine_index = -1;
  // Extra workspace (after the plan's): sequence lengths, ragged offsets, softmax_sum, dQ accumulator.
  std::size_t off_seqlens = 0, off_offsets = 0, off_softmax_sum = 0, off_dq_accum = 0, off_stats = 0;
  std::size_t total_workspace = 0;
  std::vector<int64_t> offset_strides;  // distinct token strides that got an offset array (index = array)
  std::array<int, 8> offset_of{};       // operand slot -> offset array index
};

int64_t bucket_len(int64_t s) {
  if (s <= 64) return 64;
  if (s <= 1024) {
    int64_t p = 64;
    while (p < s) p *= 2;
    return p;
  }
  return (s + 1023) / 1024 * 1024;
}
int64_t bucket_batch(int64_t b) {
  int64_t p = 1;
  while (p < b) p *= 2;
  return p;
}

// Operand slots of Key::token / batch.
enum Slot { kSlotQ, kSlotK, kSlotV, kSlotO, kSlotDO, kSlotDQ, kSlotDK, kSlotDV };

Key make_key(const FlashArgs& a, bool backward, bool deterministic) {
  Key k;
  TG_CHECK_CUDA(cudaGetDevice(&k.device));
  k.backward = backward;
  k.causal = a.causal;
  k.packed = a.d.packed;
  k.deterministic = backward && deterministic;
  k.B = a.d.packed ? bucket_batch(a.d.B) : a.d.B;
  k.S = a.d.packed ? bucket_len(a.d.S) : a.d.S;
  k.H = a.d.H;
  k.Hkv = a.d.Hkv;
  k.Dh = a.d.Dh;
  const attn::Strides* st[8] = {&a.sq, &a.sk, &a.sv, &a.so, &a.sdo, &a.sdq, &a.sdk, &a.sdv};
  const int n = backward ? 8 : 4;
  for (int i = 0; i < n; ++i) {
    k.token[i] = st[i]->token;
    k.batch[i] = a.d.packed ? 0 : st[i]->batch;
  }
  return k;
}

// cuDNN [b, h, s, d] strides of an operand (batch stride of packed operands: S * token, ignored with ragged).
Dims4 bhsd_strides(const Key& k, int slot) {
  const int64_t tok = k.token[slot];
  return {k.packed ? k.S * tok : k.batch[slot], k.Dh, tok, 1};
}
Dims4 transposed(const Dims4& s) { return {s[0], s[1], s[3], s[2]}; }

struct Tensors {
  cudnnBackendDescriptor_t seq_q = nullptr, seq_kv = nullptr;
  std::vector<cudnnBackendDescriptor_t> offsets;  // per offset array
};

// Masks shared by the forward and backward graphs: padding (packed) then causal. Returns the masked scores.
cudnnBackendDescriptor_t apply_masks(GraphBuilder& gb, const Key& k, const Tensors& t, cudnnBackendDescriptor_t s,
                                     const Dims4& sdims, const Dims4& sstr) {
  if (k.packed) {
    auto row = gb.virt(CUDNN_DATA_INT32, sdims, sstr);
    auto col = gb.virt(CUDNN_DATA_INT32, sdims, sstr);
    gb.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s, nullptr, nullptr, row, 2);
    gb.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_INT32, s, nullptr, nullptr, col, 3);
    auto row_ok = gb.virt(CUDNN_DATA_BOOLEAN, sdims, sstr);
    auto col_ok = gb.virt(CUDNN_DATA_BOOLEAN, sdims, sstr);
    gb.pointwise(CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, row, t.seq_q, nullptr, row_ok);
    gb.pointwise(CUDNN_POINTWISE_CMP_LT, CUDNN_DATA_BOOLEAN, col, t.seq_kv, nullptr, col_ok);
    auto ok = gb.virt(CUDNN_DATA_BOOLEAN, sdims, sstr);
    gb.pointwise(CUDNN_POINTWISE_LOGICAL_AND, CUDNN_DATA_BOOLEAN, row_ok, col_ok, nullptr, ok);
    auto masked = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
    gb.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s, gb.scalar(kLowest0, CUDNN_DATA_FLOAT), ok, masked);
    s = masked;
  }
  if (k.causal) {
    auto row = gb.virt(CUDNN_DATA_INT32, sdims, sstr);
    auto col = gb.virt(CUDNN_DATA_INT32, sdims, sstr);
    gb.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, s, nullptr, nullptr, row, 2);
    gb.pointwise(CUDNN_POINTWISE_GEN_INDEX, CUDNN_DATA_FLOAT, s, nullptr, nullptr, col, 3);
    auto keep = gb.virt(CUDNN_DATA_BOOLEAN, sdims, sstr);
    gb.pointwise(CUDNN_POINTWISE_CMP_GE, CUDNN_DATA_BOOLEAN, row, col, nullptr, keep);
    auto masked = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
    gb.pointwise(CUDNN_POINTWISE_BINARY_SELECT, CUDNN_DATA_FLOAT, s, gb.scalar(kLowest1, CUDNN_DATA_FLOAT), keep,
                 masked);
    s = masked;
  }
  return s;
}

// Input / output tensors of the graphs; the ragged offset of an operand is its slot's offset array.
cudnnBackendDescriptor_t io_tensor(GraphBuilder& gb, const Key& k, const Plan& p, const Tensors& t, int64_t uid,
                                   int slot, int64_t heads, bool transpose_last) {
  const Dims4 dims = transpose_last ? Dims4{k.B, heads, k.Dh, k.S} : Dims4{k.B, heads, k.S, k.Dh};
  const Dims4 str = transpose_last ? transposed(bhsd_strides(k, slot)) : bhsd_strides(k, slot);
  return gb.tensor(uid, CUDNN_DATA_BFLOAT16, dims, str, false, false,
                   k.packed ? t.offsets[p.offset_of[slot]] : nullptr);
}

void assign_offsets(const Key& k, Plan& p) {
  const int n = k.backward ? 8 : 4;
  for (int i = 0; i < n; ++i) {
    auto it = std::find(p.offset_strides.begin(), p.offset_strides.end(), k.token[i]);
    if (it == p.offset_strides.end()) {
      p.offset_strides.push_back(k.token[i]);
      it = p.offset_strides.end() - 1;
    }
    p.offset_of[i] = static_cast<int>(it - p.offset_strides.begin());
  }
  p.offset_strides.push_back(k.H);  // the last array: Stats (lse [T, H]: token stride H)
}

Tensors make_aux_tensors(GraphBuilder& gb, const Key& k, const Plan& p) {
  Tensors t;
  if (!k.packed) return t;
  t.seq_q = gb.tensor(kSeqQ, CUDNN_DATA_INT32, {k.B, 1, 1, 1}, {1, 1, 1, 1}, false);
  t.seq_kv = gb.tensor(kSeqKV, CUDNN_DATA_INT32, {k.B, 1, 1, 1}, {1, 1, 1, 1}, false);
  for (std::size_t i = 0; i < p.offset_strides.size(); ++i) {
    t.offsets.push_back(
        gb.tensor(kOffset0 + static_cast<int64_t>(i), CUDNN_DATA_INT64, {k.B + 1, 1, 1, 1}, {1, 1, 1, 1}, false));
  }
  return t;
}

cudnnBackendDescriptor_t stats_tensor(GraphBuilder& gb, const Key& k, const Tensors& t) {
  if (k.packed) {
    return gb.tensor(kStats, CUDNN_DATA_FLOAT, {k.B, k.H, k.S, 1}, {k.H * k.S, 1, k.H, 1}, false, false,
                     t.offsets.back());
  }
  return gb.tensor(kStats, CUDNN_DATA_FLOAT, {k.B, k.H, k.S, 1}, {k.H * k.S, k.S, 1, 1}, false);
}

void build_forward(GraphBuilder& gb, const Key& k, const Plan& p) {
  const Tensors t = make_aux_tensors(gb, k, p);
  auto q = io_tensor(gb, k, p, t, kQ, kSlotQ, k.H, false);
  auto kt = io_tensor(gb, k, p, t, kK, kSlotK, k.Hkv, true);
  auto v = io_tensor(gb, k, p, t, kV, kSlotV, k.Hkv, false);
  auto o = io_tensor(gb, k, p, t, kO, kSlotO, k.H, false);
  auto stats = stats_tensor(gb, k, t);
  auto scale = gb.scalar(kScale, CUDNN_DATA_FLOAT);

  const Dims4 sdims{k.B, k.H, k.S, k.S}, sstr{k.H * k.S * k.S, k.S * k.S, k.S, 1};
  const Dims4 rdims{k.B, k.H, k.S, 1}, rstr{k.H * k.S, k.S, 1, 1};
  auto s = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.matmul(q, kt, s, t.seq_q, t.seq_kv, nullptr);
  auto s_scaled = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, s, scale, nullptr, s_scaled);
  auto masked = apply_masks(gb, k, t, s_scaled, sdims, sstr);
  // softmax with stats
  auto mx = gb.virt(CUDNN_DATA_FLOAT, rdims, rstr);
  gb.reduction(CUDNN_REDUCE_TENSOR_MAX, masked, mx);
  auto sub = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, masked, mx, nullptr, sub);
  auto ex = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, sub, nullptr, nullptr, ex);
  auto sum = gb.virt(CUDNN_DATA_FLOAT, rdims, rstr);
  gb.reduction(CUDNN_REDUCE_TENSOR_ADD, ex, sum);
  auto lg = gb.virt(CUDNN_DATA_FLOAT, rdims, rstr);
  gb.pointwise(CUDNN_POINTWISE_LOG, CUDNN_DATA_FLOAT, sum, nullptr, nullptr, lg);
  gb.pointwise(CUDNN_POINTWISE_ADD, CUDNN_DATA_FLOAT, mx, lg, nullptr, stats);
  auto prob = gb.virt(CUDNN_DATA_BFLOAT16, sdims, sstr);  // the second matmul's A operand is in the I/O type
  gb.pointwise(CUDNN_POINTWISE_DIV, CUDNN_DATA_FLOAT, ex, sum, nullptr, prob);
  gb.matmul(prob, v, o, t.seq_q, nullptr, t.seq_kv);
}

void build_backward(GraphBuilder& gb, const Key& k, const Plan& p) {
  const Tensors t = make_aux_tensors(gb, k, p);
  auto q = io_tensor(gb, k, p, t, kQ, kSlotQ, k.H, false);
  auto kt = io_tensor(gb, k, p, t, kK, kSlotK, k.Hkv, true);
  auto vt = io_tensor(gb, k, p, t, kV, kSlotV, k.Hkv, true);
  auto o = io_tensor(gb, k, p, t, kO, kSlotO, k.H, false);
  auto dout = io_tensor(gb, k, p, t, kDO, kSlotDO, k.H, false);
  auto dq = io_tensor(gb, k, p, t, kDQ, kSlotDQ, k.H, false);
  auto dk = io_tensor(gb, k, p, t, kDK, kSlotDK, k.Hkv, false);
  auto dv = io_tensor(gb, k, p, t, kDV, kSlotDV, k.Hkv, false);
  auto stats = stats_tensor(gb, k, t);
  auto scale = gb.scalar(kScale, CUDNN_DATA_FLOAT);
  auto one = gb.scalar(kOne, CUDNN_DATA_FLOAT);

  const int64_t B = k.B, H = k.H, S = k.S, D = k.Dh;
  const Dims4 sdims{B, H, S, S}, sstr{H * S * S, S * S, S, 1};
  const Dims4 tdims{B, H, S, S}, tstr{H * S * S, S * S, 1, S};  // transposed view for P^T, dS^T
  const Dims4 rdims{B, H, S, 1}, rstr{H * S, S, 1, 1};
  const bool gqa = k.Hkv != k.H;

  // softmax_sum = sum_d dO * O (kept in the workspace)
  auto dot = gb.virt(CUDNN_DATA_FLOAT, {B, H, S, D}, {H * S * D, S * D, H * D, 1});
  gb.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dout, o, nullptr, dot);
  auto red = gb.virt(CUDNN_DATA_FLOAT, rdims, rstr);
  gb.reduction(CUDNN_REDUCE_TENSOR_ADD, dot, red);
  auto softmax_sum = gb.tensor(kSoftmaxSum, CUDNN_DATA_FLOAT, rdims, rstr, false);
  gb.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, red, one, nullptr, softmax_sum);

  // P = exp(S * scale - stats) with the masks
  auto s = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.matmul(q, kt, s, t.seq_q, t.seq_kv, nullptr);
  auto s_scaled = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, s, scale, nullptr, s_scaled);
  auto s_sub = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, s_scaled, stats, nullptr, s_sub);
  auto masked = apply_masks(gb, k, t, s_sub, sdims, sstr);
  auto prob = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_EXP, CUDNN_DATA_FLOAT, masked, nullptr, nullptr, prob);

  // out = m^T rhs for dV and dK: m [B, H, S, S] through its transposed BF16 view, the product over the query
  // tokens; with GQA computed per query head and summed over each KV head's group.
  auto matmul_t_into_kv = [&](cudnnBackendDescriptor_t m, cudnnBackendDescriptor_t rhs, cudnnBackendDescriptor_t out) {
    auto m_t = gb.virt(CUDNN_DATA_BFLOAT16, tdims, tstr);
    gb.reshape(m, m_t);
    if (!gqa) {
      gb.matmul(m_t, rhs, out, t.seq_kv, nullptr, t.seq_q);
    } else {
      auto full = gb.virt(CUDNN_DATA_BFLOAT16, {B, H, S, D}, {H * S * D, S * D, D, 1});
      gb.matmul(m_t, rhs, full, t.seq_kv, nullptr, t.seq_q);
      gb.reduction(CUDNN_REDUCE_TENSOR_ADD, full, out);
    }
  };

  // dV = P^T dO (summed over the group for GQA)
  matmul_t_into_kv(prob, dout, dv);

  // dS = (dO V^T - softmax_sum) * P * scale
  auto dp = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.matmul(dout, vt, dp, t.seq_q, t.seq_kv, nullptr);
  auto dp_sub = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_SUB, CUDNN_DATA_FLOAT, dp, softmax_sum, nullptr, dp_sub);
  auto ds_raw = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, dp_sub, prob, nullptr, ds_raw);
  auto ds = gb.virt(CUDNN_DATA_FLOAT, sdims, sstr);
  gb.pointwise(CUDNN_POINTWISE_MUL, CUDNN_DATA_FLOAT, ds_raw, scale, nullptr, ds);

  // dK = dS^T Q (summed over the group for GQA)
  matmul_t_into_kv(ds, q, dk);

  // dQ = dS K
  auto k_plain = gb.virt(CUDNN_DATA_FLOAT, {B, k.Hkv, S, D}, bhsd_strides(k, kSlotK),
                         k.packed ? t.offsets[p.offset_of[kSlotK]] : nullptr);
  gb.reshape(kt, k_plain);
  if (k.deterministic) {
    gb.matmul(ds, k_plain, dq, t.seq_q, nullptr, t.seq_kv);
  } else {
    auto acc = gb.tensor(kDQAccum, CUDNN_DATA_FLOAT, {B, H, S, D}, {H * S * D, S * D, D, 1}, false);
    gb.matmul(ds, k_plain, acc, t.seq_q, nullptr, t.seq_kv);
    gb.pointwise(CUDNN_POINTWISE_IDENTITY, CUDNN_DATA_FLOAT, acc, nullptr, nullptr, dq);
  }
}

// Heuristics -> the first engine config that finalizes into an execution plan.
void make_plan(GraphBuilder& gb, cudnnBackendDescriptor_t graph, cudnnHandle_t handle, bool deterministic, Plan& p,
               const std::string& what) {
  std::string tried;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    auto& heur = gb.keep(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR, "engine heuristics");
    heur.set_desc(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "ENGINEHEUR_OPERATION_GRAPH");
    heur.set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "ENGINEHEUR_MODE");
    if (heur.try_finalize() != CUDNN_STATUS_SUCCESS) {
      tried += " [heuristics mode " + std::to_string(mode) + ": " + last_cudnn_message() + "]";
      continue;
    }
    int64_t count = 0;
    check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                   nullptr),
          what + ": count heuristics results");
    std::vector<Desc*> cfgs;
    std::vector<cudnnBackendDescriptor_t> raw;
    for (int64_t i = 0; i < count; ++i) {
      cfgs.push_back(&gb.keep(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR, "engine config " + std::to_string(i)));
      raw.push_back(cfgs.back()->get());
    }
    int64_t got = 0;
    if (count > 0) {
      check(cudnnBackendGetAttribute(heur.get(), CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                     &got, raw.data()),
            what + ": get heuristics results");
    }
    if (got == 0) tried += " [heuristics mode " + std::to_string(mode) + ": no engine configs]";
    for (int64_t i = 0; i < got; ++i) {
      auto& engine = gb.keep(CUDNN_BACKEND_ENGINE_DESCRIPTOR, "engine");
      cudnnBackendDescriptor_t eng = engine.get();
      int64_t n = 0;
      check(cudnnBackendGetAttribute(raw[i], CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &eng),
            what + ": get the engine of a config");
      int64_t index = -1;
      cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &index);
      if (deterministic) {
        std::array<cudnnBackendNumericalNote_t, CUDNN_NUMERICAL_NOTE_TYPE_COUNT> notes{};
        int64_t n_notes = 0;
        cudnnBackendGetAttribute(eng, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                                 static_cast<int64_t>(notes.size()), &n_notes, notes.data());
        if (std::find(notes.begin(), notes.begin() + n_notes, CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC) !=
            notes.begin() + n_notes) {
          tried += " [engine " + std::to_string(index) + ": non-deterministic, skipped]";
          continue;
        }
      }
      auto& plan = gb.keep(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR, "execution plan");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
      plan.set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &handle, "EXECUTION_PLAN_HANDLE");
#pragma GCC diagnostic pop
      plan.set_desc(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, raw[i], "EXECUTION_PLAN_ENGINE_CONFIG");
      const cudnnStatus_t st = plan.try_finalize();
      if (st != CUDNN_STATUS_SUCCESS) {
        tried +=
            " [engine " + std::to_string(index) + ": " + cudnnGetErrorString(st) + " " + last_cudnn_message() + "]";
        continue;
      }
      check(cudnnBackendGetAttribute(plan.get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                     &p.plan_workspace),
            what + ": get the plan's workspace size");
      p.plan = plan.get();
      p.engine_index = index;
      return;
    }
  }
  TG_FAIL("cuDNN SDPA: ", what, ": no engine supports this graph (cuDNN ", cudnnGetVersion(), "):", tried);
}

std::string describe(const Key& k) {
  return std::string(k.backward ? "backward" : "forward") + (k.packed ? " packed" : " dense") +
         (k.causal ? " causal" : " non-causal") + (k.deterministic ? " deterministic" : "") +
         " B=" + std::to_string(k.B) + " S=" + std::to_string(k.S) + " H=" + std::to_string(k.H) +
         " Hkv=" + std::to_string(k.Hkv) + " Dh=" + std::to_string(k.Dh);
}

// ---- per-device state ------------------------------------------------------------------------------------------
struct State {
  std::mutex mu;
  std::unordered_map<int, cudnnHandle_t> handles;
  std::map<Key, std::unique_ptr<Plan>> plans;
};
// Never destroyed: a cudnnDestroy / descriptor destruction from a static destructor would run after the CUDA
// runtime (or LibTorch) has begun tearing down. release_cudnn_state() empties it while CUDA is alive.
State& state() {
  static State* s = new State();
  return *s;
}

cudnnHandle_t handle_for(State& s, int device) {
  auto it = s.handles.find(device);
  if (it != s.handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  check(cudnnCreate(&h), "cudnnCreate");
  s.handles.emplace(device, h);
  return h;
}

// Returns the cached plan of the shape class (building it on first use). Call with s.mu held.
Plan& plan_for(State& s, const Key& key) {
  auto it = s.plans.find(key);
  if (it != s.plans.end()) return *it->second;
  TG_NVTX_RANGE("cudnn_sdpa build plan");
  const std::string what = describe(key);
  auto p = std::make_unique<Plan>();
  if (key.packed) assign_offsets(key, *p);
  GraphBuilder gb;
  if (key.backward) {
    build_backward(gb, key, *p);
  } else {
    build_forward(gb, key, *p);
  }
  cudnnHandle_t handle = handle_for(s, key.device);
  cudnnBackendDescriptor_t graph = gb.graph(handle);
  make_plan(gb, graph, handle, key.deterministic, *p, what);
  // workspace layout
  std::size_t off = align_up(static_cast<std::size_t>(p->plan_workspace));
  if (key.packed) {
    p->off_seqlens = off;
    off += align_up(static_cast<std::size_t>(key.B) * sizeof(int32_t));
    p->off_offsets = off;
    off += p->offset_strides.size() * align_up(static_cast<std::size_t>(key.B + 1) * sizeof(int64_t));
  }
  if (!key.backward) {  // Stats land here when the caller does not keep the lse (inference)
    p->off_stats = off;
    off += align_up(static_cast<std::size_t>(key.B * key.H * key.S) * sizeof(float));
  } else {
    p->off_softmax_sum = off;
    off += align_up(static_cast<std::size_t>(key.B * key.H * key.S) * sizeof(float));
    if (!key.deterministic) {
      p->off_dq_accum = off;
      off += align_up(static_cast<std::size_t>(key.B * key.H * key.S * key.Dh) * sizeof(float));
    }
  }
  p->total_workspace = off;
  p->descs = gb.release();
  return *s.plans.emplace(key, std::move(p)).first->second;
}

void check_cudnn_args(const FlashArgs& a, bool backward, const char* what) {
  TG_CHECK(a.d.Dh % 8 == 0 && a.d.Dh <= 256, what,
           ": cuDNN SDPA needs a head dim that is a multiple of 8 and <= 256, got ", a.d.Dh);
  check_aligned_operands(a, backward, what);
}

// compute-sanitizer's initcheck does not record cuDNN's Hopper output stores (TMA) as writes, as with cuBLASLt
// (common/nvtx.h): a BF16 [B, S, heads, Dh] / [T, heads, Dh] operand the SDPA wrote is marked row by row (a token's
// heads; not the gaps of a wider token stride, e.g. dk / dv inside a fused dQKV buffer). No-op without the tool.
void mark_written(const void* p, const attn::Strides& s, const attn::Dims& d, int64_t heads, Stream stream) {
  constexpr std::size_t kElem = 2;  // BF16
  const auto row = static_cast<std::size_t>((heads - 1) * s.head + d.Dh) * kElem;
  const auto pitch = static_cast<std::size_t>(s.token) * kElem;
  if (d.packed) {
    nvtx::mark_initialized_rows(p, static_cast<std::size_t>(d.T), row, pitch, stream);
    return;
  }
  for (int64_t b = 0; b < d.B; ++b)
    nvtx::mark_initialized_rows(static_cast<const char*>(p) + static_cast<std::size_t>(b * s.batch) * kElem,
                                static_cast<std::size_t>(d.S), row, pitch, stream);
}

void run(const FlashArgs& a, bool backward, bool deterministic, const Workspace& ws, Stream stream, const char* what) {
  check_cudnn_args(a, backward, what);
  State& s = state();
  const Key key = make_key(a, backward, deterministic);
  std::lock_guard<std::mutex> lock(s.mu);
  Plan& p = plan_for(s, key);
  char* w = static_cast<char*>(scratch(ws, p.total_workspace, what, stream));
  const cudaStream_t cs = cuda_stream(stream);

  std::vector<int64_t> uids;
  std::vector<void*> ptrs;
  auto add = [&](int64_t uid, const void* ptr) {
    uids.push_back(uid);
    ptrs.push_back(const_cast<void*>(ptr));
  };
  float scale = a.scale, one = 1.0f;
  const float lowest = std::numeric_limits<float>::lowest();
  add(kQ, a.q);
  add(kK, a.k);
  add(kV, a.v);
  add(kO, a.o);
  add(kStats, a.lse != nullptr ? static_cast<void*>(a.lse) : w + p.off_stats);
  add(kScale, &scale);
  if (backward) {
    add(kDO, a.dout);
    add(kDQ, a.dq);
    add(kDK, a.dk);
    add(kDV, a.dv);
    add(kOne, &one);
    add(kSoftmaxSum, w + p.off_softmax_sum);
    if (!key.deterministic) {
      // The FP32 dQ accumulator must start at zero on every execution: the fused backward adds into it (cudnn-frontend
      // memsets it before each run, its "workspace modification" 1). Missed here until session 10's initcheck
      // (reads of never-written workspace by fmha_reduce_head_ragged); AttentionGpu.CudnnBackwardPoisonedWorkspace.
      const std::size_t bytes = static_cast<std::size_t>(key.B * key.H * key.S * key.Dh) * sizeof(float);
      TG_CHECK_CUDA(cudaMemsetAsync(w + p.off_dq_accum, 0, bytes, cs));
      add(kDQAccum, w + p.off_dq_accum);
    }
  }
  if (key.packed) add(kLowest0, &lowest);
  if (key.causal) add(kLowest1, &lowest);
  if (key.packed) {
    RaggedArgs r;
    r.cu_seqlens = a.cu_seqlens;
    r.B = static_cast<int>(a.d.B);
    r.B_pad = static_cast<int>(key.B);
    r.S = static_cast<int>(a.d.S);
    r.seqlens = reinterpret_cast<int32_t*>(w + p.off_seqlens);
    r.n_offsets = static_cast<int>(p.offset_strides.size());
    TG_CHECK(r.n_offsets <= kMaxOffsetArrays, what, ": too many distinct strides");
    for (int i = 0; i < r.n_offsets; ++i) {
      r.stride[i] = p.offset_strides[i];
      r.offsets[i] = reinterpret_cast<int64_t*>(w + p.off_offsets +
                                                i * align_up(static_cast<std::size_t>(key.B + 1) * sizeof(int64_t)));
      add(kOffset0 + i, r.offsets[i]);
    }
    ragged_offsets(r, stream);
    add(kSeqQ, r.seqlens);
    add(kSeqKV, r.seqlens);  // self-attention: the same lengths
  }

  Desc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, "variant pack");
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()), uids.data(),
           "VARIANT_PACK_UNIQUE_IDS");
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(ptrs.size()), ptrs.data(),
           "VARIANT_PACK_DATA_POINTERS");
  void* plan_ws = w;
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &plan_ws, "VARIANT_PACK_WORKSPACE");
  pack.finalize();
  cudnnHandle_t h = handle_for(s, key.device);
  check(cudnnSetStream(h, cs), "cudnnSetStream");
  check(cudnnBackendExecute(h, p.plan, pack.get()),
        std::string(what) + ": execute (" + describe(key) + ", engine " + std::to_string(p.engine_index) + ")");
  if (backward) {
    mark_written(a.dq, a.sdq, a.d, a.d.H, stream);
    mark_written(a.dk, a.sdk, a.d, a.d.Hkv, stream);
    mark_written(a.dv, a.sdv, a.d, a.d.Hkv, stream);
  } else {
    mark_written(a.o, a.so, a.d, a.d.H, stream);
    const std::size_t lse_rows = static_cast<std::size_t>(a.d.packed ? a.d.T : a.d.B * a.d.S);
    nvtx::mark_initialized(a.lse, a.lse != nullptr ? lse_rows * a.d.H * sizeof(float) : 0, stream);
  }
}

std::size_t workspace_bytes(const FlashArgs& a, bool backward, bool deterministic, const char* what) {
  check_cudnn_args(a, backward, what);
  State& s = state();
  const Key key = make_key(a, backward, deterministic);
  std::lock_guard<std::mutex> lock(s.mu);
  return plan_for(s, key).total_workspace;
}

}  // namespace

void release_cudnn_state() {
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  std::set<int> devices;
  for (const auto& [device, handle] : s.handles) devices.insert(device);
  for (const auto& [key, plan] : s.plans) devices.insert(key.device);
  if (devices.empty()) return;  // nothing was created
  state_release::synchronize_devices(devices);  // throws before anything is freed
  s.plans.clear();  // their descriptors (the execution plans name the handles: before them)
  cudnnStatus_t first_error = CUDNN_STATUS_SUCCESS;
  for (const auto& [device, handle] : s.handles) {
    const state_release::CurrentDevice current(device);
    const cudnnStatus_t st = cudnnDestroy(handle);
    if (st != CUDNN_STATUS_SUCCESS && first_error == CUDNN_STATUS_SUCCESS) first_error = st;
  }
  s.handles.clear();
  check(first_error, "cudnnDestroy");  // (the maps are empty either way)
}

std::size_t cudnn_fwd_workspace_bytes(const FlashArgs& a) {
  return workspace_bytes(a, false, false, "attention_fwd_workspace_bytes(cuda, cudnn)");
}

void cudnn_fwd(const FlashArgs& a, const Workspace& ws, Stream stream) {
  TG_NVTX_FN();
  run(a, false, false, ws, stream, "attention_fwd(cuda, cudnn)");
}

std::size_t cudnn_bwd_workspace_bytes(const FlashArgs& a, bool deterministic) {
  return workspace_bytes(a, true, deterministic, "attention_bwd_workspace_bytes(cuda, cudnn)");
}

void cudnn_bwd(const FlashArgs& a, bool deterministic, const Workspace& ws, Stream stream) {
  TG_NVTX_FN();
  run(a, true, deterministic, ws, stream, "attention_bwd(cuda, cudnn)");
}

}  // namespace tg::kernels::cuda::attn_detail
