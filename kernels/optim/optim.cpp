#include "kernels/optim/optim.h"

#include <cmath>
#include <cstring>

#include "common/check.h"
#include "kernels/optim/optim_table.h"

namespace tg::kernels {

namespace optim_detail {

namespace {
void check_vec(const TensorView& t, int64_t n, DType dtype, Device device, const char* what, std::size_t i,
               const char* name) {
  TG_CHECK(!t.empty(), what, ": parameter ", i, ": ", name, " is missing");
  TG_CHECK(t.dtype == dtype, what, ": parameter ", i, ": ", name, " must be ", dtype, ", got ", t.dtype);
  TG_CHECK(t.numel() == n, what, ": parameter ", i, ": ", name, " has ", t.numel(), " elements, the param ", n);
  TG_CHECK(t.is_contiguous(), what, ": parameter ", i, ": ", name, " must be contiguous, got ", t.describe());
  TG_CHECK(t.device == device, what, ": parameter ", i, ": ", name, " is on ", t.device, ", the table on ", device);
}
}  // namespace

HostScalars host_scalars(const AdamWHyper& h) {
  HostScalars s;
  s.lr = h.lr;
  s.beta1 = h.beta1;
  s.beta2 = h.beta2;
  s.decay_factor = static_cast<float>(1.0 - h.lr * h.weight_decay);
  s.one_minus_b1 = static_cast<float>(1.0 - h.beta1);
  s.b2 = static_cast<float>(h.beta2);
  s.one_minus_b2 = static_cast<float>(1.0 - h.beta2);
  s.eps = static_cast<float>(h.eps);
  s.max_grad_norm = h.max_grad_norm;
  return s;
}

void check_step_args(const AdamWTable& table, const AdamWHyper& h, const TensorView& state, const TensorView& status,
                     const TensorView& workspace, Device device, const char* what) {
  TG_CHECK(!table.params().empty(), what, ": the AdamW table is empty");
  TG_CHECK(table.device() == device, what, ": the table lives on ", table.device(), ", expected ", device);
  TG_CHECK(std::isfinite(h.lr) && h.lr >= 0, what, ": lr must be finite and >= 0, got ", h.lr);
  TG_CHECK(h.beta1 >= 0 && h.beta1 < 1 && h.beta2 >= 0 && h.beta2 < 1, what, ": betas must be in [0, 1), got ",
           h.beta1, " and ", h.beta2);
  TG_CHECK(std::isfinite(h.eps) && h.eps > 0, what, ": eps must be finite and > 0, got ", h.eps);
  TG_CHECK(std::isfinite(h.weight_decay) && h.weight_decay >= 0, what, ": weight_decay must be >= 0, got ",
           h.weight_decay);
  TG_CHECK(std::isfinite(h.max_grad_norm), what, ": max_grad_norm must be finite, got ", h.max_grad_norm);
  TG_CHECK(!state.empty() && state.dtype == DType::F64 && state.numel() == 3 && state.is_contiguous(), what,
           ": state must be a contiguous F64 [3] {step, beta1^step, beta2^step}, got ", state.describe());
  TG_CHECK(!status.empty() && status.dtype == DType::F32 && status.numel() == 4 && status.is_contiguous(), what,
           ": status must be a contiguous F32 [4], got ", status.describe());
  TG_CHECK(!workspace.empty() && workspace.dtype == DType::F64 && workspace.numel() >= table.num_chunks() &&
               workspace.is_contiguous(),
           what, ": workspace must be a contiguous F64 [>= ", table.num_chunks(), "] (adamw_workspace), got ",
           workspace.describe());
  check_device(state, device, what);
  check_device(status, device, what);
  check_device(workspace, device, what);
}

void check_accumulate_args(const TensorView& dst, const TensorView& src, Device device, const char* what) {
  TG_CHECK(!dst.empty() && dst.dtype == DType::F32 && dst.is_contiguous(), what,
           ": dst must be a contiguous F32 tensor, got ", dst.describe());
  TG_CHECK(!src.empty() && (src.dtype == DType::F32 || src.dtype == DType::BF16) && src.is_contiguous(), what,
           ": src must be a contiguous F32 or BF16 tensor, got ", src.describe());
  TG_CHECK(src.numel() == dst.numel(), what, ": src has ", src.numel(), " elements, dst ", dst.numel());
  check_device(dst, device, what);
  check_device(src, device, what);
}

}  // namespace optim_detail

AdamWTable::AdamWTable(std::vector<AdamWParam> params) : params_(std::move(params)) {
  TG_CHECK(!params_.empty(), "AdamWTable: no parameters");
  device_ = params_[0].param.device;
  std::vector<optim_detail::Entry> entries;
  std::vector<optim_detail::Chunk> chunks;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    const AdamWParam& p = params_[i];
    TG_CHECK(!p.param.empty(), "AdamWTable: parameter ", i, ": param is missing");
    const int64_t n = p.param.numel();
    TG_CHECK(n >= 1, "AdamWTable: parameter ", i, " is empty");
    optim_detail::check_vec(p.param, n, DType::F32, device_, "AdamWTable", i, "param");
    optim_detail::check_vec(p.grad, n, DType::F32, device_, "AdamWTable", i, "grad");
    optim_detail::check_vec(p.exp_avg, n, DType::F32, device_, "AdamWTable", i, "exp_avg");
    optim_detail::check_vec(p.exp_avg_sq, n, DType::F32, device_, "AdamWTable", i, "exp_avg_sq");
    if (!p.copy.empty()) optim_detail::check_vec(p.copy, n, DType::BF16, device_, "AdamWTable", i, "copy");
    entries.push_back({p.param.ptr<float>(), p.grad.ptr<float>(), p.exp_avg.ptr<float>(), p.exp_avg_sq.ptr<float>(),
                       p.copy.empty() ? nullptr : p.copy.ptr<uint16_t>(), n, p.decay ? 1 : 0, 0});
    for (int64_t b = 0; b < n; b += kAdamWChunk) chunks.push_back({static_cast<int64_t>(i), b});
  }
  chunks_ = static_cast<int64_t>(chunks.size());
  const std::size_t eb = entries.size() * sizeof(optim_detail::Entry), cb = chunks.size() * sizeof(optim_detail::Chunk);
  Tensor host = Tensor::empty(DType::U8, {static_cast<int64_t>(eb + cb)});
  std::memcpy(host.data(), entries.data(), eb);
  std::memcpy(static_cast<char*>(host.data()) + eb, chunks.data(), cb);
  table_ = host.to(device_);
}

