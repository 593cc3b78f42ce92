#include "common/dtype.h"

#include "common/check.h"

namespace tg {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::BF16: return "BF16";
    case DType::F16: return "F16";
    case DType::E4M3: return "F8_E4M3";
    case DType::E5M2: return "F8_E5M2";
    case DType::E8M0: return "F8_E8M0";
    case DType::F64: return "F64";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
  }
  return "?";
}

DType parse_dtype(std::string_view s) {
  struct Alias { std::string_view name; DType t; };
  static constexpr Alias kAliases[] = {
      {"F32", DType::F32},       {"fp32", DType::F32},   {"float32", DType::F32},
      {"BF16", DType::BF16},     {"bf16", DType::BF16},  {"bfloat16", DType::BF16},
      {"F16", DType::F16},       {"fp16", DType::F16},   {"float16", DType::F16},
      {"F8_E4M3", DType::E4M3},  {"e4m3", DType::E4M3},  {"F8_E5M2", DType::E5M2},
      {"e5m2", DType::E5M2},     {"F8_E8M0", DType::E8M0}, {"e8m0", DType::E8M0},
      {"F64", DType::F64},       {"I32", DType::I32},    {"I64", DType::I64},
      {"U8", DType::U8},
  };
  for (const auto& a : kAliases) {
    if (a.name == s) return a.t;
  }
  TG_FAIL("unknown dtype '", s, "': expected one of F32, BF16, F16, F8_E4M3, F8_E5M2, F8_E8M0, F64, I32, I64, U8");
}

std::ostream& operator<<(std::ostream& os, DType t) { return os << dtype_name(t); }

}  // namespace tg
