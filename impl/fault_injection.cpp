#include "impl/fault_injection.h"

#include <cstdlib>

#include "common/args.h"
#include "common/check.h"
#include "common/numeric.h"
#include "impl/buffers.h"

namespace tg::impl {

namespace {

constexpr const char* kForms = "rmsnorm_w|rope_swap|fp8_scale_x2[:layer=N]";

const char* kind_name(FaultInjection::Kind k) {
  switch (k) {
    case FaultInjection::Kind::kNone:
      return "none";
    case FaultInjection::Kind::kRmsNormWeight:
      return "rmsnorm_w";
    case FaultInjection::Kind::kRopeSwap:
      return "rope_swap";
    case FaultInjection::Kind::kFp8ScaleX2:
      return "fp8_scale_x2";
  }
  return "?";
}

// Applies `fn` to a host copy of the F32/BF16 tensor `t` (as floats) and writes the result back.
template <typename Fn>
void rewrite(const TensorView& t, Fn fn) {
  Tensor host = Tensor::copy_of(t, Device::CPU);
  if (t.dtype == DType::F32) {
    for (int64_t i = 0; i < host.numel(); ++i) host.ptr<float>()[i] = fn(host.ptr<float>()[i]);
  } else {
    TG_CHECK(t.dtype == DType::BF16, "fault injection: expected an F32 or BF16 tensor, got ", t.describe());
    for (int64_t i = 0; i < host.numel(); ++i) {
      uint16_t& b = host.ptr<uint16_t>()[i];
      b = float_to_bf16_bits(fn(bf16_bits_to_float(b)));
    }
  }
  copy_bytes(t, host.view());
}

}  // namespace

std::string FaultInjection::to_string() const {
  if (!active()) return "none";
  return std::string(kind_name(kind)) + ":layer=" + std::to_string(layer);
}

FaultInjection FaultInjection::parse(std::string_view spec) {
  FaultInjection f;
  if (spec.empty() || spec == "none") return f;
  const std::size_t colon = spec.find(':');
  const std::string_view name = spec.substr(0, colon);
  for (Kind k : {Kind::kRmsNormWeight, Kind::kRopeSwap, Kind::kFp8ScaleX2}) {
    if (name == kind_name(k)) f.kind = k;
  }
  TG_CHECK(f.active(), "fault injection '", spec, "': unknown fault '", name, "' (expected ", kForms, ")");
  if (colon == std::string_view::npos) return f;
  const std::string_view opt = spec.substr(colon + 1);
  TG_CHECK(opt.starts_with("layer="), "fault injection '", spec, "': unknown option '", opt, "' (expected ", kForms,
           ")");
  const auto layer = parse_int(opt.substr(6));
  TG_CHECK(layer && *layer >= 0, "fault injection '", spec, "': layer must be an integer >= 0, got '", opt.substr(6),
           "'");
  f.layer = *layer;
  return f;
}

FaultInjection FaultInjection::from_env() {
  const char* v = std::getenv(kEnvVar);
  try {
    return parse(v ? v : "");
  } catch (const Error& e) {
    TG_FAIL(kEnvVar, ": ", e.what());
  }
}

void inject_weight_fault(const FaultInjection& f, ModelWeights& w, Stream stream) {
  if (!f.active()) return;
  sync_stream(stream);  // the weights may still be being written on the model's stream
  const auto layers = static_cast<int64_t>(w.layers.size());
  TG_CHECK(f.layer < layers, "fault injection ", f.to_string(), ": the model has ", layers, " layers [0, ", layers,
           ")");
  if (f.kind != FaultInjection::Kind::kRmsNormWeight) return;
  LayerWeights& l = w.layers[static_cast<std::size_t>(f.layer)];
  for (const Tensor* norm : {&l.input_norm, &l.post_attention_norm}) {
    rewrite(norm->view(), [](float x) { return x - 1.0f; });  // the kernel's 1 + (w - 1) = w
  }
}

void inject_scale_fault(const FaultInjection& f, ModelWeights& w, Stream stream) {
  if (f.kind != FaultInjection::Kind::kFp8ScaleX2) return;
  sync_stream(stream);
  LinearWeight& fc2 = w.layers.at(static_cast<std::size_t>(f.layer)).fc2;
  if (!fc2.has_fp8) return;  // bf16: no scale to get wrong
  rewrite(fc2.fp8_view().scale_inv, [](float x) { return 2.0f * x; });
}

Tensor faulty_rope_table(const TensorView& inv_freq) {
  Tensor t = Tensor::copy_of(inv_freq, inv_freq.device);
  rewrite(t.view(), [](float x) { return -x; });
  return t;
}

}  // namespace tg::impl
