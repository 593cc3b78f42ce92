#include <algorithm>
#include <thread>
#include <vector>

#include "common/numeric.h"
#include "kernels/random/normal_stream.h"
#include "kernels/random/random.h"

namespace tg::kernels::cpu {

void fill_normal(const TensorView& view, uint64_t key, double std) {
  detail::check_fill_normal(view, std, Device::CPU, "cpu::fill_normal(out)");
  uint16_t* out = view.ptr<uint16_t>();
  const int64_t n = view.numel();
  if (std == 0.0) {  // exactly +0 (0 * a negative draw would be -0)
    std::fill_n(out, n, uint16_t{0});
    return;
  }
  const int64_t pairs = (n + 1) / 2;
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 64);
  const int64_t chunk = std::max<int64_t>((pairs + threads - 1) / threads, 1 << 15);
  std::vector<std::thread> pool;
  for (int64_t begin = 0; begin < pairs; begin += chunk) {
    const int64_t end = std::min(pairs, begin + chunk);
    pool.emplace_back([=] {
      for (int64_t j = begin; j < end; ++j) {
        double a, b;
        normal_pair(key, j, a, b);
        out[2 * j] = float_to_bf16_bits(static_cast<float>(std * a));
        if (2 * j + 1 < n) out[2 * j + 1] = float_to_bf16_bits(static_cast<float>(std * b));
      }
    });
  }
  for (auto& t : pool) t.join();
}

}  // namespace tg::kernels::cpu
