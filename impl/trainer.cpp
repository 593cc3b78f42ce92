#include "impl/trainer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>  // renameat2, RENAME_EXCHANGE (glibc >= 2.28, _GNU_SOURCE: g++'s default)
#include <cstring>
#include <limits>
#include <numbers>

#include "common/check.h"
#include "common/file_io.h"
#include "common/nvtx.h"
#include "common/safetensors.h"
#include "kernels/gemm/gemm.h"
#include "kernels/loss/loss.h"

namespace tg::impl {

namespace {

constexpr const char* kFormat = "tegemma-train-checkpoint";
constexpr int kVersion = 1;

std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

uint64_t checksum(const TensorView& host) {
  return fnv1a64(std::span<const uint8_t>(static_cast<const uint8_t*>(host.data), host.nbytes()));
}

// Rows [r0, r1) of the fused parameter p inside a host copy of a flat F32 buffer whose device original
// starts at `device_base`.
TensorView host_rows(const Tensor& host_flat, const Tensor& device_flat, const TensorView& device_view, int64_t r0,
                     int64_t r1) {
  const int64_t offset = static_cast<const float*>(device_view.data) - static_cast<const float*>(device_flat.data());
  const int64_t cols = device_view.ndim() == 1 ? 1 : device_view.shape[1];
  Shape shape = device_view.shape;
  shape[0] = r1 - r0;
  return TensorView(host_flat.ptr<float>() + offset + r0 * cols, DType::F32, shape, Device::CPU);
}

// fsync of a directory: makes the renames inside it durable (a power loss after save_checkpoint returns keeps
// the new checkpoint and the files in it).
void fsync_dir(const std::filesystem::path& d) {
  const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  TG_CHECK(fd >= 0, "cannot open directory '", d.string(), "': ", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  TG_CHECK(rc == 0, "cannot flush directory '", d.string(), "': ", std::strerror(err));
}

// Renames the finished temporary directory to `dir`. When `dir` already exists (a second save of the same
// step) the two are swapped atomically, so `dir` -- which out/checkpoints/latest may name -- is never missing;
// only where the file system cannot swap is the old one removed first.
void move_into_place(const std::filesystem::path& tmp, const std::filesystem::path& dir) {
  if (::rename(tmp.c_str(), dir.c_str()) == 0) return;
  TG_CHECK(errno == ENOTEMPTY || errno == EEXIST, "cannot rename '", tmp.string(), "' to '", dir.string(),
           "': ", std::strerror(errno));
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dir.c_str(), RENAME_EXCHANGE) == 0) {
    tg::remove_tree(tmp);  // now the old checkpoint
    return;
  }
  tg::remove_tree(dir);
  TG_CHECK(::rename(tmp.c_str(), dir.c_str()) == 0, "cannot rename '", tmp.string(), "' to '", dir.string(),
           "': ", std::strerror(errno));
}

nlohmann::json options_json(const TrainOptions& o) {
  return {{"lr", o.lr},
          {"warmup_steps", o.warmup_steps},
          {"total_steps", o.total_steps},
          {"min_lr_ratio", o.min_lr_ratio},
          {"beta1", o.adamw.beta1},
          {"beta2", o.adamw.beta2},
          {"eps", o.adamw.eps},
          {"weight_decay", o.adamw.weight_decay},
          {"max_grad_norm", o.adamw.max_grad_norm},
          {"grad_accum_steps", o.grad_accum_steps},
          {"deterministic", o.deterministic}};
}

// A safetensors file's tensor into `dst` (host, F32/F64 as stored), checking dtype, shape and checksum.
void load_into(const SafetensorsFile& f, const std::string& name, const TensorView& dst,
               const nlohmann::json& checksums, const std::string& key) {
  const SafetensorsEntry* e = f.find(name);
  TG_CHECK(e != nullptr, "checkpoint ", f.path().string(), ": missing tensor ", name);
  TG_CHECK(e->dtype && *e->dtype == dst.dtype, "checkpoint ", f.path().string(), ": tensor ", name, " is ",
           e->dtype_name, ", expected ", dst.dtype);
  TG_CHECK(e->shape == dst.shape.vec(), "checkpoint ", f.path().string(), ": tensor ", name, " has shape ",
           Shape(std::span<const int64_t>(e->shape)), ", the model needs ", dst.shape);
  const std::span<const uint8_t> bytes = f.bytes(*e);
  TG_CHECK(checksums.contains(key), "checkpoint ", f.path().string(), ": trainer_state.json has no checksum for ",
           key);
  const std::string want = checksums[key].get<std::string>();
  const std::string got = hex64(fnv1a64(bytes));
  TG_CHECK(got == want, "checkpoint ", f.path().string(), ": tensor ", name, " is corrupt (checksum ", got,
           ", trainer_state.json records ", want, ")");
  std::memcpy(dst.data, bytes.data(), bytes.size());
}

}  // namespace

