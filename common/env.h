// On/off switches and integers read from the environment (the A/B and debugging knobs: TEGEMMA_DECODE_PDL,
// TEGEMMA_GEMV_MMA, TEGEMMA_SYNC_LAUNCHES, ...).
#pragma once

namespace tg {

// `name` unset or empty: `default_on`; "0": off; "1": on; anything else is a tg::Error naming the variable and
// the value (a misspelt switch must not silently run the other configuration). Callers cache the answer.
bool env_switch(const char* name, bool default_on);

// `name` unset or empty: `default_value`; else a decimal integer in [lo, hi], anything else (text, trailing
// characters, out of range) a tg::Error naming the variable, the value and the range. Callers cache the answer.
long long env_int(const char* name, long long default_value, long long lo, long long hi);

}  // namespace tg
