// Element types of the project and their properties.
//
// FP8 formats follow the OCP / NVIDIA definitions used by Hopper:
//   E4M3: 1 sign, 4 exponent (bias 7), 3 mantissa; max finite 448; NaN = S.1111.111; no infinity.
//   E5M2: 1 sign, 5 exponent (bias 15), 2 mantissa; max finite 57344; IEEE-like inf and NaN.
//   E8M0: 8-bit biased exponent (bias 127), value 2^(e-127); 0xFF = NaN. Used by MX block scales
//         (emulation only: Hopper's block-scaled GEMM takes FP32 scales).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>

namespace tg {

enum class DType : uint8_t { F32, BF16, F16, E4M3, E5M2, E8M0, F64, I32, I64, U8 };

constexpr std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64: case DType::I64: return 8;
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::E4M3: case DType::E5M2: case DType::E8M0: case DType::U8: return 1;
  }
  return 0;
}

constexpr bool is_fp8(DType t) { return t == DType::E4M3 || t == DType::E5M2; }
constexpr bool is_floating(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F64 || is_fp8(t);
}

// Largest finite value of a floating format (what SATFINITE conversions clamp to).
constexpr double dtype_max(DType t) {
  switch (t) {
    case DType::E4M3: return 448.0;
    case DType::E5M2: return 57344.0;
    case DType::F16: return 65504.0;
    case DType::BF16: return 3.3895313892515355e38;
    case DType::F32: return 3.4028234663852886e38;
    default: return 0.0;
  }
}

// Names as in safetensors headers where a name exists there ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parses safetensors / CLI names (case-sensitive safetensors names, plus "fp32", "bf16", "e4m3", ...).
// Throws tg::Error naming the unknown string and the accepted names.
DType parse_dtype(std::string_view s);
std::ostream& operator<<(std::ostream& os, DType t);

}  // namespace tg
