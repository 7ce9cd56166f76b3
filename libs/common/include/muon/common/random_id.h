#pragma once
// Identifiers that must be unique, not secret (request and trace ids, build ids, lease owners):
// a per-thread generator seeded once from the OS, so no system call per id on hot paths. Secrets
// and nonces use libsodium instead.

#include <cstddef>
#include <string>

namespace muon {

// `bytes` random bytes as lowercase hex (2 * bytes characters).
std::string RandomHex(size_t bytes);

}  // namespace muon
