#pragma once
// The platform's one error shape (muon.common.v1.Error) as a C++ exception. Request handlers throw
// muon::Error (or anything else, which becomes a 500 without leaking its text); the service
// framework converts it exactly once into the reply body plus the ADR-32 error headers.

#include <stdexcept>
#include <string>
#include <string_view>

#include "muon/common/v1/common.pb.h"

namespace muon {

// Reason phrase for an HTTP-style code ("Bad Request", "Unauthorized", ...); "Unknown" otherwise.
std::string_view StatusText(int code);

class Error : public std::runtime_error {
 public:
  Error(int code, std::string detail)
      : std::runtime_error(detail), code_(code), detail_(std::move(detail)) {}

  int code() const { return code_; }
  const std::string& detail() const { return detail_; }
  std::string_view status() const { return StatusText(code_); }

  static Error BadRequest(std::string detail) { return {400, std::move(detail)}; }
  static Error Unauthorized(std::string detail) { return {401, std::move(detail)}; }
  static Error Forbidden(std::string detail) { return {403, std::move(detail)}; }
  static Error NotFound(std::string detail) { return {404, std::move(detail)}; }
  static Error Conflict(std::string detail) { return {409, std::move(detail)}; }
  static Error PayloadTooLarge(std::string detail) { return {413, std::move(detail)}; }
  static Error TooManyRequests(std::string detail) { return {429, std::move(detail)}; }
  static Error Internal(std::string detail) { return {500, std::move(detail)}; }
  static Error Unavailable(std::string detail) { return {503, std::move(detail)}; }
  static Error Timeout(std::string detail) { return {504, std::move(detail)}; }

 private:
  int code_;
  std::string detail_;
};

// id is "<service>.<Method>" of the endpoint that failed.
common::v1::Error ToProto(const Error& error, std::string_view id);
Error FromProto(const common::v1::Error& proto);

// {"id":"auth.Login","code":401,"detail":"…","status":"Unauthorized"}
std::string ErrorJson(const common::v1::Error& proto);

}  // namespace muon
