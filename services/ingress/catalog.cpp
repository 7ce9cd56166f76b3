#include "catalog.h"

#include <google/protobuf/util/json_util.h>

#include <algorithm>

#include "muon/common/json_writer.h"
#include "muon/common/log.h"

namespace muon::ingress {

CatalogSnapshot BuildCatalog(const std::vector<std::string>& info_replies) {
  CatalogSnapshot snapshot;
  snapshot.taken = std::chrono::steady_clock::now();
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // newer ADR-32 fields are fine
  for (const auto& json : info_replies) {
    common::v1::MicroInfoResponse info;
    if (!google::protobuf::util::JsonStringToMessage(json, &info, options).ok()) continue;
    if (info.type() != "io.nats.micro.v1.info_response" || info.name().empty()) continue;
    auto& entry = snapshot.services[info.name()];
    entry.name = info.name();
    if (entry.description.empty()) entry.description = info.description();
    for (const auto& endpoint : info.endpoints()) entry.methods.insert(endpoint.name());
    entry.instances.push_back(std::move(info));
  }
  for (auto& [_, entry] : snapshot.services) {
    std::sort(entry.instances.begin(), entry.instances.end(),
              [](const auto& a, const auto& b) { return a.id() < b.id(); });
  }
  return snapshot;
}

std::string CatalogJson(const CatalogSnapshot& snapshot) {
  JsonWriter w;
  w.BeginObject().Key("services").BeginArray();
  for (const auto& [name, entry] : snapshot.services) {
    w.BeginObject();
    w.Key("name").String(name);
    w.Key("description").String(entry.description);
    w.Key("instances").BeginArray();
    for (const auto& instance : entry.instances) {
      w.BeginObject();
      w.Key("id").String(instance.id());
      w.Key("version").String(instance.version());
      w.Key("metadata").BeginObject();
      std::map<std::string, std::string> sorted(instance.metadata().begin(),
                                                instance.metadata().end());
      for (const auto& [k, v] : sorted) w.Key(k).String(v);
      w.EndObject();
      w.EndObject();
    }
    w.EndArray();
    // Endpoints as the first instance reports them (instances of one release agree).
    w.Key("endpoints").BeginArray();
    std::set<std::pair<std::string, std::string>> seen;
    for (const auto& instance : entry.instances) {
      for (const auto& endpoint : instance.endpoints()) {
        if (!seen.emplace(endpoint.name(), endpoint.subject()).second) continue;
        w.BeginObject();
        w.Key("name").String(endpoint.name());
        w.Key("subject").String(endpoint.subject());
        w.Key("queueGroup").String(endpoint.queue_group());
        w.EndObject();
      }
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray().EndObject();
  return w.Take();
}

Catalog::Catalog(bus::Connection& connection, std::chrono::milliseconds interval,
                 std::chrono::milliseconds gather_window)
    : connection_(connection),
      interval_(interval),
      window_(gather_window),
      snapshot_(std::make_shared<CatalogSnapshot>()) {
  thread_ = std::thread([this] { Loop(); });
}

Catalog::~Catalog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::shared_ptr<const CatalogSnapshot> Catalog::Snapshot() const {
  std::lock_guard lock(mu_);
  return snapshot_;
}

void Catalog::RefreshNow() {
  std::vector<std::string> replies;
  for (auto& msg : bus::Gather(connection_, "$SRV.INFO", "", window_)) {
    replies.emplace_back(msg.data());
  }
  auto snapshot = std::make_shared<const CatalogSnapshot>(BuildCatalog(replies));
  std::lock_guard lock(mu_);
  snapshot_ = std::move(snapshot);
}

void Catalog::Loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    lock.unlock();
    try {
      RefreshNow();
    } catch (const std::exception& e) {
      log::Warn("service discovery failed", {{"error", e.what()}});
    }
    lock.lock();
    cv_.wait_for(lock, interval_, [this] { return stop_; });
  }
}

}  // namespace muon::ingress
