// The database pool and the migration runner against a real PostgreSQL.

#include "muon/common/db.h"

#include <fmt/format.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <thread>

#include "harness.h"
#include "muon/common/migrations.h"

using namespace std::chrono_literals;

namespace {

const std::vector<muon::db::Migration> kMigrations = {
    {1, "0001_items",
     "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL);"
     "INSERT INTO items (name) VALUES ('seed');"},
    {2, "0002_items_created",
     "ALTER TABLE items ADD COLUMN created timestamptz NOT NULL DEFAULT now();"},
};

int64_t CountRows(muon::db::Pool& pool, const std::string& sql) {
  return pool.Run([&](pqxx::connection& c) {
    pqxx::nontransaction tx(c);
    return tx.exec1(sql)[0].as<int64_t>();
  });
}

}  // namespace

TEST_CASE("migrations are applied exactly once with 4 concurrent starters", "[db]") {
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  std::atomic<int> applied_total{0};
  std::vector<std::thread> starters;
  std::vector<std::string> failures(4);
  for (int i = 0; i < 4; ++i) {
    starters.emplace_back([&, i] {
      try {
        muon::db::Pool pool({.url = url, .max_connections = 1});
        auto result = muon::db::Migrate(pool, "inventory", kMigrations);
        applied_total += static_cast<int>(result.applied.size());
        if (result.current_version != 2) failures[i] = "current_version != 2";
      } catch (const std::exception& e) {
        failures[i] = e.what();
      }
    });
  }
  for (auto& t : starters) t.join();
  for (const auto& f : failures) CHECK(f.empty());
  CHECK(applied_total == 2);

  muon::db::Pool pool({.url = url});
  CHECK(CountRows(pool, "SELECT count(*) FROM inventory.schema_migrations") == 2);
  CHECK(CountRows(pool, "SELECT count(*) FROM inventory.items") == 1);  // seed inserted once
  CHECK(CountRows(pool,
                  "SELECT count(*) FROM information_schema.columns "
                  "WHERE table_schema = 'inventory' AND column_name = 'created'") == 1);

  // A later start finds nothing to do.
  auto again = muon::db::Migrate(pool, "inventory", kMigrations);
  CHECK(again.applied.empty());
  CHECK(again.current_version == 2);
}

TEST_CASE("a failing migration leaves nothing half-written", "[db]") {
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::db::Pool pool({.url = url});
  muon::db::Migrate(pool, "inventory", kMigrations);
  auto broken = kMigrations;
  broken.push_back({3, "0003_broken", "CREATE TABLE extra (x int); SELECT no_such_function();"});
  CHECK_THROWS_WITH(muon::db::Migrate(pool, "inventory", broken),
                    Catch::Contains("migration 3 (0003_broken) of schema inventory failed"));
  CHECK(CountRows(pool, "SELECT count(*) FROM inventory.schema_migrations") == 2);
  CHECK(CountRows(pool,
                  "SELECT count(*) FROM information_schema.tables "
                  "WHERE table_schema = 'inventory' AND table_name = 'extra'") == 0);
}

TEST_CASE("an applied migration that was edited is refused", "[db]") {
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::db::Pool pool({.url = url});
  muon::db::Migrate(pool, "inventory", kMigrations);
  auto edited = kMigrations;
  edited[0].sql = "CREATE TABLE items (id int);";
  CHECK_THROWS_WITH(muon::db::Migrate(pool, "inventory", edited),
                    Catch::Contains("was changed after it was applied"));
}

TEST_CASE("the pool is bounded and prepares statements on each connection", "[db]") {
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::db::Pool pool({.url = url,
                       .max_connections = 2,
                       .acquire_timeout = 200ms,
                       .prepared = {{"add", "SELECT $1::int + $2::int"}}});
  {
    auto a = pool.Acquire();
    auto b = pool.Acquire();
    CHECK(pool.open_connections() == 2);
    try {
      pool.Acquire();
      FAIL("a third lease should time out");
    } catch (const muon::db::DbError& e) {
      CHECK(e.code() == muon::db::DbErrc::kPoolTimeout);
    }
    pqxx::nontransaction tx(*a);
    CHECK(tx.exec_prepared1("add", 2, 3)[0].as<int>() == 5);
    pqxx::nontransaction tx2(*b);
    CHECK(tx2.exec_prepared1("add", 4, 5)[0].as<int>() == 9);
  }
  CHECK(pool.idle_connections() == 2);
}