double learning_rate(const TrainOptions& o, int64_t step) {
  // transformers' _get_cosine_schedule_with_warmup_lr_lambda (num_cycles 0.5) and the min-lr variant: the
  // reference trainer's lr_multiplier, line by line.
  double factor;
  if (step < o.warmup_steps) {
    factor = static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, o.warmup_steps));
  } else {
    const double progress = static_cast<double>(step - o.warmup_steps) /
                            static_cast<double>(std::max<int64_t>(1, o.total_steps - o.warmup_steps));
    factor = 0.5 * (1.0 + std::cos(std::numbers::pi * 0.5 * 2.0 * progress));
    if (o.min_lr_ratio > 0.0) factor = factor * (1.0 - o.min_lr_ratio) + o.min_lr_ratio;
    factor = std::max(0.0, factor);
  }
  return o.lr * factor;
}

int64_t TrainBatch::num_targets() const {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != kernels::kIgnoreIndex; });
}

TrainBatch TrainBatch::from_windows(const TokenBatch& b) {
  TG_CHECK(b.rows >= 1 && b.seq >= 1, "TrainBatch::from_windows: empty batch (", b.rows, " rows of ", b.seq, ")");
  const std::vector<int32_t> in = b.inputs();
  std::vector<std::vector<int64_t>> prompts(static_cast<std::size_t>(b.rows));
  for (int64_t r = 0; r < b.rows; ++r) {
    prompts[static_cast<std::size_t>(r)].assign(in.begin() + r * b.seq, in.begin() + (r + 1) * b.seq);
  }
  TrainBatch t;
  t.batch = Batch::from_prompts(prompts);
  t.targets = b.targets();
  return t;
}

Trainer::Trainer(GemmaForCausalLM model, const TrainOptions& opts) : model_(std::move(model)), opts_(opts) {
  TG_CHECK(opts_.grad_accum_steps >= 1, "Trainer: grad_accum_steps must be >= 1, got ", opts_.grad_accum_steps);
  TG_CHECK(std::isfinite(opts_.lr) && opts_.lr >= 0, "Trainer: lr must be finite and >= 0, got ", opts_.lr);
  TG_CHECK(opts_.warmup_steps >= 0 && opts_.total_steps >= 1, "Trainer: invalid schedule (warmup ",
           opts_.warmup_steps, ", total ", opts_.total_steps, ")");
  TG_CHECK(!model_.options().fp8_lm_head, "Trainer: training runs the tied lm_head in BF16; build the model ",
           "without fp8_lm_head");
  TG_CHECK(model_.weights().storage == WeightStorage::kMaster, "Trainer: the model holds FP8-only weights; ",
           "training needs master storage");
  if (opts_.deterministic) kernels::set_gemm_deterministic(true);
  const Recipe& recipe = model_.options().recipe;
  model_.precision().set_training(true);
  // dgrad reads W^T: the TN-only FP8 GEMMs need the transposed copies (made once; refreshed in place).
  if (recipe.is_fp8()) quantize_weights(model_.weights(), recipe, false, /*columnwise=*/true, model_.options().stream);
  optimizer_ = std::make_unique<Optimizer>(model_, opts_.adamw);
  log_ = Tensor::zeros(DType::F32, {5}, model_.options().device);
}

StepResult Trainer::step(const std::vector<TrainBatch>& micro_batches) {
  TG_NVTX_FN();
  TG_CHECK(static_cast<int64_t>(micro_batches.size()) == opts_.grad_accum_steps, "Trainer::step: expected ",
           opts_.grad_accum_steps, " micro-batches (grad_accum_steps), got ", micro_batches.size());
  StepResult r;
  for (const TrainBatch& mb : micro_batches) {
    r.targets += mb.num_targets();
    r.tokens += mb.batch.num_tokens();
  }
  TG_CHECK(r.targets > 0, "Trainer::step: the micro-batches have no targets (all -100?)");
  const Stream stream = model_.options().stream;
  const TensorView loss = log_.view().slice_rows(0, 1);
  optimizer_->zero_grads();
  zero_async(loss, stream);
  const float scale = static_cast<float>(1.0 / static_cast<double>(r.targets));
  for (const TrainBatch& mb : micro_batches) {
    model_.forward_backward(mb.batch, mb.targets, scale, optimizer_->grads(), loss);
  }
  model_.precision().update_forward(stream);
  model_.precision().update_backward(stream);
  if (steps_ == opts_.inject_nan_grad_at_step) {  // TEST-ONLY (TrainOptions)
    static const float nan = std::numeric_limits<float>::quiet_NaN();
    copy_async(optimizer_->grads().final_norm.slice_rows(0, 1), TensorView(const_cast<float*>(&nan), DType::F32, {1}),
               stream);
  }
  r.step = steps_;
  r.lr = learning_rate(opts_, steps_);
  optimizer_->step(r.lr);
  copy_async(log_.view().slice_rows(1, 5), optimizer_->status().view(), stream);
  sync_stream(stream);  // the step's one synchronisation
  const Tensor host = log_.to(Device::CPU);
  r.loss = host.ptr<float>()[0];
  r.grad_norm = host.ptr<float>()[1];
  r.clip_coef = host.ptr<float>()[2];
  r.skipped = host.ptr<float>()[3] != 0.0f;
  ++steps_;
  return r;
}