Tensor adamw_initial_state(Device device) {
  Tensor s = Tensor::empty(DType::F64, {3});
  s.ptr<double>()[0] = 0.0;
  s.ptr<double>()[1] = 1.0;
  s.ptr<double>()[2] = 1.0;
  return s.to(device);
}

Tensor adamw_workspace(const AdamWTable& table) {
  return Tensor::zeros(DType::F64, {std::max<int64_t>(table.num_chunks(), 1)}, table.device());
}

void adamw_step(const AdamWTable& table, const AdamWHyper& hyper, const TensorView& state, const TensorView& status,
                const TensorView& workspace, Stream stream) {
  if (table.device() == Device::CPU) return cpu::adamw_step(table, hyper, state, status, workspace);
#if TEGEMMA_HAVE_CUDA
  cuda::adamw_step(table, hyper, state, status, workspace, stream);
#else
  (void)stream;
  TG_FAIL("adamw_step: CUDA tensors in a build without CUDA");
#endif
}

void accumulate(const TensorView& dst, const TensorView& src, Stream stream) {
  if (dst.device == Device::CPU) return cpu::accumulate(dst, src);
#if TEGEMMA_HAVE_CUDA
  cuda::accumulate(dst, src, stream);
#else
  (void)stream;
  TG_FAIL("accumulate: CUDA tensors in a build without CUDA");
#endif
}

}  // namespace tg::kernels
