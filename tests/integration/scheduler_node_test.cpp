// The node runtime against a real nats-server and PostgreSQL, running muon-echo from an artifact
// packed here and served by a stand-in builder (FetchArtifact over the bus): an instance becomes
// healthy (PING with its id, ver.echo.v1.Echo), a kill -9 is repaired with a restart and its
// events, a command exiting at once is a start_failed with its exit code and last lines,
// desired=stopped drains it and removes its dir, a command that never answers is a
// health_timeout, and muon.node.<id>.Exec runs a command in the instance's dir.

#include <signal.h>
#include <sys/types.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <vector>

#include "artifact.h"
#include "dry_run_driver.h"
#include "event_log.h"
#include "harness.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/common/db.h"
#include "muon/common/errors.h"
#include "muon/common/migrations.h"
#include "muon/common/secret_box.h"
#include "muon/common/service.h"
#include "muon/echo/v1/echo.pb.h"
#include "muon/scheduler/v1/scheduler.pb.h"
#include "node_agent.h"
#include "node_store.h"
#include "process_driver.h"

namespace muon::migrations_generated {
const std::vector<db::Migration>& muon_scheduler_lib_migrations();
}  // namespace muon::migrations_generated

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using muon::testing::WaitUntil;

namespace {

constexpr const char* kKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

std::string Manifest(const std::string& command, const std::string& health) {
  return "name: echo\n"
         "build:\n"
         "  steps: [{run: 'true'}]\n"
         "  outputs: [.]\n"
         "run:\n"
         "  command: \"" +
         command + "\"\n  health: " + health + "\n  drain_grace: 15s\n";
}

// MUON_TEST_NODE_SANDBOX=none|bwrap|auto (default auto) runs the cases with that sandbox.
muon::scheduler::SandboxMode SandboxFromEnv() {
  const char* text = std::getenv("MUON_TEST_NODE_SANDBOX");
  return muon::scheduler::ParseSandboxMode(text ? text : "auto")
      .value_or(muon::scheduler::SandboxMode::kAuto);
}

struct Fixture {
  muon::testing::NatsServer nats;
  muon::testing::TempDir tmp{"muon-test-node"};
  muon::db::Pool pool{
      {.url = muon::testing::Postgres::Shared().CreateDatabase(), .max_connections = 8}};
  std::unique_ptr<muon::bus::Connection> bus =
      muon::bus::Connection::Connect({.url = nats.url(), .name = "node-test"});
  std::unique_ptr<muon::Service> builder;
  muon::SecretBox box{kKey};
  std::unique_ptr<muon::scheduler::PgEventLog> events;
  std::unique_ptr<muon::scheduler::PgNodeStore> store;
  std::unique_ptr<muon::scheduler::ProcessDriver> driver;
  std::unique_ptr<muon::scheduler::NodeAgent> agent;
  std::string digest;
  fs::path artifact;
  std::atomic<int> fetches{0};

  Fixture() {
    REQUIRE(bus->WaitConnected(5s));
    muon::db::Migrate(pool, "scheduler",
                      muon::migrations_generated::muon_scheduler_lib_migrations());
    // The artifact: muon-echo, as a build of examples/echo would hold it.
    const fs::path src = fs::path(tmp.path()) / "src";
    fs::create_directories(src);
    fs::copy_file(fs::path(muon::testing::BinDir()) / "muon-echo", src / "muon-echo");
    artifact = fs::path(tmp.path()) / "echo.tar.gz";
    digest = muon::builder::PackArtifact(src, {"."}, artifact).digest;

    // A stand-in for the builder's FetchArtifact.
    builder = std::make_unique<muon::Service>(
        *bus, muon::ServiceOptions{.name = "builder", .kind = muon::ServiceKind::kPlatform});
    builder->AddEndpoint<muon::builder::v1::FetchArtifactRequest,
                         muon::builder::v1::FetchArtifactResponse>(
        "FetchArtifact", [this](const auto& req, muon::RequestContext&) {
          if (req.digest() != digest) throw muon::Error::NotFound("no artifact " + req.digest());
          ++fetches;
          std::ifstream in(artifact, std::ios::binary);
          std::stringstream all;
          all << in.rdbuf();
          const std::string data = all.str();
          muon::builder::v1::FetchArtifactResponse resp;
          resp.set_size(static_cast<int64_t>(data.size()));
          const auto offset = static_cast<size_t>(req.offset());
          // Small chunks, so the node pieces the file together.
          if (offset < data.size()) resp.set_data(data.substr(offset, 256 * 1024));
          return resp;
        });
    builder->Start();

    Exec("INSERT INTO scheduler.services (name) VALUES ('echo')");
    AddRelease(1, Manifest("./muon-echo", "{rpc: Echo, timeout: 20s}"));
    events = std::make_unique<muon::scheduler::PgEventLog>(pool, bus.get(), "local");
    store = std::make_unique<muon::scheduler::PgNodeStore>(pool, box);
    driver = std::make_unique<muon::scheduler::ProcessDriver>(
        *bus, muon::scheduler::ProcessDriverOptions{.sandbox = SandboxFromEnv(),
                                                    .state_dir = fs::path(tmp.path()) / "node"});
    agent = std::make_unique<muon::scheduler::NodeAgent>(
        *store, *events, *bus, *driver,
        muon::scheduler::NodeOptions{.node_id = "node-a",
                                     .region = "local",
                                     .state_dir = fs::path(tmp.path()) / "node",
                                     .nats_url = nats.url(),
                                     .poll = 200ms,
                                     .backoff_initial = 300ms,
                                     .backoff_max = 2s});
    agent->Start();
  }

