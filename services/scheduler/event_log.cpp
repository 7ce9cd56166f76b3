#include "event_log.h"

#include <fmt/format.h>
#include <google/protobuf/util/time_util.h>

#include "muon/common/events.h"
#include "muon/common/log.h"

namespace muon::scheduler {

namespace {

std::string AttributesJson(const std::map<std::string, std::string>& attributes) {
  // jsonb built by PostgreSQL from a text[] of alternating keys and values: no JSON writing here.
  std::vector<std::string> flat;
  for (const auto& [k, v] : attributes) {
    flat.push_back(k);
    flat.push_back(v);
  }
  return db::TextArrayLiteral(flat);
}

}  // namespace

PgEventLog::PgEventLog(db::Pool& pool, bus::Connection* bus, std::string region)
    : pool_(pool), bus_(bus), region_(std::move(region)) {
  if (bus_) {
    js_ = std::make_unique<bus::JetStream>(*bus_);
    if (auto ec = js_->EnsureStream(events::StreamConfig())) {
      log::Warn("EVENTS stream not ensured yet; events are stored and published when it exists",
                {{"error", ec.message()}});
    }
  }
}

PgEventLog::~PgEventLog() = default;

v1::Event PgEventLog::Record(const EventInput& input) {
  v1::Event event;
  pool_.Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    auto row = tx.exec_params1(
        "INSERT INTO scheduler.events (service, type, message, version, instance, attributes) "
        "VALUES ($1, $2, $3, $4, $5, jsonb_object($6::text[])) "
        "RETURNING id, (extract(epoch FROM time) * 1000000)::bigint",
        input.service, input.type, input.message, input.version, input.instance,
        AttributesJson(input.attributes));
    tx.commit();
    event.set_id(row[0].as<int64_t>());
    *event.mutable_time() =
        google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(row[1].as<int64_t>());
  });
  event.set_service(input.service);
  event.set_type(input.type);
  event.set_message(input.message);
  event.set_version(input.version);
  event.set_instance(input.instance);
  for (const auto& [k, v] : input.attributes) (*event.mutable_attributes())[k] = v;
  if (js_) {
    const std::string kind = input.type.substr(0, input.type.find('.'));
    const std::string subject = fmt::format(
        "muon.evt.{}.{}", kind, events::SubjectToken(input.service.empty() ? "_" : input.service));
    bus::PubAck ack;
    // The row id makes a retried publish a duplicate the stream drops.
    if (auto ec = js_->Publish(subject, event.SerializeAsString(),
                               fmt::format("scheduler-{}-{}", region_, event.id()), ack)) {
      log::Warn("event stored but not published",
                {{"type", input.type}, {"service", input.service}, {"error", ec.message()}});
    }
  }
  return event;
}

void PgEventLog::RecordMany(const std::vector<EventInput>& inputs) {
  if (inputs.empty()) return;
  if (inputs.size() == 1) {
    Record(inputs.front());
    return;
  }
  std::vector<std::string> services, types, messages, versions, instances;
  for (const auto& in : inputs) {
    services.push_back(in.service);
    types.push_back(in.type);
    messages.push_back(in.message);
    versions.push_back(std::to_string(in.version));
    instances.push_back(in.instance);
  }
  std::vector<int64_t> ids;
  pool_.Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    // Attributes are left out here: the batched events (placements, stops) carry none.
    const auto rows = tx.exec_params(
        "INSERT INTO scheduler.events (service, type, message, version, instance) "
        "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]::int[], $5::text[]) "
        "RETURNING id",
        db::TextArrayLiteral(services), db::TextArrayLiteral(types), db::TextArrayLiteral(messages),
        db::TextArrayLiteral(versions), db::TextArrayLiteral(instances));
    tx.commit();
    ids.clear();
    for (const auto& row : rows) ids.push_back(row[0].as<int64_t>());
  });
  if (!bus_) return;
  const auto now = google::protobuf::util::TimeUtil::GetCurrentTime();
  for (size_t i = 0; i < inputs.size() && i < ids.size(); ++i) {
    v1::Event event;
    event.set_id(ids[i]);
    event.set_service(inputs[i].service);
    event.set_type(inputs[i].type);
    event.set_message(inputs[i].message);
    event.set_version(inputs[i].version);
    event.set_instance(inputs[i].instance);
    *event.mutable_time() = now;
    const std::string& type = inputs[i].type;
    const std::string subject =
        fmt::format("muon.evt.{}.{}", type.substr(0, type.find('.')),
                    events::SubjectToken(inputs[i].service.empty() ? "_" : inputs[i].service));
    // A plain publish: the stream stores it all the same; the table is the record.
    if (auto ec = bus_->Publish(
            subject, event.SerializeAsString(),
            {{bus::kHeaderMsgId, fmt::format("scheduler-{}-{}", region_, event.id())}})) {
      log::Warn("event stored but not published", {{"type", type}, {"error", ec.message()}});
    }
  }
}

}  // namespace muon::scheduler