double Trainer::eval_loss(const std::vector<TrainBatch>& batches) {
  TG_NVTX_FN();
  int64_t n = 0;
  for (const TrainBatch& b : batches) n += b.num_targets();
  TG_CHECK(n > 0, "Trainer::eval_loss: no targets");
  Tensor sum = Tensor::zeros(DType::F32, {1}, model_.options().device);
  const float scale = static_cast<float>(1.0 / static_cast<double>(n));
  for (const TrainBatch& b : batches) model_.loss(b.batch, b.targets, scale, sum.view());
  sync_stream(model_.options().stream);
  return sum.to(Device::CPU).ptr<float>()[0];
}

nlohmann::json Trainer::fp8_stats() const {
  nlohmann::json out = nlohmann::json::object();
  const Recipe& recipe = model_.options().recipe;
  if (!recipe.is_fp8()) return out;
  sync_stream(model_.options().stream);
  const ModelWeights& w = model_.weights();
  const int64_t last = static_cast<int64_t>(w.layers.size()) - 1;
  // Weights (every FP8 recipe): per-tensor scale and amax; block scaling: the largest block scale_inv.
  for (const LinearWeight* lin : {&w.layers.front().qkv, &w.layers[static_cast<std::size_t>(last)].fc2}) {
    const Fp8View& v = lin->fp8_view();
    if (v.mode == ScalingMode::kPerTensor) {
      out[lin->name + ".weight.scale"] = Tensor::copy_of(v.scale, Device::CPU).ptr<float>()[0];
      out[lin->name + ".weight.amax"] = Tensor::copy_of(v.amax, Device::CPU).ptr<float>()[0];
    } else {
      const Tensor s = Tensor::copy_of(v.scale_inv, Device::CPU);
      out[lin->name + ".weight.max_block_scale_inv"] = *std::max_element(s.ptr<float>(), s.ptr<float>() + s.numel());
    }
  }
  // Delayed scaling: the state's scale and window amax of a few activations and gradients.
  const DelayedScalingState* st = model_.precision().delayed();
  if (st == nullptr) return out;
  const std::vector<std::string> wanted{"layers.0.qkv.input", "layers." + std::to_string(last) + ".fc2.input",
                                        "layers.0.qkv.grad_output",
                                        "layers." + std::to_string(last) + ".fc2.grad_output"};
  const Tensor scales = Tensor::copy_of(st->scales(), Device::CPU);
  const Tensor hist = Tensor::copy_of(st->amax_histories(), Device::CPU);
  for (const ScalingDir dir : {ScalingDir::kForward, ScalingDir::kBackward}) {
    const int count = dir == ScalingDir::kForward ? st->num_forward() : st->num_backward();
    for (int i = 0; i < count; ++i) {
      const ScalingRef ref{dir, i};
      if (std::find(wanted.begin(), wanted.end(), st->name(ref)) == wanted.end()) continue;
      const int64_t row = st->row(ref), len = st->history_len();
      const float* h = hist.ptr<float>() + row * len;
      out[st->name(ref) + ".scale"] = scales.ptr<float>()[row];
      out[st->name(ref) + ".amax"] = *std::max_element(h, h + len);
    }
  }
  return out;
}

