#include "common/numeric.h"

#include <bit>

#include "common/check.h"

namespace tg {

uint32_t encode(DType t, float f) {
  switch (t) {
    case DType::F32: return std::bit_cast<uint32_t>(f);
    case DType::BF16: return float_to_bf16_bits(f);
    case DType::F16: return float_to_f16_bits(f);
    case DType::E4M3: return float_to_e4m3_bits(f);
    case DType::E5M2: return float_to_e5m2_bits(f);
    case DType::E8M0: return float_to_e8m0_bits(f);
    default: TG_FAIL("encode: ", t, " is not a float format of at most 32 bits");
  }
}

float decode(DType t, uint32_t bits) {
  switch (t) {
    case DType::F32: return std::bit_cast<float>(bits);
    case DType::BF16: return bf16_bits_to_float(static_cast<uint16_t>(bits));
    case DType::F16: return f16_bits_to_float(static_cast<uint16_t>(bits));
    case DType::E4M3: return e4m3_bits_to_float(static_cast<uint8_t>(bits));
    case DType::E5M2: return e5m2_bits_to_float(static_cast<uint8_t>(bits));
    case DType::E8M0: return e8m0_bits_to_float(static_cast<uint8_t>(bits));
    default: TG_FAIL("decode: ", t, " is not a float format of at most 32 bits");
  }
}

float round_to(DType t, float f) {
  if (t == DType::F32 || t == DType::F64) return f;
  return decode(t, encode(t, f));
}

}  // namespace tg
