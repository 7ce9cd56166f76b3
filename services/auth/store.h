#pragma once
// Everything the auth service keeps, behind one small interface: the handlers never see SQL.
// PgStore is the only implementation (schema `auth` in the shared PostgreSQL); the interface
// keeps the handlers readable and lets a test or a later backend slot in.

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "muon/auth/v1/auth.pb.h"
#include "muon/common/db.h"

namespace muon::auth {

struct AccountRow {
  std::string id;
  std::string email;
  std::string name;
  std::vector<std::string> roles;
  std::string password_hash;  // empty for service accounts
  std::string secret_hash;    // service accounts with a secret: hex SHA-256
  bool service_account = false;
  std::string created_region;
  bool disabled = false;
  int64_t created_at_us = 0;
};

struct InviteRow {
  std::string id;
  std::string email;  // empty: anyone holding the code
  std::vector<std::string> roles;
  int64_t expires_at_us = 0;
  std::string created_by;  // email of the admin
  bool used = false;
};

enum class InviteStatus { kOk, kNotFound, kUsed, kExpired, kWrongEmail, kEmailTaken };

struct NewAccount {
  std::string email;
  std::string name;
  std::vector<std::string> roles;
  std::string password_hash;
  std::string secret_hash;
  bool service_account = false;
  std::string region;
};

// Login throttling. Attempts are counted per (email, client): the email (known or not, so the
// throttle reveals nothing about which accounts exist) and the key of the caller's address
// (ThrottleClientKey in auth_service.h). A lockout of one pair does not block the email from
// another address. Over all clients of an email, a ceiling on failures in a short fixed window
// refuses only clients that have not logged in to that email before (known clients), so a
// stranger cannot lock the owner out of the addresses they use.
struct ThrottlePolicy {
  int max_failures = 5;              // failed attempts of one pair before it is locked
  std::chrono::seconds lockout{30};  // first lockout; doubles per lockout in a row
  std::chrono::seconds max_lockout{std::chrono::minutes(15)};
  std::chrono::seconds failure_memory{std::chrono::minutes(15)};  // failures older are forgotten
  std::chrono::seconds lockout_memory{std::chrono::hours(24)};    // lockout count decays after
  // Per email over every client: at most this many failures per window from clients that are
  // not known; 0 turns the ceiling off.
  int account_max_failures = 100;
  std::chrono::seconds account_window{std::chrono::minutes(5)};
  // A client that logged in to the email this recently is known (exempt from the ceiling).
  std::chrono::seconds known_client_memory{std::chrono::hours(24 * 30)};
};
struct ThrottleDecision {
  bool locked = false;
  std::chrono::seconds retry_after{0};
  // This attempt was the one that filled the email's ceiling (new clients are refused from now
  // until the window ends); worth a log line.
  bool account_ceiling_reached = false;
};

enum class RefreshStatus { kOk, kUnknown, kExpired, kReused, kRevoked };
struct RefreshOutcome {
  RefreshStatus status = RefreshStatus::kUnknown;
  std::string account_id;
  std::string family_id;
};

struct SigningKeyRow {
  std::string kid;
  std::string region;
  std::string public_key;  // base64url
  std::string secret_box;  // base64url(nonce || ciphertext)
  std::string status;      // active, retiring, retired
};

enum class RetireStatus { kRetired, kNotFound, kActive, kAlreadyRetired };

class Store {
 public:
  virtual ~Store() = default;

  // Accounts. Emails are passed normalised (trimmed, lower-case).
  virtual std::optional<AccountRow> FindAccountByEmail(std::string_view email) = 0;
  virtual std::optional<AccountRow> FindAccountById(std::string_view id) = 0;
  virtual std::vector<AccountRow> ListAccounts() = 0;
  // Creates the account unless one with the email exists (then nullopt; nothing changes).
  virtual std::optional<AccountRow> CreateAccount(const NewAccount& account) = 0;
  // Sets the flag; disabling also revokes every refresh-token family of the account.
  virtual std::optional<AccountRow> SetAccountDisabled(std::string_view email, bool disabled) = 0;
  virtual void SetPasswordHash(std::string_view account_id, std::string_view hash) = 0;

  // Invites (codes are only ever seen as their hash).
  virtual InviteRow CreateInvite(std::string_view code_hash, std::string_view email,
                                 const std::vector<std::string>& roles, std::chrono::seconds ttl,
                                 std::string_view created_by_id) = 0;
  virtual std::vector<InviteRow> ListInvites() = 0;
  // Whether the invite could be used by `email` right now (a cheap read before hashing).
  virtual InviteStatus CheckInvite(std::string_view code_hash, std::string_view email) = 0;
  // Consumes the invite and creates the account in one transaction; `account` is set on kOk.
  virtual InviteStatus Signup(std::string_view code_hash, const NewAccount& fields,
                              AccountRow& account) = 0;

  // Login throttling: called before the password is hashed. Counts this attempt as a failure
  // until LoginSucceeded clears it, so parallel guesses are counted too.
  virtual ThrottleDecision BeginLogin(std::string_view email, std::string_view client,
                                      const ThrottlePolicy& policy) = 0;
  // Clears the pair's count and makes the client known for the email.
  virtual void LoginSucceeded(std::string_view email, std::string_view client) = 0;

