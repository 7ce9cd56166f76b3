#pragma once
// Secrets at rest (webhook secrets, service config secrets): libsodium secretbox
// (XSalsa20-Poly1305) under a 32-byte key from the service's config. A sealed value is
// nonce || ciphertext; opening checks the MAC.

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace muon {

class SecretBox {
 public:
  // `key_hex`: 64 hex digits (e.g. `openssl rand -hex 32`). Throws std::invalid_argument.
  explicit SecretBox(std::string_view key_hex);
  ~SecretBox();
  SecretBox(const SecretBox&) = delete;
  SecretBox& operator=(const SecretBox&) = delete;

  std::string Seal(std::string_view plaintext) const;
  // nullopt when `sealed` was not sealed with this key (or was changed).
  std::optional<std::string> Open(std::string_view sealed) const;

 private:
  std::array<unsigned char, 32> key_{};
};

}  // namespace muon
