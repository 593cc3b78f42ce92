// kernels/kv_cache on CUDA against the CPU twin, byte for byte: writes (BF16 and E4M3 per tensor / per head, with
// the q copy, skipped rows; plain and with RoPE fused), the beam reorder and the amax, at Gemma's shapes (MQA and MHA, head_dim 256) and
// awkward ones (head_dim 24, three kv heads, odd token counts).
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gpu_test_util.h"
#include "kernels/tests/elementwise_test_util.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/rope/rope.h"

namespace tg::kernels {
namespace {

struct Shape4 {
  int64_t t, h, hkv, dh, b, s;
};

TensorView heads(const Tensor& buf, int64_t t, int64_t w, int64_t col, int64_t n, int64_t dh) {
  return TensorView(buf.ptr<uint16_t>() + col, DType::BF16, Shape{t, n, dh}, Shape{w, dh, 1}, buf.device());
}

bool same(const Tensor& gpu, const Tensor& cpu) {
  const Tensor g = gpu.to(Device::CPU);
  return g.nbytes() == cpu.nbytes() && std::memcmp(g.data(), cpu.data(), cpu.nbytes()) == 0;
}

// kv_cache_write, and kv_cache_write_rope (RoPE fused into the write: the CPU twin is rope_forward on copies, then
// the write), whose q and k inputs must come out untouched.
TEST(KvCacheGpu, WriteMatchesCpu) {
  TG_REQUIRE_CUDA();
  for (const Shape4& c : {Shape4{13, 8, 1, 256, 4, 40}, Shape4{7, 16, 16, 256, 3, 9}, Shape4{5, 6, 3, 24, 2, 8},
                          Shape4{64, 4, 2, 32, 64, 2}}) {
   for (const bool rope : {false, true}) {
    const Tensor inv_freq = rope_inv_freq_table(c.dh, 10000.0f, 1.0f, Device::CPU);
    const Tensor inv_freq_g = inv_freq.to(Device::CUDA);
    for (int mode = 0; mode < 3; ++mode) {  // BF16, E4M3 per tensor, E4M3 per head
      const DType dt = mode == 0 ? DType::BF16 : DType::E4M3;
      const int64_t w = (c.h + 2 * c.hkv) * c.dh;
      const Tensor qkv = testing::random_host(DType::BF16, {c.t, w}, 3, 4.0f);
      std::mt19937 rng(static_cast<uint32_t>(c.t + mode));
      std::vector<int32_t> slot(static_cast<std::size_t>(c.t)), pos(static_cast<std::size_t>(c.t));
      std::set<std::pair<int32_t, int32_t>> used;  // one writer per cache row (two would race on the GPU)
      for (int64_t i = 0; i < c.t; ++i) {
        int32_t sl = static_cast<int32_t>(rng() % (c.b + 1)) - (i % 5 == 4 ? static_cast<int32_t>(c.b) + 1 : 0);
        const int32_t ps = static_cast<int32_t>(rng() % (c.s + 2)) - 1;  // -1 and s: skipped
        if (!used.insert({sl, ps}).second) sl = -1;
        slot[static_cast<std::size_t>(i)] = sl;
        pos[static_cast<std::size_t>(i)] = ps;
      }
      const Tensor slots = Tensor::copy_of(TensorView(slot.data(), DType::I32, Shape{c.t}), Device::CPU);
      const Tensor positions = Tensor::copy_of(TensorView(pos.data(), DType::I32, Shape{c.t}), Device::CPU);
      Tensor kc = testing::random_host(dt, {c.b, c.s, c.hkv, c.dh}, 5),
             vc = testing::random_host(dt, {c.b, c.s, c.hkv, c.dh}, 6);
      const int64_t ns = mode == 2 ? c.hkv : 1;
      Tensor ks = Tensor::empty(DType::F32, {ns}), vs = Tensor::empty(DType::F32, {ns});
      for (int64_t i = 0; i < ns; ++i) {
        ks.ptr<float>()[i] = 0.004f * static_cast<float>(i + 1);
        vs.ptr<float>()[i] = 0.007f / static_cast<float>(i + 1);
      }
      Tensor q_out = Tensor::zeros(DType::BF16, {c.t, c.h, c.dh});
      const auto cache = [&](Tensor& k, Tensor& v, const Tensor& a, const Tensor& b) {
        return KvCache{k.view(), v.view(), dt == DType::E4M3 ? a.view() : TensorView{},
                       dt == DType::E4M3 ? b.view() : TensorView{}};
      };
      Tensor qkv_g = qkv.to(Device::CUDA), kc_g = kc.to(Device::CUDA), vc_g = vc.to(Device::CUDA);
      const Tensor ks_g = ks.to(Device::CUDA), vs_g = vs.to(Device::CUDA), slots_g = slots.to(Device::CUDA),
                   pos_g = positions.to(Device::CUDA);
      Tensor q_out_g = q_out.to(Device::CUDA);
      const TensorView k_h = heads(qkv, c.t, w, c.h * c.dh, c.hkv, c.dh),
                       v_h = heads(qkv, c.t, w, (c.h + c.hkv) * c.dh, c.hkv, c.dh), q_h = heads(qkv, c.t, w, 0, c.h, c.dh);
      const TensorView k_g = heads(qkv_g, c.t, w, c.h * c.dh, c.hkv, c.dh),
                       v_g = heads(qkv_g, c.t, w, (c.h + c.hkv) * c.dh, c.hkv, c.dh),
                       q_g = heads(qkv_g, c.t, w, 0, c.h, c.dh);
      if (rope) {
        cpu::kv_cache_write_rope(k_h, v_h, slots.view(), positions.view(), inv_freq.view(), cache(kc, vc, ks, vs), q_h,
                                 q_out.view());
        kv_cache_write_rope(k_g, v_g, slots_g.view(), pos_g.view(), inv_freq_g.view(), cache(kc_g, vc_g, ks_g, vs_g),
                            q_g, q_out_g.view());
      } else {
        cpu::kv_cache_write(k_h, v_h, slots.view(), positions.view(), cache(kc, vc, ks, vs), q_h, q_out.view());
        kv_cache_write(k_g, v_g, slots_g.view(), pos_g.view(), cache(kc_g, vc_g, ks_g, vs_g), q_g, q_out_g.view());
      }
      const std::string what = std::string(rope ? "rope " : "") + "T=" + std::to_string(c.t) +
                               " Dh=" + std::to_string(c.dh) + " mode " + std::to_string(mode);
      EXPECT_TRUE(same(kc_g, kc)) << what << ": k cache";
      EXPECT_TRUE(same(vc_g, vc)) << what << ": v cache";
      EXPECT_TRUE(same(q_out_g, q_out)) << what << ": q";
      EXPECT_TRUE(same(qkv_g, qkv)) << what << ": the q / k / v inputs changed";
    }
   }
  }
}

// kv_cache_write_rope with the precomputed cos/sin table (kernels/rope/rope.h) == without it, byte for byte (cache
// rows, q_out, untouched inputs), at Gemma-2B (8 q heads, 1 kv head) and Gemma-7B (16, 16), head_dim 256, BF16 and
// E4M3 (per head) caches: a prefill-like write (2 sequences, max_seq 8192, distinct random positions up to 8191)
// and a decode-like one (64 sequences, one token each, max_seq 512: most K / V rows skipped, every q rotated), with
// a 4096-position table, so later positions take the computed fallback inside the same launch.
TEST(KvCacheGpu, RopeTableEqualsComputed) {
  TG_REQUIRE_CUDA();
  struct Case {
    int64_t t, h, hkv, b, s;
  };
  const int64_t dh = 256;
  const Tensor inv_freq = rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CUDA);
  const Tensor table = rope_cos_sin_table(inv_freq, 4096, Device::CUDA);
  for (const Case c : {Case{48, 8, 1, 2, 8192}, Case{48, 16, 16, 2, 8192}, Case{64, 8, 1, 64, 512},
                       Case{64, 16, 16, 64, 512}}) {
    for (const DType dt : {DType::BF16, DType::E4M3}) {
      const std::string what = "T=" + std::to_string(c.t) + " H=" + std::to_string(c.h) +
                               " Hkv=" + std::to_string(c.hkv) + " B=" + std::to_string(c.b) +
                               (dt == DType::E4M3 ? " e4m3" : " bf16");
      const int64_t w = (c.h + 2 * c.hkv) * dh;
      const Tensor qkv_h = testing::random_host(DType::BF16, {c.t, w}, 41, 4.0f);
      const Tensor qkv = qkv_h.to(Device::CUDA);
      std::mt19937 rng(42);
      std::vector<int32_t> slot(static_cast<std::size_t>(c.t)), pos(static_cast<std::size_t>(c.t));
      std::set<int32_t> used;  // distinct positions: one writer per cache row
      for (int64_t i = 0; i < c.t; ++i) {
        int32_t p = static_cast<int32_t>(rng() % 8192);
        while (!used.insert(p).second) p = static_cast<int32_t>(rng() % 8192);
        slot[static_cast<std::size_t>(i)] = static_cast<int32_t>(i % c.b);
        pos[static_cast<std::size_t>(i)] = p;
      }
      pos[0] = 4095;  // the table's last row
      pos[1] = 4096;  // the first computed one
      const Tensor slots = Tensor::copy_of(TensorView(slot.data(), DType::I32, Shape{c.t}), Device::CUDA);
      const Tensor positions = Tensor::copy_of(TensorView(pos.data(), DType::I32, Shape{c.t}), Device::CUDA);
      Tensor scale_h = Tensor::empty(DType::F32, {c.hkv});
      for (int64_t i = 0; i < c.hkv; ++i) scale_h.ptr<float>()[i] = 0.004f * static_cast<float>(i + 1);
      const Tensor scale = scale_h.to(Device::CUDA);
      const auto cache = [&](Tensor& k, Tensor& v) {
        return KvCache{k.view(), v.view(), dt == DType::E4M3 ? scale.view() : TensorView{},
                       dt == DType::E4M3 ? scale.view() : TensorView{}};
      };
      Tensor k1 = Tensor::zeros(dt, {c.b, c.s, c.hkv, dh}, Device::CUDA);
      Tensor v1 = Tensor::zeros(dt, k1.shape(), Device::CUDA);
      Tensor k2 = Tensor::zeros(dt, k1.shape(), Device::CUDA), v2 = Tensor::zeros(dt, k1.shape(), Device::CUDA);
      Tensor q1 = Tensor::zeros(DType::BF16, {c.t, c.h, dh}, Device::CUDA);
      Tensor q2 = Tensor::zeros(DType::BF16, {c.t, c.h, dh}, Device::CUDA);
      const TensorView q = heads(qkv, c.t, w, 0, c.h, dh), k = heads(qkv, c.t, w, c.h * dh, c.hkv, dh),
                       v = heads(qkv, c.t, w, (c.h + c.hkv) * dh, c.hkv, dh);
      kv_cache_write_rope(k, v, slots.view(), positions.view(), inv_freq.view(), cache(k1, v1), q, q1.view(), {},
                          table.view());
      kv_cache_write_rope(k, v, slots.view(), positions.view(), inv_freq.view(), cache(k2, v2), q, q2.view());
      EXPECT_TRUE(testing::bits_equal(k1, k2)) << what << ": k cache";
      EXPECT_TRUE(testing::bits_equal(v1, v2)) << what << ": v cache";
      EXPECT_TRUE(testing::bits_equal(q1, q2)) << what << ": q";
      EXPECT_TRUE(same(qkv, qkv_h)) << what << ": the q / k / v inputs changed";
    }
  }
}

// A table of another head_dim, dtype or device is rejected in the launcher, naming the argument.
TEST(KvCacheGpu, RopeTableBadArguments) {
  TG_REQUIRE_CUDA();
  const int64_t dh = 256, t = 2, hkv = 1, h = 8;
  const Tensor inv_freq = rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CUDA);
  Tensor kc = Tensor::zeros(DType::BF16, {2, 8, hkv, dh}, Device::CUDA);
  Tensor vc = Tensor::zeros(DType::BF16, {2, 8, hkv, dh}, Device::CUDA);
  const Tensor qkv = Tensor::zeros(DType::BF16, {t, (h + 2 * hkv) * dh}, Device::CUDA);
  const int64_t w = (h + 2 * hkv) * dh;
  const Tensor slots = Tensor::zeros(DType::I32, {t}, Device::CUDA), pos = Tensor::zeros(DType::I32, {t}, Device::CUDA);
  const auto error_of = [&](const TensorView& table) {
    try {
      kv_cache_write_rope(heads(qkv, t, w, h * dh, hkv, dh), heads(qkv, t, w, (h + hkv) * dh, hkv, dh), slots.view(),
                          pos.view(), inv_freq.view(), KvCache{kc.view(), vc.view(), {}, {}}, {}, {}, {}, table);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  const Tensor other = rope_cos_sin_table(rope_inv_freq_table(128, 10000.0f, 1.0f, Device::CUDA), 16, Device::CUDA);
  EXPECT_NE(error_of(other).find("kv_cache_write_rope(cuda): table must be the F32 [positions, 2, Dh/2 = 128]"),
            std::string::npos)
      << error_of(other);
  const Tensor f64 = Tensor::zeros(DType::F64, {16, 2, dh / 2}, Device::CUDA);
  EXPECT_NE(error_of(f64).find("table must be the F32"), std::string::npos) << error_of(f64);
  const Tensor host = rope_cos_sin_table(inv_freq, 16, Device::CPU);
  EXPECT_NE(error_of(host).find("table must be on CUDA"), std::string::npos) << error_of(host);
  EXPECT_EQ(error_of(rope_cos_sin_table(inv_freq, 16, Device::CUDA)), "no error");
}

TEST(KvCacheGpu, ReorderAndAmaxMatchCpu) {
  TG_REQUIRE_CUDA();
  for (DType dt : {DType::BF16, DType::E4M3}) {
    const int64_t b = 6, s = 17, hkv = 2, dh = 256, length = 11;
    Tensor kc = testing::random_host(dt, {b, s, hkv, dh}, 21), vc = testing::random_host(dt, {b, s, hkv, dh}, 22);
    Tensor sc = Tensor::empty(DType::F32, {1});
    sc.ptr<float>()[0] = 0.5f;
    const std::vector<int32_t> src_v{5, 5, 0, 2, 2, 1};
    const Tensor src =
        Tensor::copy_of(TensorView(const_cast<int32_t*>(src_v.data()), DType::I32, Shape{b}), Device::CPU);
    const int64_t bytes = b * length * hkv * dh * static_cast<int64_t>(dtype_size(dt));
    Tensor scratch = Tensor::empty(DType::U8, {bytes}), scratch_g = Tensor::empty(DType::U8, {bytes}, Device::CUDA);
    Tensor kc_g = kc.to(Device::CUDA), vc_g = vc.to(Device::CUDA);
    const Tensor sc_g = sc.to(Device::CUDA), src_g = src.to(Device::CUDA);
    const bool fp8 = dt == DType::E4M3;
    cpu::kv_cache_reorder(KvCache{kc.view(), vc.view(), fp8 ? sc.view() : TensorView{}, fp8 ? sc.view() : TensorView{}},
                          src.view(), length, scratch.view());
    kv_cache_reorder(
        KvCache{kc_g.view(), vc_g.view(), fp8 ? sc_g.view() : TensorView{}, fp8 ? sc_g.view() : TensorView{}},
        src_g.view(), length, scratch_g.view());
    EXPECT_TRUE(same(kc_g, kc)) << "k reorder";
    EXPECT_TRUE(same(vc_g, vc)) << "v reorder";
  }
  const int64_t t = 37, hkv = 3, dh = 24, w = 5 * hkv * dh;
  const Tensor x = testing::random_host(DType::BF16, {t, w}, 8, 6.0f);
  const Tensor x_g = x.to(Device::CUDA);
  for (int64_t slots : {int64_t{1}, hkv}) {
    Tensor a = Tensor::zeros(DType::F32, {slots});
    Tensor a_g = Tensor::zeros(DType::F32, {slots}, Device::CUDA);
    cpu::kv_rows_amax(heads(x, t, w, 2 * dh, hkv, dh), a.view());
    kv_rows_amax(heads(x_g, t, w, 2 * dh, hkv, dh), a_g.view());
    EXPECT_TRUE(same(a_g, a)) << slots << " amax slots";
  }
}

}  // namespace
}  // namespace tg::kernels