  ~Fixture() {
    agent->Stop();
    builder->Stop(1s);
  }

  void Exec(const std::string& sql) {
    pool.Run([&](pqxx::connection& c) {
      pqxx::work tx(c);
      tx.exec(sql);
      tx.commit();
    });
  }

  void AddRelease(int version, const std::string& manifest,
                  const std::string& digest_override = "") {
    pool.Run([&](pqxx::connection& c) {
      pqxx::work tx(c);
      tx.exec_params(
          "INSERT INTO scheduler.releases (service, version, artifact_digest, manifest, "
          "config_version, env, secrets, reason, build_id) "
          "VALUES ('echo', $1::int, $2, $3, 1, '{\"GREETING\": \"hi\"}', $4, 'build', 'b' || "
          "$1::text)",
          version, digest_override.empty() ? digest : digest_override, manifest,
          pqxx::binarystring(box.Seal("{\"API_KEY\": \"s3cret-value\"}")));
      tx.commit();
    });
  }

  void Place(const std::string& id, int version) {
    pool.Run([&](pqxx::connection& c) {
      pqxx::work tx(c);
      tx.exec_params(
          "INSERT INTO scheduler.instances (id, service, version, node) "
          "VALUES ($1, 'echo', $2, 'node-a')",
          id, version);
      tx.commit();
    });
    agent->Kick();
  }

  struct Row {
    std::string state;
    int pid = 0;
    int restarts = 0;
    std::string category;
    std::string detail;
    std::vector<std::string> last_lines;
    bool healthy_at = false;
  };
  Row Get(const std::string& id) {
    return pool.Run([&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      auto r = tx.exec_params1(
          "SELECT state, pid, restarts, category, detail, last_lines, healthy_at IS NOT NULL "
          "FROM scheduler.instances WHERE id = $1",
          id);
      return Row{r[0].as<std::string>(), r[1].as<int>(),         r[2].as<int>(),
                 r[3].as<std::string>(), r[4].as<std::string>(), muon::db::ParseTextArray(r[5]),
                 r[6].as<bool>()};
    });
  }
  bool WaitState(const std::string& id, const std::string& state, std::chrono::milliseconds d) {
    return WaitUntil([&] { return Get(id).state == state; }, d, 50ms);
  }
  int64_t Events(const std::string& id, const std::string& type) {
    return pool.Run([&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      return tx
          .exec_params1("SELECT count(*) FROM scheduler.events WHERE instance = $1 AND type = $2",
                        id, type)[0]
          .as<int64_t>();
    });
  }
  bool ProcessExists(int pid) { return pid > 0 && ::kill(pid, 0) == 0; }
  fs::path Dir(const std::string& id) { return fs::path(tmp.path()) / "node" / "instances" / id; }
};

}  // namespace