void Trainer::save_checkpoint(const std::filesystem::path& dir, const nlohmann::json& meta) const {
  TG_NVTX_FN();
  namespace fs = std::filesystem;
  sync_stream(model_.options().stream);
  const Optimizer& opt = *optimizer_;
  const fs::path tmp = dir.string() + ".tmp-" + std::to_string(::getpid());
  tg::remove_tree(tmp);
  fs::create_directories(tmp);
  nlohmann::json sums = nlohmann::json::object();

  // Host copies of the flat buffers (the writers keep views until write()).
  const Tensor master = opt.masters().to(Device::CPU), m = opt.exp_avg().to(Device::CPU),
               v = opt.exp_avg_sq().to(Device::CPU), adam = opt.adam_state().to(Device::CPU);
  SafetensorsWriter wm, wo;
  for (const Parameter& p : opt.parameters()) {
    for (const Parameter::HfSlice& hf : p.hf) {
      const TensorView vm = host_rows(master, opt.masters(), p.master, hf.row_begin, hf.row_end);
      wm.add(hf.name, vm);
      sums["model.safetensors/" + hf.name] = hex64(checksum(vm));
      const TensorView va = host_rows(m, opt.exp_avg(), p.exp_avg, hf.row_begin, hf.row_end);
      const TensorView vs = host_rows(v, opt.exp_avg_sq(), p.exp_avg_sq, hf.row_begin, hf.row_end);
      wo.add("exp_avg." + hf.name, va);
      wo.add("exp_avg_sq." + hf.name, vs);
      sums["optimizer.safetensors/exp_avg." + hf.name] = hex64(checksum(va));
      sums["optimizer.safetensors/exp_avg_sq." + hf.name] = hex64(checksum(vs));
    }
  }
  wo.add("adam_state", adam.view());
  sums["optimizer.safetensors/adam_state"] = hex64(checksum(adam.view()));
  wm.write(tmp / "model.safetensors");
  wo.write(tmp / "optimizer.safetensors");
  if (opts_.hang_in_checkpoint_at_step >= 0 && steps_ == opts_.hang_in_checkpoint_at_step) {
    std::fprintf(stderr, "tegemma train: TEST-ONLY: hanging inside the checkpoint write of step %lld (%s)\n",
                 static_cast<long long>(steps_), tmp.c_str());
    std::fflush(stderr);
    for (;;) ::pause();  // until SIGKILL (SIGINT only sets the training loop's flag)
  }
  GemmaConfig cfg = model_.config();
  cfg.torch_dtype = "float32";
  write_file_atomic(tmp / "config.json", cfg.to_json_text());

  const DelayedScalingState* st = model_.precision().delayed();
  std::vector<Tensor> keep;
  if (st != nullptr) {
    SafetensorsWriter ws;
    nlohmann::json names = nlohmann::json::array();
    for (int i = 0; i < st->num_forward(); ++i) names.push_back(st->name({ScalingDir::kForward, i}));
    for (int i = 0; i < st->num_backward(); ++i) names.push_back(st->name({ScalingDir::kBackward, i}));
    ws.add_metadata("rows", names.dump());
    for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"amax_history", &st->amax_histories()},
                                  {"scale", &st->scales()}, {"scale_inv", &st->scale_invs()}}) {
      keep.push_back(t->to(Device::CPU));
      ws.add(name, keep.back().view());
      sums[std::string("scaling.safetensors/") + name] = hex64(checksum(keep.back().view()));
    }
    ws.write(tmp / "scaling.safetensors");
  }

  nlohmann::json state = {{"format", kFormat},
                          {"version", kVersion},
                          {"steps_done", steps_},
                          {"recipe", model_.options().recipe.to_string()},
                          {"config", nlohmann::json::parse(cfg.to_json_text())},
                          {"train_options", options_json(opts_)},
                          {"meta", meta},
                          {"checksums", sums}};
  write_file_atomic(tmp / "trainer_state.json", state.dump(2) + "\n");
  fsync_dir(tmp);
  move_into_place(tmp, dir);
  fsync_dir(dir.has_parent_path() ? dir.parent_path() : fs::path("."));
}

