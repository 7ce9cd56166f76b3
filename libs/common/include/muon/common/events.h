#pragma once
// The platform's event stream: every service publishes its state changes to muon.evt.<kind>.<...>
// (muon.evt.build.<service>, muon.evt.github.<repo>, ...); `muon events -f` and the scheduler
// read them. Every publisher ensures the stream, so it exists whichever service starts first.

#include <chrono>
#include <string>
#include <string_view>

#include "muon/common/bus.h"

namespace muon::events {

inline bus::StreamConfig StreamConfig() {
  return {.name = "EVENTS", .subjects = {"muon.evt.>"}, .max_age = std::chrono::hours(24 * 30)};
}

// A name made safe as one subject token ("acme/web.site" -> "acme/web_site").
inline std::string SubjectToken(std::string_view name) {
  std::string out(name);
  for (char& c : out) {
    if (c == '.' || c == '*' || c == '>' || c == ' ') c = '_';
  }
  return out;
}

}  // namespace muon::events
