#pragma once
// The scheduler's audit trail: every state change it makes or sees is a row in scheduler.events
// (what `muon history` and `muon events` read) and a message on muon.evt.<kind>.<service> in the
// EVENTS stream (kind = the type's first word: rollout, instance, release, ...).

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "muon/common/bus.h"
#include "muon/common/db.h"
#include "muon/scheduler/v1/scheduler.pb.h"

namespace muon::scheduler {

struct EventInput {
  std::string service;
  std::string type;     // "rollout.started", "instance.exited", ...
  std::string message;  // one line for humans
  int version = 0;
  std::string instance;
  std::map<std::string, std::string> attributes;
};

class EventLog {
 public:
  virtual ~EventLog() = default;
  // Stores the event (throws on a database failure), then publishes it (best effort: the
  // table is the record; a publish that fails is logged).
  virtual v1::Event Record(const EventInput& input) = 0;
  // Many at once (one reconcile pass): stored in one statement, published without waiting for
  // each acknowledgement.
  virtual void RecordMany(const std::vector<EventInput>& inputs) {
    for (const auto& input : inputs) Record(input);
  }
};

class PgEventLog : public EventLog {
 public:
  // `bus` may be null (tests, dry runs): then events are only stored.
  PgEventLog(db::Pool& pool, bus::Connection* bus, std::string region);
  ~PgEventLog() override;
  v1::Event Record(const EventInput& input) override;
  void RecordMany(const std::vector<EventInput>& inputs) override;

 private:
  db::Pool& pool_;
  bus::Connection* bus_;
  std::unique_ptr<bus::JetStream> js_;
  std::string region_;
};

}  // namespace muon::scheduler