TEST_CASE("the pool survives a PostgreSQL restart", "[db]") {
  auto& pg = muon::testing::Postgres::Shared();
  const std::string url = pg.CreateDatabase();
  muon::db::Pool pool({.url = url, .max_connections = 3, .prepared = {{"answer", "SELECT 42"}}});
  auto query = [&] {
    return pool.Run([](pqxx::connection& c) {
      pqxx::nontransaction tx(c);
      return tx.exec_prepared1("answer")[0].as<int>();
    });
  };
  REQUIRE(query() == 42);
  pg.Restart();
  // Every idle connection is now dead; later calls replace them and succeed.
  for (int i = 0; i < 5; ++i) CHECK(query() == 42);
  CHECK(pool.open_connections() <= 3);

  // While the server is down, calls fail with kUnavailable instead of hanging.
  pg.Stop();
  try {
    query();
    FAIL("expected the query to fail while PostgreSQL is down");
  } catch (const std::exception& e) {
    CHECK(muon::db::Classify(e) == muon::db::DbErrc::kUnavailable);
  }
  pg.Start();
  CHECK(query() == 42);
}

TEST_CASE("a deadlock and a serialization failure classify as retryable, a duplicate as unique",
          "[db]") {
  const std::string url = muon::testing::Postgres::Shared().CreateDatabase();
  muon::db::Pool pool({.url = url, .max_connections = 2});
  pool.Run([](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec0("CREATE TABLE cells (id int PRIMARY KEY, v int NOT NULL)");
    tx.exec0("INSERT INTO cells VALUES (1, 0), (2, 0)");
    tx.commit();
  });
  auto classify = [](const std::function<void()>& fn) {
    try {
      fn();
    } catch (const std::exception& e) {
      return muon::db::Classify(e);
    }
    return std::error_code{};
  };

  // Two transactions update the two rows in opposite orders; PostgreSQL aborts one of them.
  std::atomic<int> first_updates{0};
  std::error_code results[2];
  std::vector<std::thread> threads;
  for (int i = 0; i < 2; ++i) {
    threads.emplace_back([&, i] {
      results[i] = classify([&] {
        pool.Run([&](pqxx::connection& c) {
          pqxx::work tx(c);
          tx.exec0(fmt::format("UPDATE cells SET v = v + 1 WHERE id = {}", i + 1));
          first_updates++;
          // Both hold their first row before either asks for the other's.
          while (first_updates.load() < 2) std::this_thread::yield();
          tx.exec0(fmt::format("UPDATE cells SET v = v + 1 WHERE id = {}", 2 - i));
          tx.commit();
        });
      });
    });
  }
  for (auto& t : threads) t.join();
  const bool one_deadlocked =
      (results[0] == muon::db::DbErrc::kSerializationFailure && !results[1]) ||
      (results[1] == muon::db::DbErrc::kSerializationFailure && !results[0]);
  INFO("results: " << results[0].message() << " / " << results[1].message());
  CHECK(one_deadlocked);

  // A serializable transaction that read what another changed meanwhile.
  CHECK(classify([&] {
          pqxx::connection a(url), b(url);
          pqxx::work ta(a, "a");
          ta.exec0("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE");
          ta.exec1("SELECT v FROM cells WHERE id = 1");
          {
            pqxx::work tb(b, "b");
            tb.exec0("UPDATE cells SET v = v + 10 WHERE id = 1");
            tb.commit();
          }
          ta.exec0("UPDATE cells SET v = v + 1 WHERE id = 1");
          ta.commit();
        }) == muon::db::DbErrc::kSerializationFailure);

  CHECK(classify([&] {
          pqxx::connection a(url);
          pqxx::work ta(a);
          ta.exec0("INSERT INTO cells VALUES (1, 0)");
        }) == muon::db::DbErrc::kUniqueViolation);
}
