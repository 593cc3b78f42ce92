// Attention (kernels/attention): prefill / training attention with cuDNN's fused SDPA and our flash kernels side
// by side, and decode over a KV cache against the HBM roofline.
//
// Names:
//   attention/prefill_fwd/<model>/<backend>/<layout>/B<b>xS<s>      causal forward (lse saved)
//   attention/train_bwd/<model>/<backend>/<layout>/B<b>xS<s>        backward alone (forward outputs precomputed)
//   attention/train_fwd_bwd/<model>/<backend>/<layout>/B<b>xS<s>    forward + backward, one training step
//   attention/decode/<model>/<cache>/B<b>/ctx<n>                    one decode step (split-K + combine)
//   attention/decode_g<1|2>/gemma-2b/<cache>/B1/ctx<n>              the same with 1 or 2 query heads per block
//                                                                   (DecodeOptions::heads_per_block) instead of the
//                                                                   planner's choice (formerly 8, the whole group;
//                                                                   now 1 at batch 1, so decode_g1 == decode there)
//   attention/decode_s<1|2|4|8>/gemma-7b/<cache>/B64/ctx<512|1024> the same with a forced split count
//                                                                   (DecodeOptions::num_splits)
//   attention/decode_combine/<model>/<cache>/B1/ctx<n>              the default plan with the splits merged by the
//                                                                   combine kernel (DecodeOptions::max_cluster = 1)
//                                                                   instead of inside the split kernel's cluster
//   attention/kv_append/<model>/<cache>/B<b>                        one KV-cache append
// Models: gemma-2b (H 8, Hkv 1, Dh 256), gemma-7b (H 16, Hkv 16, Dh 256). Layouts: dense [B, S, H, Dh] and packed
// [T, H, Dh] with cu_seqlens (every sequence of length S, so both do the same work; packed adds the padding-mask
// and ragged-offset machinery).
//
// FLOPs are honest for causal attention: a query at position i sees i + 1 keys, so one S x S matmul of a head costs
// 2 * Dh * S (S + 1) / 2 FLOPs. Forward = 2 such matmuls (Q K^T, P V); backward = 5 (Q K^T recomputed, dP = dO V^T,
// dV = P^T dO, dQ = dS K, dK = dS^T Q); exp / softmax work is not counted. Our flash backward recomputes Q K^T three
// times (8 matmuls of work), but the counter stays at 5: it measures useful FLOP/s.
// Bytes (the memory roofline of decode): K and V of every cached position read once (BF16: 2 bytes, E4M3: 1 byte
// per element), q read, out written. Prefill bytes: q, k, v read, out written, lse written (it is compute-bound).
// Inputs are N(0, 1)-like; L2 is flushed (a read of 2 x L2: no dirty lines left) before every timed iteration of the
// memory-bound benchmarks (decode, append).
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "bench/common/bench_util.h"
#include "common/cuda_check.h"
#include "common/numeric.h"
#include "kernels/attention/attention.h"