nlohmann::json Trainer::load_checkpoint(const std::filesystem::path& dir) {
  TG_NVTX_FN();
  const std::filesystem::path state_path = dir / "trainer_state.json";
  TG_CHECK(std::filesystem::exists(state_path), "checkpoint '", dir.string(), "': no trainer_state.json (not a ",
           "training checkpoint)");
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_file(state_path));
  } catch (const nlohmann::json::exception& e) {
    TG_FAIL("checkpoint ", state_path.string(), ": not valid JSON (", e.what(), ")");
  }
  TG_CHECK(state.value("format", "") == kFormat && state.value("version", 0) == kVersion, "checkpoint ",
           state_path.string(), ": expected format '", kFormat, "' version ", kVersion);
  GemmaConfig cfg = GemmaConfig::from_json_text(state["config"].dump(), state_path.string());
  GemmaConfig mine = model_.config();
  cfg.torch_dtype = mine.torch_dtype;
  TG_CHECK(cfg == mine, "checkpoint ", state_path.string(), ": it was written for another model config");
  const std::string recipe = state.value("recipe", "");
  TG_CHECK(recipe == model_.options().recipe.to_string(), "checkpoint ", state_path.string(), ": written under '",
           recipe, "', this run is '", model_.options().recipe.to_string(), "'");
  const nlohmann::json& sums = state["checksums"];

  Optimizer& opt = *optimizer_;
  Tensor master = Tensor::empty(DType::F32, {opt.num_elements()}), m = Tensor::empty(DType::F32, {opt.num_elements()}),
         v = Tensor::empty(DType::F32, {opt.num_elements()}), adam = Tensor::empty(DType::F64, {3});
  const SafetensorsFile fm(dir / "model.safetensors"), fo(dir / "optimizer.safetensors");
  for (const Parameter& p : opt.parameters()) {
    for (const Parameter::HfSlice& hf : p.hf) {
      load_into(fm, hf.name, host_rows(master, opt.masters(), p.master, hf.row_begin, hf.row_end), sums,
                "model.safetensors/" + hf.name);
      load_into(fo, "exp_avg." + hf.name, host_rows(m, opt.exp_avg(), p.exp_avg, hf.row_begin, hf.row_end), sums,
                "optimizer.safetensors/exp_avg." + hf.name);
      load_into(fo, "exp_avg_sq." + hf.name, host_rows(v, opt.exp_avg_sq(), p.exp_avg_sq, hf.row_begin, hf.row_end),
                sums, "optimizer.safetensors/exp_avg_sq." + hf.name);
    }
  }
  load_into(fo, "adam_state", adam.view(), sums, "optimizer.safetensors/adam_state");
  copy_bytes(opt.masters().view(), master.view());
  copy_bytes(opt.exp_avg().view(), m.view());
  copy_bytes(opt.exp_avg_sq().view(), v.view());
  copy_bytes(opt.adam_state().view(), adam.view());

  DelayedScalingState* st = model_.precision().delayed();
  if (st != nullptr) {
    const SafetensorsFile fs(dir / "scaling.safetensors");
    for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"amax_history", &st->amax_histories()},
                                  {"scale", &st->scales()}, {"scale_inv", &st->scale_invs()}}) {
      Tensor host = Tensor::empty(DType::F32, t->shape());
      load_into(fs, name, host.view(), sums, std::string("scaling.safetensors/") + name);
      copy_bytes(t->view(), host.view());
    }
  }
  steps_ = state.value("steps_done", int64_t{0});
  opt.sync_model_weights();
  return state.value("meta", nlohmann::json::object());
}

std::filesystem::path latest_checkpoint(const std::filesystem::path& out) {
  const std::filesystem::path latest = out / "checkpoints" / "latest";
  if (!std::filesystem::exists(latest)) return {};
  std::string name = read_file(latest);
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  TG_CHECK(!name.empty() && name.find('/') == std::string::npos, latest.string(), ": expected a checkpoint ",
           "directory name, got '", name, "'");
  const std::filesystem::path dir = out / "checkpoints" / name;
  TG_CHECK(std::filesystem::is_directory(dir), latest.string(), " points at '", name, "', which does not exist");
  return dir;
}

std::filesystem::path save_run_checkpoint(const Trainer& t, const std::filesystem::path& out,
                                          const nlohmann::json& meta) {
  namespace fs = std::filesystem;
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(t.steps_done()));
  const fs::path root = out / "checkpoints", dir = root / name;
  fs::create_directories(root);
  t.save_checkpoint(dir, meta);
  write_file_atomic(root / "latest", std::string(name) + "\n");
  // Keep the newest two (a checkpoint of the small model is ~2 GB; the previous one guards against a bad disk).
  // Temporary directories and files left by a save that was killed (step-N.tmp-PID, latest.tmp.*) go too:
  // this save is complete, so none of them is in use (one run per output directory).
  std::vector<fs::path> all, stale;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && n.find(".tmp-") != std::string::npos) {
      stale.push_back(e.path());
    } else if (n.rfind("latest.tmp.", 0) == 0) {
      stale.push_back(e.path());
    } else if (e.is_directory() && n.rfind("step-", 0) == 0) {
      all.push_back(e.path());
    }
  }
  for (const fs::path& p : stale) tg::remove_tree(p);
  std::sort(all.begin(), all.end());
  for (std::size_t i = 0; i + 2 < all.size(); ++i) {
    if (all[i] != dir) tg::remove_tree(all[i]);
  }
  return dir;
}

}  // namespace tg::impl
