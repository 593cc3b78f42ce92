// kernels/kv_cache, CPU twin: packed writes into the cache (strided views of a fused QKV output, skipped rows,
// untouched rows), E4M3 writes identical to kernels/attention's kv_cache_append and to the rounding rule by
// hand, the q copy, the beam reorder, the K / V amax, and argument errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <random>
#include <vector>

#include "common/numeric.h"
#include "gpu_test_util.h"
#include "kernels/attention/attention.h"
#include "kernels/kv_cache/kv_cache.h"
#include "kernels/rope/rope.h"

namespace tg::kernels {
namespace {

// A fused [T, (H + 2 Hkv) Dh] BF16 buffer and its q / k / v views.
struct Qkv {
  Tensor buf;
  int64_t t, h, hkv, dh;
  TensorView view(int64_t col, int64_t heads) const {
    const int64_t w = (h + 2 * hkv) * dh;
    return TensorView(buf.ptr<uint16_t>() + col, DType::BF16, Shape{t, heads, dh}, Shape{w, dh, 1}, buf.device());
  }
  TensorView q() const { return view(0, h); }
  TensorView k() const { return view(h * dh, hkv); }
  TensorView v() const { return view((h + hkv) * dh, hkv); }
};
Qkv make_qkv(int64_t t, int64_t h, int64_t hkv, int64_t dh, uint32_t seed) {
  return Qkv{testing::random_host(DType::BF16, {t, (h + 2 * hkv) * dh}, seed, 3.0f), t, h, hkv, dh};
}

Tensor filled(DType dt, Shape s, uint8_t byte) {
  Tensor t = Tensor::empty(dt, s);
  std::memset(t.data(), byte, t.nbytes());
  return t;
}

// A contiguous copy of a strided [T, heads, Dh] BF16 view.
Tensor contiguous(const TensorView& x) {
  Tensor t = Tensor::empty(DType::BF16, x.shape);
  for (int64_t r = 0; r < x.shape[0]; ++r) {
    std::memcpy(t.ptr<uint16_t>() + r * x.shape[1] * x.shape[2], x.ptr<const uint16_t>() + r * x.strides[0],
                static_cast<std::size_t>(x.shape[1] * x.shape[2]) * sizeof(uint16_t));
  }
  return t;
}

Tensor i32(const std::vector<int32_t>& v) {
  Tensor t = Tensor::empty(DType::I32, {static_cast<int64_t>(v.size())});
  std::memcpy(t.data(), v.data(), v.size() * sizeof(int32_t));
  return t;
}

TEST(KvCacheWrite, Bf16PackedRowsLandAtTheirSlotAndPosition) {
  const int64_t hkv = 2, dh = 24, b = 3, s = 9;
  const Qkv x = make_qkv(6, 4, hkv, dh, 1);
  Tensor kc = filled(DType::BF16, {b, s, hkv, dh}, 0xAB), vc = filled(DType::BF16, {b, s, hkv, dh}, 0xAB);
  // Tokens: slot 2 positions 0..2, slot 0 positions 0..1, one skipped row (slot -1), one beyond the cache.
  const Tensor slots = i32({2, 2, 2, 0, -1, 0}), pos = i32({0, 1, 2, 0, 5, 9});
  const KvCache cache{kc.view(), vc.view(), {}, {}};
  Tensor q_out = Tensor::empty(DType::BF16, {6, 4, dh});
  cpu::kv_cache_write(x.k(), x.v(), slots.view(), pos.view(), cache, x.q(), q_out.view());
  const int64_t row = hkv * dh;
  auto at = [&](const Tensor& c, int64_t sl, int64_t p) { return c.ptr<uint16_t>() + (sl * s + p) * row; };
  const int32_t* sl = slots.ptr<int32_t>();
  const int32_t* ps = pos.ptr<int32_t>();
  int written = 0;
  for (int64_t t = 0; t < 6; ++t) {
    if (sl[t] < 0 || ps[t] >= s) continue;
    ++written;
    for (int64_t i = 0; i < row; ++i) {
      ASSERT_EQ(at(kc, sl[t], ps[t])[i], x.k().ptr<uint16_t>()[t * x.k().strides[0] + i]) << "k row " << t;
      ASSERT_EQ(at(vc, sl[t], ps[t])[i], x.v().ptr<uint16_t>()[t * x.v().strides[0] + i]) << "v row " << t;
    }
  }
  EXPECT_EQ(written, 4);
  EXPECT_EQ(at(kc, 1, 0)[0], 0xABAB) << "slot 1 was not written";
  EXPECT_EQ(at(kc, 0, 2)[0], 0xABAB) << "position 2 of slot 0 was not written";
  for (int64_t t = 0; t < 6; ++t) {
    for (int64_t i = 0; i < 4 * dh; ++i) {
      ASSERT_EQ(q_out.ptr<uint16_t>()[t * 4 * dh + i], x.q().ptr<uint16_t>()[t * x.q().strides[0] + i]);
    }
  }
}

// kv_cache_write_rope == rope_forward (in place on a copy of the fused QKV buffer) + kv_cache_write, byte for byte,
// for a BF16 and a per-head E4M3 cache; its own q / k inputs stay unrotated; a wrong table is named.
TEST(KvCacheWrite, RopeFusedEqualsRopeThenWrite) {
  const int64_t h = 4, hkv = 2, dh = 24, b = 3, s = 9;
  const Tensor slots = i32({2, 2, 0, -1, 1}), pos = i32({0, 7, 3, 2, 8});
  const Tensor inv_freq = rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CPU);
  for (const DType dt : {DType::BF16, DType::E4M3}) {
    const Qkv x = make_qkv(5, h, hkv, dh, 7);
    const Tensor before = Tensor::copy_of(x.buf.view(), Device::CPU);
    Tensor scale = Tensor::empty(DType::F32, {hkv});
    scale.ptr<float>()[0] = 0.01f;
    scale.ptr<float>()[1] = 0.02f;
    const auto make_cache = [&](Tensor& k, Tensor& v) {
      return KvCache{k.view(), v.view(), dt == DType::E4M3 ? scale.view() : TensorView{},
                     dt == DType::E4M3 ? scale.view() : TensorView{}};
    };
    Tensor k1 = filled(dt, {b, s, hkv, dh}, 0x11), v1 = filled(dt, {b, s, hkv, dh}, 0x11);
    Tensor k2 = filled(dt, {b, s, hkv, dh}, 0x11), v2 = filled(dt, {b, s, hkv, dh}, 0x11);
    Tensor q1 = Tensor::empty(DType::BF16, {5, h, dh}), q2 = Tensor::empty(DType::BF16, {5, h, dh});
    cpu::kv_cache_write_rope(x.k(), x.v(), slots.view(), pos.view(), inv_freq.view(), make_cache(k1, v1), x.q(),
                             q1.view());
    EXPECT_EQ(std::memcmp(x.buf.data(), before.data(), before.nbytes()), 0) << "the inputs were rotated in place";
    const Qkv y{Tensor::copy_of(x.buf.view(), Device::CPU), x.t, x.h, x.hkv, x.dh};
    cpu::rope_forward(y.q(), y.k(), pos.view(), inv_freq.view());
    cpu::kv_cache_write(y.k(), y.v(), slots.view(), pos.view(), make_cache(k2, v2), y.q(), q2.view());
    EXPECT_EQ(std::memcmp(k1.data(), k2.data(), k1.nbytes()), 0) << dt;
    EXPECT_EQ(std::memcmp(v1.data(), v2.data(), v1.nbytes()), 0) << dt;
    EXPECT_EQ(std::memcmp(q1.data(), q2.data(), q1.nbytes()), 0) << dt;
    // Token 1 sits at position 7 (position 0 rotates by nothing): its q heads must differ from the input's.
    EXPECT_NE(std::memcmp(q1.ptr<uint16_t>() + h * dh, x.q().ptr<uint16_t>() + x.q().strides[0],
                          static_cast<std::size_t>(h * dh) * sizeof(uint16_t)),
              0)
        << "q was not rotated";
  }
  const Qkv x = make_qkv(5, h, hkv, dh, 7);
  Tensor kc = filled(DType::BF16, {b, s, hkv, dh}, 0), vc = filled(DType::BF16, {b, s, hkv, dh}, 0);
  const Tensor short_table = rope_inv_freq_table(dh - 2, 10000.0f, 1.0f, Device::CPU);
  std::string msg = "no error";
  try {
    cpu::kv_cache_write_rope(x.k(), x.v(), slots.view(), pos.view(), short_table.view(),
                             KvCache{kc.view(), vc.view(), {}, {}}, {}, {});
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("inv_freq must be F32 [Dh / 2 = 12]"), std::string::npos) << msg;
}

// The optional cos/sin table (kernels/rope/rope.h): the same bytes as without it, for positions inside the table
// and past its end (computed), and a table of another head_dim is rejected naming the argument.
TEST(KvCacheWrite, RopeTableEqualsComputed) {
  const int64_t h = 4, hkv = 2, dh = 24, b = 3, s = 9;
  const Tensor slots = i32({2, 2, 0, -1, 1}), pos = i32({0, 7, 3, 2, 8});
  const Tensor inv_freq = rope_inv_freq_table(dh, 10000.0f, 1.0f, Device::CPU);
  const Tensor table = rope_cos_sin_table(inv_freq, 5, Device::CPU);  // positions 7 and 8 computed
  for (const DType dt : {DType::BF16, DType::E4M3}) {
    const Qkv x = make_qkv(5, h, hkv, dh, 7);
    Tensor scale = Tensor::empty(DType::F32, {hkv});
    scale.ptr<float>()[0] = 0.01f;
    scale.ptr<float>()[1] = 0.02f;
    const auto make_cache = [&](Tensor& k, Tensor& v) {
      return KvCache{k.view(), v.view(), dt == DType::E4M3 ? scale.view() : TensorView{},
                     dt == DType::E4M3 ? scale.view() : TensorView{}};
    };
    Tensor k1 = filled(dt, {b, s, hkv, dh}, 0x11), v1 = filled(dt, {b, s, hkv, dh}, 0x11);
    Tensor k2 = filled(dt, {b, s, hkv, dh}, 0x11), v2 = filled(dt, {b, s, hkv, dh}, 0x11);
    Tensor q1 = Tensor::empty(DType::BF16, {5, h, dh}), q2 = Tensor::empty(DType::BF16, {5, h, dh});
    kv_cache_write_rope(x.k(), x.v(), slots.view(), pos.view(), inv_freq.view(), make_cache(k1, v1), x.q(), q1.view(),
                        {}, table.view());
    kv_cache_write_rope(x.k(), x.v(), slots.view(), pos.view(), inv_freq.view(), make_cache(k2, v2), x.q(), q2.view());
    EXPECT_EQ(std::memcmp(k1.data(), k2.data(), k1.nbytes()), 0) << dt;
    EXPECT_EQ(std::memcmp(v1.data(), v2.data(), v1.nbytes()), 0) << dt;
    EXPECT_EQ(std::memcmp(q1.data(), q2.data(), q1.nbytes()), 0) << dt;
  }
  const Qkv x = make_qkv(5, h, hkv, dh, 7);
  Tensor kc = filled(DType::BF16, {b, s, hkv, dh}, 0), vc = filled(DType::BF16, {b, s, hkv, dh}, 0);
  const Tensor other = rope_cos_sin_table(rope_inv_freq_table(dh - 2, 10000.0f, 1.0f, Device::CPU), 5, Device::CPU);
  std::string msg = "no error";
  try {
    kv_cache_write_rope(x.k(), x.v(), slots.view(), pos.view(), inv_freq.view(), KvCache{kc.view(), vc.view(), {}, {}},
                        {}, {}, {}, other.view());
  } catch (const Error& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("kv_cache_write_rope(cpu): table must be the F32 [positions, 2, Dh/2 = 12]"), std::string::npos)
      << msg;
}

TEST(KvCacheWrite, E4m3MatchesKvCacheAppendAndTheRule) {
  for (bool per_head : {false, true}) {
    const int64_t hkv = 3, dh = 16, b = 4, s = 5;
    const Qkv x = make_qkv(b, 6, hkv, dh, 2);
    std::vector<float> scales{0.011f, 0.02f, 0.005f};  // small enough that some values saturate
    const Tensor ks = Tensor::copy_of(TensorView(scales.data(), DType::F32, Shape{per_head ? hkv : 1}), Device::CPU);
    const Tensor vs = ks.to(Device::CPU);
    Tensor kc = filled(DType::E4M3, {b, s, hkv, dh}, 0), vc = filled(DType::E4M3, {b, s, hkv, dh}, 0);
    Tensor kc2 = filled(DType::E4M3, {b, s, hkv, dh}, 0), vc2 = filled(DType::E4M3, {b, s, hkv, dh}, 0);
    const Tensor slots = i32({0, 1, 2, 3}), pos = i32({4, 0, -1, 2});
    cpu::kv_cache_write(x.k(), x.v(), slots.view(), pos.view(), KvCache{kc.view(), vc.view(), ks.view(), vs.view()}, {},
                        {});
    // kv_cache_append wants contiguous [B, Hkv, Dh] rows.
    const Tensor k_new = contiguous(x.k()), v_new = contiguous(x.v());
    cpu::kv_cache_append(k_new.view(), v_new.view(), pos.view(), KvCache{kc2.view(), vc2.view(), ks.view(), vs.view()});
    EXPECT_EQ(0, std::memcmp(kc.data(), kc2.data(), kc.nbytes())) << "per_head " << per_head;
    EXPECT_EQ(0, std::memcmp(vc.data(), vc2.data(), vc.nbytes())) << "per_head " << per_head;
    // By hand: row 0 (slot 0, position 4).
    const uint8_t* got = kc.ptr<uint8_t>() + (0 * s + 4) * hkv * dh;
    int saturated = 0;
    for (int64_t h = 0; h < hkv; ++h) {
      for (int64_t c = 0; c < dh; ++c) {
        const float val = bf16_bits_to_float(x.k().ptr<uint16_t>()[h * dh + c]);
        const float sc = scales[per_head ? static_cast<std::size_t>(h) : 0];
        EXPECT_EQ(got[h * dh + c], encode(DType::E4M3, val / sc));
        saturated += std::abs(val / sc) > 448.0f;
      }
    }
    if (!per_head) {
      EXPECT_GT(saturated, 0) << "the test should exercise saturation";
    }
  }
}

TEST(KvCacheReorder, RowsFollowTheirSourcesAndTheRestStays) {
  const int64_t b = 4, s = 6, hkv = 2, dh = 8, length = 4;
  for (DType dt : {DType::BF16, DType::E4M3}) {
    Tensor kc = testing::random_host(dt, {b, s, hkv, dh}, 11), vc = testing::random_host(dt, {b, s, hkv, dh}, 12);
    const Tensor k0 = kc.to(Device::CPU), v0 = vc.to(Device::CPU);
    Tensor ks = Tensor::empty(DType::F32, {1});
    ks.ptr<float>()[0] = 1.0f;
    const KvCache cache{kc.view(), vc.view(), dt == DType::E4M3 ? ks.view() : TensorView{},
                        dt == DType::E4M3 ? ks.view() : TensorView{}};
    const std::vector<int32_t> src{2, 2, 0, 1};
    const Tensor s_t = i32(src);
    Tensor scratch = Tensor::empty(DType::U8, {b * length * hkv * dh * static_cast<int64_t>(dtype_size(dt))});
    cpu::kv_cache_reorder(cache, s_t.view(), length, scratch.view());
    const int64_t row = hkv * dh * static_cast<int64_t>(dtype_size(dt));
    for (const auto& [now, before] : {std::pair{&kc, &k0}, std::pair{&vc, &v0}}) {
      for (int64_t r = 0; r < b; ++r) {
        for (int64_t p = 0; p < s; ++p) {
          const int64_t from = p < length ? src[static_cast<std::size_t>(r)] : r;
          EXPECT_EQ(
              0, std::memcmp(static_cast<char*>(now->data()) + (r * s + p) * row,
                             static_cast<char*>(before->data()) + (from * s + p) * row, static_cast<std::size_t>(row)))
              << "slot " << r << " position " << p;
        }
      }
    }
  }
}

TEST(KvRowsAmax, PerHeadAndPerTensorMaxima) {
  const Qkv x = make_qkv(7, 2, 3, 16, 5);
  Tensor per_head = Tensor::zeros(DType::F32, {3}), all = Tensor::zeros(DType::F32, {1});
  cpu::kv_rows_amax(x.k(), per_head.view());
  cpu::kv_rows_amax(x.k(), all.view());
  float want_all = 0;
  for (int64_t h = 0; h < 3; ++h) {
    float want = 0;
    for (int64_t t = 0; t < 7; ++t) {
      for (int64_t c = 0; c < 16; ++c) {
        want = std::max(want, std::abs(bf16_bits_to_float(x.k().ptr<uint16_t>()[t * x.k().strides[0] + h * 16 + c])));
      }
    }
    EXPECT_EQ(per_head.ptr<float>()[h], want) << "head " << h;
    want_all = std::max(want_all, want);
  }
  EXPECT_EQ(all.ptr<float>()[0], want_all);
  // Accumulates: a larger existing amax stays.
  all.ptr<float>()[0] = 1000.0f;
  cpu::kv_rows_amax(x.k(), all.view());
  EXPECT_EQ(all.ptr<float>()[0], 1000.0f);
}

TEST(KvCacheArgs, ErrorsNameTheProblem) {
  const Qkv x = make_qkv(2, 2, 1, 8, 7);
  Tensor kc = Tensor::zeros(DType::BF16, {2, 4, 1, 8}), vc = Tensor::zeros(DType::BF16, {2, 4, 1, 8});
  const KvCache cache{kc.view(), vc.view(), {}, {}};
  const Tensor slots = i32({0, 1}), pos = i32({0, 1}), short_pos = i32({0});
  auto message = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] {
              cpu::kv_cache_write(x.k(), x.v(), slots.view(), short_pos.view(), cache, {}, {});
            }).find("positions"),
            std::string::npos);
  EXPECT_NE(message([&] { cpu::kv_cache_write(x.q(), x.v(), slots.view(), pos.view(), cache, {}, {}); }).find("k"),
            std::string::npos);
  const Tensor bad_src = i32({0, 5});
  Tensor scratch = Tensor::empty(DType::U8, {1024});
  EXPECT_NE(message([&] { cpu::kv_cache_reorder(cache, bad_src.view(), 2, scratch.view()); }).find("src[1]"),
            std::string::npos);
  EXPECT_NE(message([&] {
              cpu::kv_cache_reorder(cache, slots.view(), 2, Tensor::empty(DType::U8, {8}).view());
            }).find("scratch"),
            std::string::npos);
}

}  // namespace
}  // namespace tg::kernels
