#include "muon/common/secret_box.h"

#include <sodium.h>

#include <stdexcept>

namespace muon {

SecretBox::SecretBox(std::string_view key_hex) {
  static_assert(crypto_secretbox_KEYBYTES == 32);
  if (sodium_init() < 0) throw std::runtime_error("libsodium cannot be initialised");
  size_t length = 0;
  const char* end = nullptr;
  if (key_hex.size() != key_.size() * 2 ||
      sodium_hex2bin(key_.data(), key_.size(), key_hex.data(), key_hex.size(), nullptr, &length,
                     &end) != 0 ||
      length != key_.size() || end != key_hex.data() + key_hex.size()) {
    throw std::invalid_argument("the key must be 64 hex digits (32 bytes; openssl rand -hex 32)");
  }
}

SecretBox::~SecretBox() {
  sodium_memzero(key_.data(), key_.size());
}

std::string SecretBox::Seal(std::string_view plaintext) const {
  std::string sealed(crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + plaintext.size(),
                     '\0');
  auto* nonce = reinterpret_cast<unsigned char*>(sealed.data());
  randombytes_buf(nonce, crypto_secretbox_NONCEBYTES);
  crypto_secretbox_easy(nonce + crypto_secretbox_NONCEBYTES,
                        reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
                        nonce, key_.data());
  return sealed;
}

std::optional<std::string> SecretBox::Open(std::string_view sealed) const {
  if (sealed.size() < crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES) return std::nullopt;
  const auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data());
  const size_t cipher_size = sealed.size() - crypto_secretbox_NONCEBYTES;
  std::string plaintext(cipher_size - crypto_secretbox_MACBYTES, '\0');
  if (crypto_secretbox_open_easy(reinterpret_cast<unsigned char*>(plaintext.data()),
                                 nonce + crypto_secretbox_NONCEBYTES, cipher_size, nonce,
                                 key_.data()) != 0) {
    return std::nullopt;
  }
  return plaintext;
}

}  // namespace muon
