#pragma once
// PostgreSQL access: a bounded pool of libpqxx connections. A Lease returns its connection on
// destruction; a connection that broke (server restart, network) is dropped and replaced by a new
// one on the next Acquire. Prepared statements are declared once on the pool and prepared on every
// connection it opens. Expected failures are classified as DbErrc (std::error_code).

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace muon::db {

enum class DbErrc {
  kOk = 0,
  kUnavailable,           // cannot connect, or the connection broke
  kPoolTimeout,           // no connection became free in time
  kUniqueViolation,       // SQLSTATE 23505
  kForeignKeyViolation,   // 23503
  kSerializationFailure,  // 40001 / 40P01 (retry the transaction)
  kInDoubt,               // commit outcome unknown
  kOther,
};
const std::error_category& DbCategory();
std::error_code make_error_code(DbErrc e);
// libpqxx 6 binds no arrays: a text[] goes as a literal ($1::text[]) and comes back parsed.
std::string TextArrayLiteral(const std::vector<std::string>& items);
std::vector<std::string> ParseTextArray(const pqxx::field& field);

// Classifies an exception thrown by libpqxx (or by the pool).
std::error_code Classify(const std::exception& e);

// Thrown by Acquire: code() is kPoolTimeout or kUnavailable.
class DbError : public std::runtime_error {
 public:
  DbError(std::error_code code, const std::string& what) : std::runtime_error(what), code_(code) {}
  std::error_code code() const { return code_; }

 private:
  std::error_code code_;
};

struct PoolOptions {
  std::string url;
  size_t max_connections = 8;
  std::chrono::milliseconds acquire_timeout{5000};
  std::string application_name;
  std::vector<std::pair<std::string, std::string>> prepared;  // name, SQL
};

class Pool {
 public:
  // Does not connect yet; call Check() at start-up to fail fast on a bad URL.
  explicit Pool(PoolOptions options);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  class Lease {
   public:
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    ~Lease();
    pqxx::connection& operator*() const { return *conn_; }
    pqxx::connection* operator->() const { return conn_.get(); }
    // Drops the connection instead of returning it to the pool.
    void MarkBroken() { broken_ = true; }

   private:
    friend class Pool;
    Lease(Pool* pool, std::unique_ptr<pqxx::connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}
    Pool* pool_;
    std::unique_ptr<pqxx::connection> conn_;
    bool broken_ = false;
  };

  // Waits up to acquire_timeout for a free slot; throws DbError.
  Lease Acquire();

  // Runs fn(connection) on a leased connection. When the connection turns out to be broken
  // (e.g. Postgres restarted since it was last used) and fn had not committed anything, retries
  // once on a fresh connection; the final failure propagates.
  template <typename F>
  auto Run(F&& fn) -> decltype(fn(std::declval<pqxx::connection&>())) {
    for (int attempt = 0;; ++attempt) {
      Lease lease = Acquire();
      try {
        return fn(*lease);
      } catch (const pqxx::broken_connection&) {
        lease.MarkBroken();
        if (attempt >= 1) throw;
      }
    }
  }

  // Opens (or reuses) a connection and runs SELECT 1; throws DbError when unreachable.
  void Check();

  size_t open_connections() const;
  size_t idle_connections() const;

 private:
  std::unique_ptr<pqxx::connection> Open();
  void Release(std::unique_ptr<pqxx::connection> conn, bool broken);

  PoolOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;
  size_t open_ = 0;  // leased + idle
};

}  // namespace muon::db

template <>
struct std::is_error_code_enum<muon::db::DbErrc> : std::true_type {};
