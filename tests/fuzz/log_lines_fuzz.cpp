// Untrusted input around log lines: application output (severity detection, sanitising, capping,
// secret masking), log-tail query strings from HTTP clients, JetStream ack subjects from the bus,
// and LogBatch payloads anyone may publish to muon.log.*.
#include <cstddef>
#include <cstdint>
#include <string>

#include "log_tail.h"
#include "muon/common/bus.h"
#include "muon/common/errors.h"
#include "muon/common/log_lines.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  (void)muon::loglines::DetectSeverity(input, size % 2 == 0);
  std::string text = input;
  muon::loglines::SanitizeText(text);
  muon::loglines::MaskSecrets(text, {"secret", input.substr(0, 8)});
  (void)muon::loglines::CapMessage(text, size / 2);
  (void)muon::bus::ParseJsDelivery(input);
  try {
    (void)muon::ingress::ParseTailRequest("/v1/logs/tail?" + input);
  } catch (const muon::Error&) {
  }
  muon::logs::v1::LogBatch batch;
  if (batch.ParseFromString(input)) {
    for (auto& line : *batch.mutable_lines()) {
      line.set_stream_seq(1);
      (void)muon::ingress::SseLineEvent(line);
      (void)muon::loglines::Matches(muon::logs::v1::Filter(), line);
    }
  }
  return 0;
}