namespace tg::bench {
namespace {

using kernels::AttentionBackend;
using kernels::AttentionOptions;

struct Model {
  const char* name;
  int64_t H, Hkv, Dh;
};
const Model kGemma2b{"gemma-2b", 8, 1, 256};
const Model kGemma7b{"gemma-7b", 16, 16, 256};


Tensor cu_seqlens(int64_t B, int64_t S) {
  Tensor cu = Tensor::empty(DType::I32, {B + 1});
  for (int64_t b = 0; b <= B; ++b) cu.ptr<int32_t>()[b] = static_cast<int32_t>(b * S);
  return cu.to(Device::CUDA);
}

// Runs body twice (warm-up: plans, workspaces), then times it per iteration.
template <typename F>
void timed(benchmark::State& state, bool flush_l2, F&& body) {
  try {
    time_iterations(state, body, 2, flush_l2);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

// ---- prefill / training -------------------------------------------------------------------------------------------
struct PrefillData {
  Tensor q, k, v, out, lse, dout, dq, dk, dv, cu;
  bool packed = false;
  int64_t S = 0;
  TensorView cu_view() const { return packed ? cu.view() : TensorView{}; }
  int64_t max_seqlen() const { return packed ? S : 0; }
};

PrefillData& prefill_data(const Model& m, int64_t B, int64_t S, bool packed) {
  static std::map<std::string, PrefillData> cache;
  const std::string key = std::string(m.name) + (packed ? "/p/" : "/d/") + std::to_string(B) + "x" + std::to_string(S);
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  PrefillData d;
  d.packed = packed;
  d.S = S;
  const Shape qs = packed ? Shape{B * S, m.H, m.Dh} : Shape{B, S, m.H, m.Dh};
  const Shape kvs = packed ? Shape{B * S, m.Hkv, m.Dh} : Shape{B, S, m.Hkv, m.Dh};
  const Shape ls = packed ? Shape{B * S, m.H} : Shape{B, m.H, S};
  d.q = random_device(DType::BF16, qs, 1);
  d.k = random_device(DType::BF16, kvs, 2);
  d.v = random_device(DType::BF16, kvs, 3);
  d.dout = random_device(DType::BF16, qs, 4);
  d.out = Tensor::empty(DType::BF16, qs, Device::CUDA);
  d.lse = Tensor::empty(DType::F32, ls, Device::CUDA);
  d.dq = Tensor::empty(DType::BF16, qs, Device::CUDA);
  d.dk = Tensor::empty(DType::BF16, kvs, Device::CUDA);
  d.dv = Tensor::empty(DType::BF16, kvs, Device::CUDA);
  if (packed) d.cu = cu_seqlens(B, S);
  return cache.emplace(key, std::move(d)).first->second;
}

double causal_matmul_flops(const Model& m, int64_t B, int64_t S) {
  return 2.0 * static_cast<double>(m.Dh) * static_cast<double>(B * m.H) * static_cast<double>(S) *
         static_cast<double>(S + 1) / 2.0;
}
double prefill_bytes(const Model& m, int64_t B, int64_t S) {
  const double t = static_cast<double>(B * S);
  return t * (2.0 * m.H * m.Dh + 2.0 * m.Hkv * m.Dh) * 2.0 + t * m.H * 4.0;
}

enum class Phase { kFwd, kBwd, kFwdBwd };

void bm_prefill(benchmark::State& state, Model m, int64_t B, int64_t S, AttentionBackend backend, bool packed,
                Phase phase) {
  AttentionOptions opt;
  opt.backend = backend;
  opt.causal = true;
  try {
    PrefillData& d = prefill_data(m, B, S, packed);
    auto fwd = [&] { kernels::attention_fwd(d.q, d.k, d.v, d.cu_view(), d.max_seqlen(), opt, d.out, d.lse); };
    auto bwd = [&] {
      kernels::attention_bwd(d.q, d.k, d.v, d.out, d.lse, d.dout, d.cu_view(), d.max_seqlen(), opt, d.dq, d.dk, d.dv);
    };
    fwd();  // outputs for the backward
    timed(state, false, [&] {
      if (phase != Phase::kBwd) fwd();
      if (phase != Phase::kFwd) bwd();
    });
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const double mm = causal_matmul_flops(m, B, S);
  const double flops = phase == Phase::kFwd ? 2 * mm : phase == Phase::kBwd ? 5 * mm : 7 * mm;
  set_roofline(state, prefill_bytes(m, B, S), flops);
  set_tokens(state, static_cast<double>(B * S));
}

// ---- decode ---------------------------------------------------------------------------------------------------------
struct DecodeData {
  Tensor q, out, k, v, k_scale, v_scale, seqlens, k_new, v_new, positions;
  kernels::KvCache cache() const { return {k, v, k_scale, v_scale}; }
};

DecodeData& decode_data(const Model& m, int64_t B, int64_t ctx, DType cache_dtype) {
  static std::map<std::string, DecodeData> data;
  const std::string key = std::string(m.name) + "/" + std::to_string(B) + "/" + std::to_string(ctx) + "/" +
                          std::string(dtype_name(cache_dtype));
  auto it = data.find(key);
  if (it != data.end()) return it->second;
  DecodeData d;
  d.q = random_device(DType::BF16, {B, m.H, m.Dh}, 5);
  d.out = Tensor::empty(DType::BF16, {B, m.H, m.Dh}, Device::CUDA);
  d.k = random_device(cache_dtype, {B, ctx, m.Hkv, m.Dh}, 6);
  d.v = random_device(cache_dtype, {B, ctx, m.Hkv, m.Dh}, 7);
  if (cache_dtype == DType::E4M3) {
    Tensor s = Tensor::empty(DType::F32, {1});
    s.ptr<float>()[0] = 1.0f / 64.0f;
    d.k_scale = s.to(Device::CUDA);
    d.v_scale = s.to(Device::CUDA);
  }
  Tensor lens = Tensor::empty(DType::I32, {B}), pos = Tensor::empty(DType::I32, {B});
  for (int64_t b = 0; b < B; ++b) {
    lens.ptr<int32_t>()[b] = static_cast<int32_t>(ctx);
    pos.ptr<int32_t>()[b] = static_cast<int32_t>(ctx - 1);
  }
  d.seqlens = lens.to(Device::CUDA);
  d.positions = pos.to(Device::CUDA);
  d.k_new = random_device(DType::BF16, {B, m.Hkv, m.Dh}, 8);
  d.v_new = random_device(DType::BF16, {B, m.Hkv, m.Dh}, 9);
  return data.emplace(key, std::move(d)).first->second;
}

// heads_per_block: DecodeOptions::heads_per_block (0 = the default: the whole group of query heads per block).
// max_cluster: DecodeOptions::max_cluster (0 = the default: merge inside the split kernel's cluster; 1 = combine kernel).
// num_splits: DecodeOptions::num_splits (0 = the planner's choice).
void bm_decode(benchmark::State& state, Model m, int64_t B, int64_t ctx, DType cache_dtype, int heads_per_block,
               int max_cluster = 0, int num_splits = 0) {
  double bytes = 0;
  try {
    DecodeData& d = decode_data(m, B, ctx, cache_dtype);
    kernels::DecodeOptions opt;
    opt.max_seqlen_hint = ctx;
    opt.heads_per_block = heads_per_block;
    opt.max_cluster = max_cluster;
    opt.num_splits = num_splits;
    timed(state, true, [&] { kernels::decode_attention(d.q, d.cache(), d.seqlens, opt, d.out); });
    bytes = 2.0 * static_cast<double>(B * ctx * m.Hkv * m.Dh) * static_cast<double>(dtype_size(cache_dtype)) +
            2.0 * static_cast<double>(B * m.H * m.Dh) * 2.0;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  set_roofline(state, bytes, 4.0 * static_cast<double>(B * m.H * ctx * m.Dh));
  set_tokens(state, static_cast<double>(B));
}

void bm_append(benchmark::State& state, Model m, int64_t B, DType cache_dtype) {
  double bytes = 0;
  try {
    DecodeData& d = decode_data(m, B, 256, cache_dtype);
    timed(state, true, [&] { kernels::kv_cache_append(d.k_new, d.v_new, d.positions, d.cache()); });
    bytes = 2.0 * static_cast<double>(B * m.Hkv * m.Dh) * (2.0 + static_cast<double>(dtype_size(cache_dtype)));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  set_roofline(state, bytes, 0);
}

void add(const std::string& name, std::function<void(benchmark::State&)> fn) {
  benchmark::RegisterBenchmark(name.c_str(), fn)->UseManualTime()->Unit(benchmark::kMicrosecond);
}

const bool registered = [] {
  struct Shape2 {
    Model m;
    int64_t B, S;
  };
  for (const Shape2& s : {Shape2{kGemma2b, 8, 2048}, Shape2{kGemma7b, 4, 2048}}) {
    const std::string shape = "/B" + std::to_string(s.B) + "xS" + std::to_string(s.S);
    for (AttentionBackend backend : {AttentionBackend::kCudnn, AttentionBackend::kFlash}) {
      for (bool packed : {false, true}) {
        const std::string mid = std::string("/") + s.m.name + "/" + kernels::attention_backend_name(backend) +
                                (packed ? "/packed" : "/dense") + shape;
        add("attention/prefill_fwd" + mid,
            [=](benchmark::State& st) { bm_prefill(st, s.m, s.B, s.S, backend, packed, Phase::kFwd); });
        add("attention/train_bwd" + mid,
            [=](benchmark::State& st) { bm_prefill(st, s.m, s.B, s.S, backend, packed, Phase::kBwd); });
        add("attention/train_fwd_bwd" + mid,
            [=](benchmark::State& st) { bm_prefill(st, s.m, s.B, s.S, backend, packed, Phase::kFwdBwd); });
      }
    }
  }
  for (const Model& m : {kGemma2b, kGemma7b}) {
    for (DType cache : {DType::BF16, DType::E4M3}) {
      const std::string cname = cache == DType::BF16 ? "bf16" : "e4m3";
      for (int64_t B : {1, 64}) {
        for (int64_t ctx : {128, 512, 1024, 2048, 4096}) {
          add("attention/decode/" + std::string(m.name) + "/" + cname + "/B" + std::to_string(B) + "/ctx" +
                  std::to_string(ctx),
              [=](benchmark::State& st) { bm_decode(st, m, B, ctx, cache, 0); });
          if (B == 1 && ctx <= 1024) {  // the in-cluster merge against the combine kernel, same plan otherwise
            add("attention/decode_combine/" + std::string(m.name) + "/" + cname + "/B1/ctx" + std::to_string(ctx),
                [=](benchmark::State& st) { bm_decode(st, m, B, ctx, cache, 0, 1); });
          }
          if (m.H == m.Hkv && B == 64 && (ctx == 512 || ctx == 1024)) {
            // The TE tutorial's shape (HBM-bound, 1024 (sequence, head) blocks): forced split counts beside the
            // planner's latency model, whose wave count decides the tail of the last wave.
            for (int splits : {1, 2, 4, 8}) {
              add("attention/decode_s" + std::to_string(splits) + "/" + std::string(m.name) + "/" + cname + "/B64/ctx" +
                      std::to_string(ctx),
                  [=](benchmark::State& st) { bm_decode(st, m, B, ctx, cache, 0, 0, splits); });
            }
          }
          if (m.H / m.Hkv == 8 && B == 1 && ctx <= 1024) {  // gemma-2b's MQA group at batch 1: 1 and 2 heads per block
            for (int hpb : {1, 2}) {
              add("attention/decode_g" + std::to_string(hpb) + "/" + std::string(m.name) + "/" + cname + "/B1/ctx" +
                      std::to_string(ctx),
                  [=](benchmark::State& st) { bm_decode(st, m, B, ctx, cache, hpb); });
            }
          }
        }
        add("attention/kv_append/" + std::string(m.name) + "/" + cname + "/B" + std::to_string(B),
            [=](benchmark::State& st) { bm_append(st, m, B, cache); });
      }
    }
  }
  return true;
}();

}  // namespace
}  // namespace tg::bench

TG_BENCH_MAIN()
