// Content checksums for the files we write (checkpoint tensors): XXH64, the 64-bit xxHash of
// Yann Collet's reference implementation (github.com/Cyan4973/xxHash, XXH64 with seed 0 unless given).
// Chosen over a cryptographic hash because it guards against corruption (flipped bits, truncated or
// mixed-up copies), not against an adversary, and runs at memory speed on a checkpoint of many GB.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tg {

// XXH64 of `bytes`; identical to XXH64(bytes.data(), bytes.size(), seed) of libxxhash.
uint64_t xxh64(std::span<const uint8_t> bytes, uint64_t seed = 0);

// 16 lowercase hex digits, most significant first (xxhsum's canonical form).
std::string xxh64_hex(uint64_t h);

// Parses xxh64_hex's form; false (and `out` untouched) unless it is exactly 16 hex digits.
bool parse_xxh64_hex(std::string_view s, uint64_t& out);

}  // namespace tg