  // Refresh tokens.
  virtual std::string StartFamily(std::string_view account_id, std::string_view region) = 0;
  virtual void AddRefreshToken(std::string_view family_id, std::string_view token_hash,
                               std::chrono::seconds ttl) = 0;
  // Spends the token and stores its successor in the same family (one transaction). A token
  // spent before revokes its family (kReused).
  virtual RefreshOutcome RotateRefreshToken(std::string_view token_hash, std::string_view next_hash,
                                            std::chrono::seconds ttl) = 0;
  // Revokes the family the token belongs to; false when the token is unknown.
  virtual bool RevokeFamilyOf(std::string_view token_hash, std::string_view reason) = 0;
  virtual void RevokeFamilyById(std::string_view family_id, std::string_view reason) = 0;
  virtual void RevokeAccountFamilies(std::string_view account_id, std::string_view reason) = 0;

  // Signing keys (all regions share the table).
  virtual std::vector<SigningKeyRow> ListPublishedKeys() = 0;  // active + retiring, all regions
  virtual std::optional<SigningKeyRow> ActiveKey(std::string_view region) = 0;
  virtual std::optional<SigningKeyRow> FindKey(std::string_view kid) = 0;
  // Inserts `key` as the region's active key unless it has one; true when inserted.
  virtual bool InsertActiveKeyIfAbsent(const SigningKeyRow& key) = 0;
  // The region's active key becomes retiring and `key` becomes active, atomically.
  virtual void RotateKey(const SigningKeyRow& key) = 0;
  virtual RetireStatus RetireKey(std::string_view kid) = 0;

  // Rules.
  virtual std::vector<v1::Rule> ListRules() = 0;
  virtual v1::Rule CreateRule(const v1::Rule& rule) = 0;  // returns it with its id
  virtual bool DeleteRule(std::string_view id) = 0;
  // Inserts `rules` when the table is empty (first start); true when it did.
  virtual bool SeedRulesIfEmpty(const std::vector<v1::Rule>& rules) = 0;

  virtual void Audit(std::string_view actor, std::string_view action, std::string_view target,
                     std::string_view detail = {}) = 0;
  // Drops state nobody needs any more (long expired refresh tokens, stale throttle rows; known
  // clients are kept for policy.known_client_memory).
  virtual void Cleanup(const ThrottlePolicy& policy) = 0;
};

// The PostgreSQL store; owns its connection pool (with the prepared statements it uses).
class PgStore : public Store {
 public:
  PgStore(std::string database_url, std::string region, size_t max_connections = 8);
  // Applies the schema migrations (safe with several replicas starting at once).
  void Migrate();
  db::Pool& pool() { return pool_; }

  std::optional<AccountRow> FindAccountByEmail(std::string_view email) override;
  std::optional<AccountRow> FindAccountById(std::string_view id) override;
  std::vector<AccountRow> ListAccounts() override;
  std::optional<AccountRow> CreateAccount(const NewAccount& account) override;
  std::optional<AccountRow> SetAccountDisabled(std::string_view email, bool disabled) override;
  void SetPasswordHash(std::string_view account_id, std::string_view hash) override;

  InviteRow CreateInvite(std::string_view code_hash, std::string_view email,
                         const std::vector<std::string>& roles, std::chrono::seconds ttl,
                         std::string_view created_by_id) override;
  std::vector<InviteRow> ListInvites() override;
  InviteStatus CheckInvite(std::string_view code_hash, std::string_view email) override;
  InviteStatus Signup(std::string_view code_hash, const NewAccount& fields,
                      AccountRow& account) override;

  ThrottleDecision BeginLogin(std::string_view email, std::string_view client,
                              const ThrottlePolicy& policy) override;
  void LoginSucceeded(std::string_view email, std::string_view client) override;

  std::string StartFamily(std::string_view account_id, std::string_view region) override;
  void AddRefreshToken(std::string_view family_id, std::string_view token_hash,
                       std::chrono::seconds ttl) override;
  RefreshOutcome RotateRefreshToken(std::string_view token_hash, std::string_view next_hash,
                                    std::chrono::seconds ttl) override;
  bool RevokeFamilyOf(std::string_view token_hash, std::string_view reason) override;
  void RevokeFamilyById(std::string_view family_id, std::string_view reason) override;
  void RevokeAccountFamilies(std::string_view account_id, std::string_view reason) override;

  std::vector<SigningKeyRow> ListPublishedKeys() override;
  std::optional<SigningKeyRow> ActiveKey(std::string_view region) override;
  std::optional<SigningKeyRow> FindKey(std::string_view kid) override;
  bool InsertActiveKeyIfAbsent(const SigningKeyRow& key) override;
  void RotateKey(const SigningKeyRow& key) override;
  RetireStatus RetireKey(std::string_view kid) override;

  std::vector<v1::Rule> ListRules() override;
  v1::Rule CreateRule(const v1::Rule& rule) override;
  bool DeleteRule(std::string_view id) override;
  bool SeedRulesIfEmpty(const std::vector<v1::Rule>& rules) override;

  void Audit(std::string_view actor, std::string_view action, std::string_view target,
             std::string_view detail) override;
  void Cleanup(const ThrottlePolicy& policy) override;

 private:
  std::string region_;
  db::Pool pool_;
};

// True for the canonical text form of a UUID (what the ids in this schema look like).
bool IsUuid(std::string_view text);

}  // namespace muon::auth
