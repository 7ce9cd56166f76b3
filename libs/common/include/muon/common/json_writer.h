#pragma once
// A small streaming JSON writer for fixed-shape documents whose integers must stay JSON numbers
// (the ADR-32 service API replies): proto3's JSON mapping renders int64 as strings, which
// standard NATS tooling does not accept. Parsing JSON goes through protobuf's JSON mapping.

#include <cstdint>
#include <string>
#include <string_view>

namespace muon {

// Appends `text` as a quoted JSON string (RFC 8259 escaping, UTF-8 passed through).
void AppendJsonString(std::string& out, std::string_view text);

class JsonWriter {
 public:
  JsonWriter& BeginObject();
  JsonWriter& EndObject();
  JsonWriter& BeginArray();
  JsonWriter& EndArray();
  JsonWriter& Key(std::string_view key);
  JsonWriter& String(std::string_view value);
  JsonWriter& Int(int64_t value);
  JsonWriter& Bool(bool value);
  JsonWriter& Null();
  // Emits `json` verbatim as a value (must already be valid JSON).
  JsonWriter& Raw(std::string_view json);

  const std::string& str() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  void Separate();
  std::string out_;
  bool need_comma_ = false;
};

}  // namespace muon
