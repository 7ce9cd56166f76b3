#include "muon/common/db.h"

#include <fmt/format.h>

#include "muon/common/log.h"

namespace muon::db {
namespace {

class DbCategoryImpl : public std::error_category {
 public:
  const char* name() const noexcept override { return "muon.db"; }
  std::string message(int value) const override {
    switch (static_cast<DbErrc>(value)) {
      case DbErrc::kOk:
        return "ok";
      case DbErrc::kUnavailable:
        return "database unavailable";
      case DbErrc::kPoolTimeout:
        return "no database connection free in time";
      case DbErrc::kUniqueViolation:
        return "unique constraint violated";
      case DbErrc::kForeignKeyViolation:
        return "foreign key constraint violated";
      case DbErrc::kSerializationFailure:
        return "serialization failure, retry";
      case DbErrc::kInDoubt:
        return "commit outcome unknown";
      case DbErrc::kOther:
        return "database error";
    }
    return "unknown database error";
  }
};

}  // namespace

const std::error_category& DbCategory() {
  static DbCategoryImpl category;
  return category;
}

std::error_code make_error_code(DbErrc e) {
  return {static_cast<int>(e), DbCategory()};
}

std::string TextArrayLiteral(const std::vector<std::string>& items) {
  std::string out = "{";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : items[i]) {
      if (c == '"' || c == '\\') out += '\\';
      if (c == '\0') continue;
      out += c;
    }
    out += '"';
  }
  return out + "}";
}

std::vector<std::string> ParseTextArray(const pqxx::field& field) {
  std::vector<std::string> out;
  auto parser = field.as_array();
  for (auto item = parser.get_next(); item.first != pqxx::array_parser::done;
       item = parser.get_next()) {
    if (item.first == pqxx::array_parser::string_value) out.push_back(item.second);
  }
  return out;
}

std::error_code Classify(const std::exception& e) {
  if (const auto* db = dynamic_cast<const DbError*>(&e)) return db->code();
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e)) return DbErrc::kInDoubt;
  if (dynamic_cast<const pqxx::broken_connection*>(&e)) return DbErrc::kUnavailable;
  if (dynamic_cast<const pqxx::unique_violation*>(&e)) return DbErrc::kUniqueViolation;
  if (dynamic_cast<const pqxx::foreign_key_violation*>(&e)) return DbErrc::kForeignKeyViolation;
  // libpqxx 6 derives these from pqxx::failure, not from sql_error: no SQLSTATE to read.
  if (dynamic_cast<const pqxx::serialization_failure*>(&e) ||
      dynamic_cast<const pqxx::deadlock_detected*>(&e)) {
    return DbErrc::kSerializationFailure;
  }
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    if (sql->sqlstate() == "40001" || sql->sqlstate() == "40P01") {
      return DbErrc::kSerializationFailure;
    }
  }
  return DbErrc::kOther;
}

Pool::Pool(PoolOptions options) : options_(std::move(options)) {
  if (options_.max_connections == 0) throw std::invalid_argument("pool needs max_connections > 0");
}

Pool::~Pool() {
  std::unique_lock lock(mu_);
  // Leases must not outlive the pool; waiting here turns a use-after-free into a visible hang.
  // Polled: Release wakes one waiter, which may be an Acquire rather than this.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (open_ != idle_.size()) {
    if (std::chrono::steady_clock::now() > deadline) {
      log::Error("database pool destroyed with leased connections outstanding");
      std::terminate();
    }
    cv_.wait_for(lock, std::chrono::milliseconds(10));
  }
  idle_.clear();
}

std::unique_ptr<pqxx::connection> Pool::Open() {
  auto conn = std::make_unique<pqxx::connection>(options_.url);
  if (!options_.application_name.empty()) {
    pqxx::nontransaction tx(*conn);
    tx.exec("SET application_name = " + tx.quote(options_.application_name));
  }
  for (const auto& [name, sql] : options_.prepared) conn->prepare(name, sql);
  return conn;
}

Pool::Lease Pool::Acquire() {
  std::unique_lock lock(mu_);
  const auto deadline = std::chrono::steady_clock::now() + options_.acquire_timeout;
  for (;;) {
    if (!idle_.empty()) {
      auto conn = std::move(idle_.back());
      idle_.pop_back();
      if (conn->is_open()) return Lease(this, std::move(conn));
      --open_;  // known dead: drop it and look again
      continue;
    }
    if (open_ < options_.max_connections) {
      ++open_;
      lock.unlock();
      try {
        return Lease(this, Open());
      } catch (const std::exception& e) {
        lock.lock();
        --open_;
        cv_.notify_one();
        throw DbError(DbErrc::kUnavailable,
                      fmt::format("cannot connect to PostgreSQL: {}", e.what()));
      }
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= options_.max_connections) {
      throw DbError(DbErrc::kPoolTimeout,
                    fmt::format("all {} database connections busy for {}ms",
                                options_.max_connections, options_.acquire_timeout.count()));
    }
  }
}

void Pool::Release(std::unique_ptr<pqxx::connection> conn, bool broken) {
  std::lock_guard lock(mu_);
  if (broken || !conn || !conn->is_open()) {
    --open_;
  } else {
    idle_.push_back(std::move(conn));
  }
  // One slot came free: one waiter can use it (waking all of them made dozens of threads fight
  // for each connection under load).
  cv_.notify_one();
}

void Pool::Check() {
  Run([](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    tx.exec("SELECT 1");
  });
}

size_t Pool::open_connections() const {
  std::lock_guard lock(mu_);
  return open_;
}

size_t Pool::idle_connections() const {
  std::lock_guard lock(mu_);
  return idle_.size();
}

Pool::Lease::Lease(Lease&& other) noexcept
    : pool_(other.pool_), conn_(std::move(other.conn_)), broken_(other.broken_) {
  other.pool_ = nullptr;
}

Pool::Lease::~Lease() {
  if (pool_ == nullptr) return;
  pool_->Release(std::move(conn_), broken_);
}

}  // namespace muon::db
