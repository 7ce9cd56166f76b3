#pragma once
// Region signing keys. Each region's auth signs with its own Ed25519 key, created on the first
// start of the region and kept in auth.signing_keys with the private key encrypted (libsodium
// secretbox) under a key derived from the auth key file (--key-file / MUON_AUTH_KEY_FILE); the
// private key never leaves auth. Rotation makes a new active key and keeps the old one verifying
// ("retiring") until an admin retires it; Keys publishes every region's active and retiring keys.

#include <array>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>

#include "muon/auth/v1/auth.pb.h"
#include "muon/common/token.h"
#include "store.h"

namespace muon::auth {

using MasterKey = std::array<unsigned char, 32>;

// Reads the key file and derives the key that encrypts signing keys. When the file does not
// exist it is created (mode 0600, 32 random bytes as base64url text) — atomically, so replicas
// starting together end up with the same file. Throws std::runtime_error when the file cannot
// be read or created, or holds fewer than 32 bytes.
MasterKey LoadOrCreateKeyFile(const std::string& path);

class KeyManager {
 public:
  KeyManager(Store& store, std::string region, const MasterKey& master_key);

  // Start-up: makes sure the region has an active key this process can use. Creates one when
  // there is none; when the active key cannot be decrypted with this key file (the file was
  // replaced), rotates to a new key, so the old one keeps verifying as "retiring".
  void EnsureActiveKey();
  // This region's current signing key (re-read from the table at most every few seconds, so a
  // rotation by another replica is picked up).
  token::SigningKey Active();
  // A new active key for this region; the old one becomes retiring. Returns the new key's JWK.
  v1::Jwk Rotate();
  // Retires a retiring key (of any region): it is no longer published, so tokens it signed stop
  // verifying. Throws muon::Error 404 (unknown kid) or 409 (the key is still active).
  v1::Jwk Retire(const std::string& kid);
  // Every region's active and retiring public keys, JWKS-shaped.
  v1::KeysResponse PublicKeys();

  // Exposed for tests: seal/open a secret key under the master key.
  std::string Seal(const token::SigningKey& key) const;
  std::optional<token::SigningKey> Open(const SigningKeyRow& row) const;

 private:
  SigningKeyRow NewKeyRow(token::SigningKey& key) const;

  Store& store_;
  std::string region_;
  MasterKey master_key_;
  std::mutex mu_;
  std::optional<token::SigningKey> active_;
  std::chrono::steady_clock::time_point loaded_{};
};

}  // namespace muon::auth
