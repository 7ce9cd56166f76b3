#pragma once
// What github-events keeps (schema github), behind a small interface: the handlers never see
// SQL. Secrets cross this interface sealed (SecretBox); the store never sees them in the clear.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "muon/common/db.h"
#include "muon/github_events/v1/github_events.pb.h"

namespace muon::github_events {

struct RepoSecrets {
  std::string sealed;
  std::optional<std::string> previous_sealed;  // set while its grace period lasts
};

struct NewDelivery {
  std::string delivery_id;
  std::string repo;
  std::string event;
  std::string status;  // accepted, processed (ping), ignored
  std::string detail;
  std::string ref, before, after;
  std::optional<std::string> body;  // kept for deliveries still to be processed
  int64_t body_bytes = 0;
};

enum class DeliveryOutcome { kStored, kDuplicate };

// An accepted push taken for processing.
struct ClaimedDelivery {
  std::string delivery_id;
  std::string repo;
  std::string body;
  int attempts = 0;  // including this one
};

class Store {
 public:
  virtual ~Store() = default;
  // False when the repo exists already.
  virtual bool AddRepo(const v1::Repo& repo, const std::string& secret_sealed) = 0;
  virtual std::vector<v1::Repo> ListRepos() = 0;
  virtual std::optional<v1::Repo> GetRepo(const std::string& name) = 0;
  virtual bool RemoveRepo(const std::string& name) = 0;
  // The current secret becomes the previous one, accepted until now + grace; nullopt when the
  // repo does not exist.
  virtual std::optional<v1::Repo> RotateSecret(const std::string& name,
                                               const std::string& secret_sealed,
                                               std::chrono::seconds grace) = 0;
  virtual std::optional<RepoSecrets> Secrets(const std::string& name) = 0;
  virtual void CountRejection(const std::string& repo, const std::string& reason) = 0;
  // Commits the delivery, or counts a redelivery of a stored one.
  virtual DeliveryOutcome InsertDelivery(const NewDelivery& delivery) = 0;
  virtual std::vector<v1::Delivery> ListDeliveries(const std::string& repo, int limit) = 0;
  // Takes the oldest accepted delivery that is due, or one whose processor's lease expired.
  virtual std::optional<ClaimedDelivery> ClaimDelivery(const std::string& owner,
                                                       std::chrono::seconds lease) = 0;
  virtual bool RenewDelivery(const std::string& id, const std::string& owner,
                             std::chrono::seconds lease) = 0;
  // status processed or failed; the body is dropped. False when the lease was lost.
  virtual bool FinishDelivery(const std::string& id, const std::string& owner,
                              const std::string& status, const std::string& detail,
                              const std::vector<std::string>& builds) = 0;
  // Back to accepted, due again after `delay`.
  virtual bool RetryDelivery(const std::string& id, const std::string& owner,
                             const std::string& detail, std::chrono::seconds delay) = 0;
  virtual std::vector<v1::Rejection> ListRejections(const std::string& repo) = 0;
};

class PgStore : public Store {
 public:
  PgStore(std::string database_url, size_t max_connections);
  void Migrate();
  db::Pool& pool() { return pool_; }

  bool AddRepo(const v1::Repo& repo, const std::string& secret_sealed) override;
  std::vector<v1::Repo> ListRepos() override;
  std::optional<v1::Repo> GetRepo(const std::string& name) override;
  bool RemoveRepo(const std::string& name) override;
  std::optional<v1::Repo> RotateSecret(const std::string& name, const std::string& secret_sealed,
                                       std::chrono::seconds grace) override;
  std::optional<RepoSecrets> Secrets(const std::string& name) override;
  void CountRejection(const std::string& repo, const std::string& reason) override;
  DeliveryOutcome InsertDelivery(const NewDelivery& delivery) override;
  std::optional<ClaimedDelivery> ClaimDelivery(const std::string& owner,
                                               std::chrono::seconds lease) override;
  bool RenewDelivery(const std::string& id, const std::string& owner,
                     std::chrono::seconds lease) override;
  bool FinishDelivery(const std::string& id, const std::string& owner, const std::string& status,
                      const std::string& detail, const std::vector<std::string>& builds) override;
  bool RetryDelivery(const std::string& id, const std::string& owner, const std::string& detail,
                     std::chrono::seconds delay) override;
  std::vector<v1::Delivery> ListDeliveries(const std::string& repo, int limit) override;
  std::vector<v1::Rejection> ListRejections(const std::string& repo) override;

 private:
  db::Pool pool_;
};

}  // namespace muon::github_events
