#pragma once
// What services exist right now, discovered through the NATS service API ($SRV.INFO) and
// refreshed in the background. The ingress uses it for GET /v1/services and to tell "unknown
// service/method" (404) from "known but nobody answering" (503).

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "muon/common/bus.h"
#include "muon/common/v1/micro.pb.h"

namespace muon::ingress {

struct ServiceEntry {
  std::string name;
  std::string description;
  std::vector<common::v1::MicroInfoResponse> instances;  // sorted by id
  std::set<std::string> methods;                         // endpoint names
};

struct CatalogSnapshot {
  std::map<std::string, ServiceEntry> services;
  std::chrono::steady_clock::time_point taken;
};

// Groups $SRV.INFO replies (JSON) by service name; malformed replies are skipped.
CatalogSnapshot BuildCatalog(const std::vector<std::string>& info_replies);
// {"services":[{"name","description","instances":[{"id","version","metadata"}],"endpoints":[...]}]}
std::string CatalogJson(const CatalogSnapshot& snapshot);

class Catalog {
 public:
  Catalog(bus::Connection& connection, std::chrono::milliseconds interval,
          std::chrono::milliseconds gather_window);
  ~Catalog();
  std::shared_ptr<const CatalogSnapshot> Snapshot() const;
  void RefreshNow();  // blocking: one gather

 private:
  void Loop();
  bus::Connection& connection_;
  std::chrono::milliseconds interval_;
  std::chrono::milliseconds window_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::shared_ptr<const CatalogSnapshot> snapshot_;
  std::thread thread_;
};

}  // namespace muon::ingress
