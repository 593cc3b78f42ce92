#include "impl/kv_cache.h"

#include "common/check.h"
#include "impl/buffers.h"
#include "kernels/recipe/recipe.h"

namespace tg::impl {

DType parse_kv_cache_dtype(const std::string& s) {
  if (s == "bf16") return DType::BF16;
  if (s == "fp8") return DType::E4M3;
  TG_FAIL("kv cache: expected bf16 or fp8, got '", s, "'");
}

KvCacheSet::KvCacheSet(const GemmaConfig& cfg, const KvCacheOptions& opts, Device device)
    : opts_(opts), device_(device), kv_heads_(cfg.num_key_value_heads), head_dim_(cfg.head_dim) {
  if (opts_.max_seq == 0) opts_.max_seq = cfg.max_position_embeddings;
  TG_CHECK(opts_.max_batch >= 1, "KvCacheSet: max_batch must be >= 1, got ", opts_.max_batch);
  TG_CHECK(opts_.max_seq >= 1 && opts_.max_seq <= cfg.max_position_embeddings, "KvCacheSet: max_seq must be in [1, ",
           "max_position_embeddings = ", cfg.max_position_embeddings, "], got ", opts_.max_seq);
  TG_CHECK(opts_.dtype == DType::BF16 || opts_.dtype == DType::E4M3, "KvCacheSet: the cache dtype must be BF16 or ",
           "F8_E4M3, got ", opts_.dtype);
  TG_CHECK(opts_.headroom >= 1.0f && opts_.headroom <= 64.0f, "KvCacheSet: headroom must be in [1, 64], got ",
           opts_.headroom);
  const Shape shape{opts_.max_batch, opts_.max_seq, kv_heads_, head_dim_};
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    k_.push_back(Tensor::zeros(opts_.dtype, shape, device));
    v_.push_back(Tensor::zeros(opts_.dtype, shape, device));
  }
  if (fp8()) {
    scale_slots_ = opts_.per_head_scale ? kv_heads_ : 1;
    const Shape s{cfg.num_hidden_layers, 2, scale_slots_};
    amax_ = Tensor::zeros(DType::F32, s, device);
    scratch_ = Tensor::zeros(DType::F32, s, device);
    Tensor ones = Tensor::empty(DType::F32, s, Device::CPU);
    for (int64_t i = 0; i < ones.numel(); ++i) ones.ptr<float>()[i] = 1.0f;
    scales_ = ones.to(device);
  }
}

std::size_t KvCacheSet::bytes() const {
  std::size_t n = 0;
  for (const Tensor& t : k_) n += t.nbytes();
  for (const Tensor& t : v_) n += t.nbytes();
  if (fp8()) n += amax_.nbytes() + scales_.nbytes() + scratch_.nbytes();
  return n;
}

namespace {
TensorView row_of(const Tensor& t, int64_t l) {
  const int64_t per = t.shape()[1] * t.shape()[2];
  return TensorView(t.ptr<float>() + l * per, DType::F32, Shape{t.shape()[1], t.shape()[2]}, t.device());
}
}  // namespace

kernels::KvCache KvCacheSet::layer(int64_t l, int64_t batch) const {
  TG_CHECK(l >= 0 && l < layers(), "KvCacheSet: layer ", l, " outside [0, ", layers(), ")");
  TG_CHECK(batch >= 1 && batch <= opts_.max_batch, "KvCacheSet: ", batch, " sequences do not fit the cache's ",
           opts_.max_batch, " slots (GeneratorOptions::max_batch)");
  kernels::KvCache c;
  c.k = k_[static_cast<std::size_t>(l)].view().slice_rows(0, batch);
  c.v = v_[static_cast<std::size_t>(l)].view().slice_rows(0, batch);
  if (fp8()) {
    const TensorView s = row_of(scales_, l);
    c.k_scale = TensorView(s.data, DType::F32, Shape{scale_slots_}, device_);
    c.v_scale = TensorView(s.ptr<float>() + scale_slots_, DType::F32, Shape{scale_slots_}, device_);
  }
  return c;
}

TensorView KvCacheSet::amax(int64_t l) const {
  TG_CHECK(fp8(), "KvCacheSet::amax: a BF16 cache has no scales");
  return row_of(amax_, l);
}
TensorView KvCacheSet::scales(int64_t l) const {
  TG_CHECK(fp8(), "KvCacheSet::scales: a BF16 cache has no scales");
  return row_of(scales_, l);
}
TensorView KvCacheSet::scale_scratch(int64_t l) const {
  TG_CHECK(fp8(), "KvCacheSet::scale_scratch: a BF16 cache has no scales");
  return row_of(scratch_, l);
}

kernels::ScaleRule KvCacheSet::rule() const {
  kernels::ScaleRule r;
  r.fp8_max = 448.0f / opts_.headroom;
  return r;
}

void KvCacheSet::update_scales(int64_t l, Stream stream) const {
  const int64_t n = 2 * scale_slots_;
  kernels::current_scaling_scale(amax(l).reshape({n}), scale_scratch(l).reshape({n}), scales(l).reshape({n}), rule(),
                                 stream);
}

void KvCacheSet::begin_calibration(Stream stream) {
  TG_CHECK(fp8(), "KvCacheSet: only an FP8 cache is calibrated");
  zero_async(amax_.view(), stream);
  calibrated_ = false;
}

void KvCacheSet::finish_calibration(Stream stream) {
  TG_CHECK(fp8(), "KvCacheSet: only an FP8 cache is calibrated");
  const int64_t n = amax_.numel();
  kernels::current_scaling_scale(amax_.view().reshape({n}), scratch_.view().reshape({n}), scales_.view().reshape({n}),
                                 rule(), stream);
  calibrated_ = true;
}

std::size_t KvCacheSet::reorder_scratch_bytes(int64_t batch, int64_t length) const {
  return static_cast<std::size_t>(batch * length * kv_heads_ * head_dim_) * dtype_size(opts_.dtype);
}

}  // namespace tg::impl