TEST_CASE_METHOD(Fixture, "an instance starts, becomes healthy and answers", "[scheduler][node]") {
  const std::string id = "echo-0000aaaa";
  Place(id, 1);
  REQUIRE(WaitState(id, "healthy", 20s));
  const Row row = Get(id);
  CHECK(row.pid > 0);
  CHECK(row.restarts == 0);
  CHECK(row.category.empty());
  CHECK(row.healthy_at);
  CHECK(fs::exists(Dir(id) / "muon-echo"));
  CHECK(fetches.load() >= 1);

  muon::bus::Msg reply;
  REQUIRE_FALSE(bus->Request("$SRV.PING.echo." + id, "", {}, 2s, reply));
  CHECK(std::string(reply.data()).find("\"id\":\"" + id + "\"") != std::string::npos);

  muon::echo::v1::EchoRequest req;
  req.set_message("hello");
  muon::echo::v1::EchoResponse resp;
  muon::Call(*bus, "ver.echo.v1.Echo", req, resp, 2s);
  CHECK(resp.message().find("hello") != std::string::npos);

  CHECK(Events(id, "instance.started") == 1);
  CHECK(Events(id, "instance.healthy") == 1);
  int64_t nodes = pool.Run([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx
        .exec(
            "SELECT count(*) FROM scheduler.nodes WHERE id = 'node-a' AND "
            "last_seen > now() - interval '5 seconds'")[0][0]
        .as<int64_t>();
  });
  CHECK(nodes == 1);

  // muon exec: the command runs in the instance's dir with its env.
  muon::scheduler::v1::ExecRequest exec;
  exec.set_service("echo");
  exec.add_command("sh");
  exec.add_command("-c");
  exec.add_command("ls; echo \"$MUON_INSTANCE $GREETING $API_KEY\"; exit 4");
  muon::bus::Msg exec_reply;
  REQUIRE_FALSE(
      bus->Request("muon.node.node-a.Exec", exec.SerializeAsString(), {}, 10s, exec_reply));
  CHECK_FALSE(exec_reply.Header(muon::bus::kHeaderServiceError));
  muon::scheduler::v1::ExecResponse exec_resp;
  REQUIRE(exec_resp.ParseFromArray(exec_reply.data().data(),
                                   static_cast<int>(exec_reply.data().size())));
  CHECK(exec_resp.exit_code() == 4);
  CHECK(exec_resp.instance() == id);
  CHECK(exec_resp.output().find("muon-echo") != std::string::npos);
  CHECK(exec_resp.output().find(id + " hi s3cret-value") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "an instance killed with -9 is restarted and says so",
                 "[scheduler][node]") {
  const std::string id = "echo-0000bbbb";
  Place(id, 1);
  REQUIRE(WaitState(id, "healthy", 20s));
  const int pid = Get(id).pid;
  REQUIRE(::kill(pid, SIGKILL) == 0);
  REQUIRE(WaitUntil(
      [&] {
        const Row r = Get(id);
        return r.state == "healthy" && r.restarts == 1;
      },
      20s, 50ms));
  const Row row = Get(id);
  CHECK(row.pid != pid);
  CHECK_FALSE(ProcessExists(pid));
  CHECK(row.category.empty());
  CHECK(Events(id, "instance.exited") == 1);
  CHECK(Events(id, "instance.restarted") == 1);
  const std::string message = pool.Run([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx
        .exec_params1(
            "SELECT message FROM scheduler.events WHERE instance = $1 AND "
            "type = 'instance.exited'",
            id)[0]
        .as<std::string>();
  });
  CHECK(message.find("signal 9") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "a command that exits at once is a start failure with its output",
                 "[scheduler][node]") {
  AddRelease(2, Manifest("sh -c 'echo boom >&2; exit 3'", "{timeout: 20s}"));
  const std::string id = "echo-0000cccc";
  Place(id, 2);
  REQUIRE(WaitUntil([&] { return Get(id).category == "start_failed"; }, 15s, 50ms));
  const Row row = Get(id);
  CHECK(row.detail.find("exit code 3") != std::string::npos);
  CHECK(std::find(row.last_lines.begin(), row.last_lines.end(), "boom") != row.last_lines.end());
  // It keeps trying, with backoff.
  REQUIRE(WaitUntil([&] { return Get(id).restarts >= 2; }, 10s, 50ms));
  CHECK(Get(id).category == "start_failed");
}

TEST_CASE_METHOD(Fixture, "an artifact that cannot be fetched is a start failure",
                 "[scheduler][node]") {
  const std::string missing(64, 'a');
  AddRelease(4, Manifest("./muon-echo", "{timeout: 20s}"), missing);
  const std::string id = "echo-0000eeee";
  Place(id, 4);
  REQUIRE(WaitUntil([&] { return Get(id).category == "start_failed"; }, 15s, 50ms));
  const Row row = Get(id);
  CHECK(row.state == "backoff");
  CHECK(row.detail.find("artifact " + missing + " could not be fetched") != std::string::npos);
}

TEST_CASE_METHOD(Fixture, "desired stopped drains the instance and removes its dir",
                 "[scheduler][node]") {
  const std::string id = "echo-0000dddd";
  Place(id, 1);
  REQUIRE(WaitState(id, "healthy", 20s));
  const int pid = Get(id).pid;
  REQUIRE(fs::exists(Dir(id)));
  Exec("UPDATE scheduler.instances SET desired = 'stopped' WHERE id = '" + id + "'");
  agent->Kick();
  // The grace is long (15 s) so that only a missed SIGTERM ends in SIGKILL, not a slow drain on
  // a loaded machine (an ASan echo once took over 3 s while CI's host was four times slower).
  REQUIRE(WaitState(id, "stopped", 30s));
  CHECK_FALSE(ProcessExists(pid));
  CHECK_FALSE(fs::exists(Dir(id)));
  CHECK(Get(id).pid == 0);
  CHECK(Events(id, "instance.stopped") == 1);
  // Drained with SIGTERM: the echo service exits by itself (exit code 0), well within the grace.
  const std::string message = pool.Run([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx
        .exec_params1(
            "SELECT message FROM scheduler.events WHERE instance = $1 AND "
            "type = 'instance.stopped'",
            id)[0]
        .as<std::string>();
  });
  INFO(message);
  CHECK(message.find("exit code 0") != std::string::npos);
  muon::bus::Msg reply;
  CHECK(bus->Request("$SRV.PING.echo." + id, "", {}, 500ms, reply));
}

TEST_CASE_METHOD(Fixture, "an instance that never answers is killed as a health timeout",
                 "[scheduler][node]") {
  AddRelease(3, Manifest("sleep 600", "{timeout: 2s}"));
  const std::string id = "echo-0000ffff";
  Place(id, 3);
  REQUIRE(WaitState(id, "starting", 10s));
  const int pid = Get(id).pid;
  REQUIRE(WaitUntil([&] { return Get(id).category == "health_timeout"; }, 10s, 50ms));
  const Row row = Get(id);
  CHECK(row.detail.find("not healthy within 2s") != std::string::npos);
  CHECK(row.detail.find("$SRV.PING.echo." + id) != std::string::npos);
  CHECK(Events(id, "instance.health_timeout") == 1);
  CHECK(WaitUntil([&] { return !ProcessExists(pid); }, 5s));
}

TEST_CASE("the dry-run driver reports instances healthy at once", "[scheduler][node]") {
  muon::testing::NatsServer nats;
  muon::testing::TempDir tmp{"muon-test-node-dry"};
  muon::db::Pool pool{
      {.url = muon::testing::Postgres::Shared().CreateDatabase(), .max_connections = 4}};
  muon::db::Migrate(pool, "scheduler", muon::migrations_generated::muon_scheduler_lib_migrations());
  auto bus = muon::bus::Connection::Connect({.url = nats.url()});
  muon::SecretBox box{kKey};
  muon::scheduler::PgEventLog events(pool, bus.get(), "local");
  muon::scheduler::PgNodeStore store(pool, box);
  muon::scheduler::DryRunDriver driver;
  pool.Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec("INSERT INTO scheduler.services (name) VALUES ('echo')");
    tx.exec_params(
        "INSERT INTO scheduler.releases (service, version, artifact_digest, manifest, "
        "config_version, reason) VALUES ('echo', 1, $1, $2, 1, 'build')",
        std::string(64, 'b'), Manifest("./muon-echo", "{timeout: 5s}"));
    for (int i = 0; i < 3; ++i) {
      tx.exec_params(
          "INSERT INTO scheduler.instances (id, service, version, node) "
          "VALUES ($1, 'echo', 1, 'sim-1')",
          "echo-dry" + std::to_string(i));
    }
    tx.commit();
  });
  muon::scheduler::NodeAgent agent(
      store, events, *bus, driver,
      {.node_id = "sim-1", .state_dir = fs::path(tmp.path()) / "node", .poll = 100ms});
  agent.Start();
  auto healthy = [&] {
    return pool.Run([&](pqxx::connection& c) {
      pqxx::read_transaction tx(c);
      return tx.exec("SELECT count(*) FROM scheduler.instances WHERE state = 'healthy'")[0][0]
          .as<int>();
    });
  };
  REQUIRE(WaitUntil([&] { return healthy() == 3; }, 5s));
  CHECK(driver.running() == 3);
  pool.Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec("UPDATE scheduler.instances SET desired = 'stopped'");
    tx.commit();
  });
  REQUIRE(WaitUntil([&] { return driver.running() == 0; }, 5s));
  agent.Stop();
}
