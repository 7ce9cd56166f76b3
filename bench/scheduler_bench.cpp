// Controller scale (scheduler issue target): 1,000 services x 3 replicas placed on 50 simulated
// nodes at 1,500 placements/s or more. Starts its own nats-server and PostgreSQL
// (tests/support/harness.h); the controller, 50 NodeAgents (each with its own DryRunDriver, node
// id, connection pool, event log and state dir, as 50 node processes would have) and the bus
// connections all run in this process, against the real database and bus.
//
//   steady   every service has a live release (status live, services.live_version set): the
//            controller's steady state places its replicas. Timed from the start of the first
//            Controller::ReconcileOnce() (called directly, as the leader's loop does) until every
//            instance row exists (placed), and until the nodes reported every one healthy. The
//            agents run during the pass (they poll every 500 ms and start what they find), so on
//            a small machine they compete with the controller for the CPUs.
//   controller-alone  the same, but the bench writes the 50 node rows (alive) and starts the
//            agents only after the pass: the controller's own placement rate, then the nodes'.
//   rollout  every service has a pending release: the first pass starts 1,000 rollouts (lock,
//            events) and places their instances; then the controller's own loop (Start()) runs
//            them to the end (healthy for min_ready, --min-ready-ms, default the product's 3 s).
//
// Reference, same run and database: the bare SQL the placements need, one connection, parameters
// as the store sends them: 3,000 INSERTs of instance rows in one transaction; the same in 1,000
// transactions of 3 (a transaction per service, as ApplyInstances); the same plus one event row
// per service in a transaction of its own (the writes the controller's placement path makes);
// and the nodes' side (per instance 2 UPDATEs and 2 event INSERTs, each its own transaction).
//
// Postgres runs with the harness's settings (fsync and synchronous_commit off) for the scheduler
// and the reference alike.
//
// Usage: scheduler_bench [--services 1000] [--replicas 3] [--nodes 50] [--node-pool 3]
//                        [--min-ready-ms 3000] [--no-steady] [--no-alone] [--no-rollout]

#include <fmt/format.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "controller.h"
#include "dry_run_driver.h"
#include "event_log.h"
#include "harness.h"
#include "manifest.h"
#include "muon/common/bus.h"
#include "muon/common/db.h"
#include "muon/common/log.h"
#include "muon/common/secret_box.h"
#include "node_agent.h"
#include "node_store.h"
#include "scheduler_store.h"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;
namespace sch = muon::scheduler;

namespace {

constexpr const char* kKey = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

struct Args {
  int services = 1000;
  int replicas = 3;
  int nodes = 50;
  int node_pool = 3;  // connections per simulated node
  int min_ready_ms = 3000;
  bool steady = true;
  bool alone = true;
  bool rollout = true;
};

void Usage(FILE* out) {
  fmt::print(out,
             "usage: scheduler_bench [options]\n"
             "  --services N      services (default 1000)\n"
             "  --replicas N      replicas each (default 3)\n"
             "  --nodes N         simulated nodes (default 50)\n"
             "  --node-pool N     database connections per node (default 3)\n"
             "  --min-ready-ms N  controller min_ready for the rollout case (default 3000)\n"
             "  --no-steady | --no-alone | --no-rollout   skip a case\n");
}

Args ParseArgs(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> int {
      if (i + 1 >= argc) {
        fmt::print(stderr, "{} needs a value\n", arg);
        std::exit(2);
      }
      return std::stoi(argv[++i]);
    };
    if (arg == "--services") {
      a.services = std::max(1, value());
    } else if (arg == "--replicas") {
      a.replicas = std::clamp(value(), 1, 100);
    } else if (arg == "--nodes") {
      a.nodes = std::max(1, value());
    } else if (arg == "--node-pool") {
      a.node_pool = std::max(1, value());
    } else if (arg == "--min-ready-ms") {
      a.min_ready_ms = std::max(0, value());
    } else if (arg == "--no-steady") {
      a.steady = false;
    } else if (arg == "--no-alone") {
      a.alone = false;
    } else if (arg == "--no-rollout") {
      a.rollout = false;
    } else if (arg == "-h" || arg == "--help") {
      Usage(stdout);
      std::exit(0);
    } else {
      Usage(stderr);
      std::exit(2);
    }
  }
  return a;
}

double Seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

double CpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::string Manifest(const std::string& name, int replicas) {
  return fmt::format(
      "name: {}\nbuild:\n  steps: [{{run: 'true'}}]\n  outputs: [.]\nrun:\n  command: ./run\n"
      "  replicas: {}\n",
      name, replicas);
}

std::string ServiceName(int i) {
  return fmt::format("s{:04d}", i);
}

int Count(muon::db::Pool& pool, const std::string& sql) {
  return pool.Run([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx.exec(sql)[0][0].as<int>();
  });
}

// Polls `count` until it reaches `want` or `deadline` passes; the time it was first seen there.
std::optional<Clock::time_point> PollUntil(const std::function<int()>& count, int want,
                                           std::chrono::milliseconds deadline) {
  const auto until = Clock::now() + deadline;
  while (Clock::now() < until) {
    if (count() >= want) return Clock::now();
    std::this_thread::sleep_for(20ms);
  }
  return std::nullopt;
}

struct SimNode {
  std::unique_ptr<muon::db::Pool> pool;
  std::unique_ptr<sch::PgNodeStore> store;
  std::unique_ptr<sch::PgEventLog> events;
  std::unique_ptr<sch::DryRunDriver> driver;
  std::unique_ptr<sch::NodeAgent> agent;
};

struct CaseResult {
  bool ran = false;
  bool complete = false;
  int instances = 0;
  int first_pass_placed = 0;
  double first_pass_s = 0;
  int passes = 0;
  double placed_s = 0;
  double healthy_s = 0;
  double succeeded_s = 0;  // rollout case
  double setup_s = 0;
  double nodes_started_s = 0;  // agents started this long after t0 (controller-alone case)
  double cpu_placed_s = 0;     // this process' CPU while placing
  int events = 0;
};

CaseResult RunCase(const Args& a, const std::string& name, bool rollout,
                   bool nodes_during_placement, muon::testing::NatsServer& nats,
                   muon::testing::Postgres& pg, const std::string& dir) {
  CaseResult out;
  out.ran = true;
  const int want = a.services * a.replicas;
  const std::string url = pg.CreateDatabase();
  muon::SecretBox box{kKey};
  // The controller's pool as SchedulerApp sizes it.
  muon::db::Pool pool(muon::db::PoolOptions{
      .url = url, .max_connections = 12, .application_name = "bench-controller"});
  sch::Store store(pool, box);
  store.Migrate();

  // ---- desired state ----
  const auto setup0 = Clock::now();
  const std::string probe = Manifest(ServiceName(0), a.replicas);
  if (const auto parsed = muon::builder::ParseManifest(probe); !parsed.manifest) {
    throw std::runtime_error("bench manifest rejected: " +
                             muon::builder::FormatManifestErrors(parsed.errors, "muon.yaml"));
  }
  for (int i = 0; i < a.services; ++i) {
    const std::string s = ServiceName(i);
    bool created = false;
    const auto release =
        store.CreateRelease(sch::NewRelease{.service = s,
                                            .repo = "acme/bench",
                                            .folder = s,
                                            .artifact_digest = std::string(64, 'b'),
                                            .manifest = Manifest(s, a.replicas),
                                            .commit = fmt::format("{:040x}", i + 1),
                                            .author = "bench",
                                            .build_id = fmt::format("build-{}", i),
                                            .reason = "build",
                                            .manifest_replicas = a.replicas},
                            created);
    if (!rollout) {
      store.SetReleaseStatus(s, release.version(), "live");
      store.SetLive(s, release.version());
    }
  }
  out.setup_s = Seconds(Clock::now() - setup0);

  // ---- nodes ----
  auto bus = muon::bus::Connection::Connect({.url = nats.url(), .name = "bench-" + name});
  auto node_bus = muon::bus::Connection::Connect({.url = nats.url(), .name = "bench-nodes"});
  if (!bus->WaitConnected(5s) || !node_bus->WaitConnected(5s)) {
    throw std::runtime_error("NATS not reachable");
  }
  std::vector<SimNode> nodes(static_cast<size_t>(a.nodes));
  auto node_id = [](int n) { return fmt::format("sim-{:02d}", n + 1); };
  auto start_nodes = [&] {
    for (int n = 0; n < a.nodes; ++n) {
      SimNode& node = nodes[static_cast<size_t>(n)];
      const std::string id = node_id(n);
      node.pool = std::make_unique<muon::db::Pool>(
          muon::db::PoolOptions{.url = url,
                                .max_connections = static_cast<size_t>(a.node_pool),
                                .application_name = "bench-" + id});
      node.store = std::make_unique<sch::PgNodeStore>(*node.pool, box);
      node.events = std::make_unique<sch::PgEventLog>(*node.pool, node_bus.get(), "local");
      node.driver = std::make_unique<sch::DryRunDriver>();
      node.agent =
          std::make_unique<sch::NodeAgent>(*node.store, *node.events, *node_bus, *node.driver,
                                           sch::NodeOptions{.node_id = id,
                                                            .region = "local",
                                                            .state_dir = fs::path(dir) / name / id,
                                                            .nats_url = nats.url()});
      node.agent->Start();
    }
  };
  if (nodes_during_placement) {
    start_nodes();
    if (!PollUntil([&] { return static_cast<int>(store.Nodes(5000ms).size()); }, a.nodes, 30s)) {
      throw std::runtime_error("the simulated nodes did not all heartbeat within 30 s");
    }
  } else {
    // The node rows as heartbeats leave them (alive for the pass); the agents start after it.
    pool.Run([&](pqxx::connection& c) {
      pqxx::work tx(c);
      for (int n = 0; n < a.nodes; ++n) {
        tx.exec_params(
            "INSERT INTO scheduler.nodes (id, region, host, last_seen) VALUES ($1, 'local', "
            "'bench', now() + interval '1 hour')",
            node_id(n));
      }
      tx.commit();
    });
  }

  sch::PgEventLog events(pool, bus.get(), "local");
  sch::Controller controller(
      sch::ControllerOptions{.database_url = url,
                             .id = "bench",
                             .min_ready = std::chrono::milliseconds(a.min_ready_ms)},
      store, events, bus.get());
  const int events_before = Count(pool, "SELECT count(*) FROM scheduler.events");

  // ---- placement: reconcile passes until every row exists ----
  auto placed_rows = [&] {
    return Count(pool, "SELECT count(*) FROM scheduler.instances WHERE desired = 'running'");
  };
  const double cpu0 = CpuSeconds();
  const auto t0 = Clock::now();
  int placed = 0;
  while (placed < want && Clock::now() - t0 < 120s) {
    const auto p0 = Clock::now();
    const int n = controller.ReconcileOnce();
    placed += n;
    if (out.passes++ == 0) {
      out.first_pass_s = Seconds(Clock::now() - p0);
      out.first_pass_placed = n;
    }
  }
  const auto t_placed = Clock::now();
  out.cpu_placed_s = CpuSeconds() - cpu0;
  out.instances = placed_rows();
  out.placed_s = Seconds(t_placed - t0);
  out.events = Count(pool, "SELECT count(*) FROM scheduler.events") - events_before;

  // ---- the nodes run them; the controller's loop goes on (it ends the rollouts) ----
  Clock::time_point nodes_started = t0;
  if (!nodes_during_placement) {
    nodes_started = Clock::now();
    start_nodes();
    out.nodes_started_s = Seconds(nodes_started - t0);
  }
  controller.Start();
  auto healthy_rows = [&] {
    return Count(pool,
                 "SELECT count(*) FROM scheduler.instances WHERE desired = 'running' AND "
                 "state = 'healthy'");
  };
  if (auto t = PollUntil(healthy_rows, want, 180s)) out.healthy_s = Seconds(*t - t0);
  if (rollout) {
    auto succeeded = [&] {
      return Count(pool, "SELECT count(*) FROM scheduler.rollouts WHERE state = 'succeeded'");
    };
    if (auto t = PollUntil(succeeded, a.services, 180s)) out.succeeded_s = Seconds(*t - t0);
    out.complete = out.healthy_s > 0 && out.succeeded_s > 0;
  } else {
    out.complete = out.healthy_s > 0;
  }
  controller.Stop();
  fmt::print(
      "  {}: placed {}/{} rows in {:.3f} s ({} passes; first pass {:.3f} s, {} placed); "
      "healthy at {:.3f} s{}{}; {} events written while placing (controller and nodes); bench "
      "process CPU while placing {:.2f} s\n",
      name, out.instances, want, out.placed_s, out.passes, out.first_pass_s, out.first_pass_placed,
      out.healthy_s,
      nodes_during_placement ? std::string()
                             : fmt::format(" (agents started at {:.3f} s)", out.nodes_started_s),
      rollout ? fmt::format("; rollouts succeeded at {:.3f} s (min_ready {} ms)", out.succeeded_s,
                            a.min_ready_ms)
              : std::string(),
      out.events, out.cpu_placed_s);
  const auto stop0 = Clock::now();
  for (auto& node : nodes) {
    if (node.agent) node.agent->Stop();
  }
  fmt::print("  {}: {} nodes stopped in {:.1f} s\n", name, a.nodes, Seconds(Clock::now() - stop0));
  return out;
}

struct Reference {
  double one_tx_s = 0;       // N INSERTs, 1 transaction
  double per_service_s = 0;  // N INSERTs, a transaction per service
  double with_events_s = 0;  // + an event row per service in its own transaction
  double node_side_s = 0;    // per instance 2 UPDATEs + 2 event INSERTs, each a transaction
};

Reference RunReference(const Args& a, muon::testing::Postgres& pg) {
  Reference r;
  const std::string url = pg.CreateDatabase();
  pqxx::connection c(url);
  {
    muon::db::Pool pool(muon::db::PoolOptions{.url = url, .max_connections = 1});
    muon::SecretBox box{kKey};
    sch::Store(pool, box).Migrate();  // the same table definitions and indexes
  }
  {
    pqxx::work tx(c);
    for (int i = 0; i < a.services; ++i) {
      tx.exec_params("INSERT INTO scheduler.services (name) VALUES ($1)", ServiceName(i));
    }
    tx.commit();
  }
  auto reset = [&] {
    pqxx::work tx(c);
    tx.exec("TRUNCATE scheduler.instances, scheduler.events");
    tx.commit();
  };
  const std::string insert =
      "INSERT INTO scheduler.instances (id, service, version, preview, node) "
      "VALUES ($1, $2, $3, $4, $5)";
  const std::string event =
      "INSERT INTO scheduler.events (service, type, message, version, instance, attributes) "
      "VALUES ($1, $2, $3, $4, $5, jsonb_object($6::text[])) "
      "RETURNING id, (extract(epoch FROM time) * 1000000)::bigint";
  auto id_of = [](int s, int k) { return fmt::format("{}-{:08x}", ServiceName(s), k * 7919 + s); };
  auto node_of = [&](int s, int k) {
    return fmt::format("sim-{:02d}", (s * a.replicas + k) % a.nodes + 1);
  };
  {
    const auto t = Clock::now();
    pqxx::work tx(c);
    for (int s = 0; s < a.services; ++s) {
      for (int k = 0; k < a.replicas; ++k) {
        tx.exec_params(insert, id_of(s, k), ServiceName(s), 1, "", node_of(s, k));
      }
    }
    tx.commit();
    r.one_tx_s = Seconds(Clock::now() - t);
  }
  reset();
  {
    const auto t = Clock::now();
    for (int s = 0; s < a.services; ++s) {
      pqxx::work tx(c);
      for (int k = 0; k < a.replicas; ++k) {
        tx.exec_params(insert, id_of(s, k), ServiceName(s), 1, "", node_of(s, k));
      }
      tx.commit();
    }
    r.per_service_s = Seconds(Clock::now() - t);
  }
  reset();
  {
    const auto t = Clock::now();
    for (int s = 0; s < a.services; ++s) {
      {
        pqxx::work tx(c);
        for (int k = 0; k < a.replicas; ++k) {
          tx.exec_params(insert, id_of(s, k), ServiceName(s), 1, "", node_of(s, k));
        }
        tx.commit();
      }
      pqxx::work tx(c);
      tx.exec_params(event, ServiceName(s), "instance.scheduled",
                     fmt::format("starting {} instances of v1: {} on {}, ...", a.replicas,
                                 id_of(s, 0), node_of(s, 0)),
                     1, "", "{}");
      tx.commit();
    }
    r.with_events_s = Seconds(Clock::now() - t);
  }
  {
    const std::string report =
        "UPDATE scheduler.instances SET state = $2, updated_at = now() WHERE id = $1";
    const auto t = Clock::now();
    for (int s = 0; s < a.services; ++s) {
      for (int k = 0; k < a.replicas; ++k) {
        for (const char* state : {"starting", "healthy"}) {
          {
            pqxx::work tx(c);
            tx.exec_params(report, id_of(s, k), state);
            tx.commit();
          }
          pqxx::work tx(c);
          tx.exec_params(event, ServiceName(s), fmt::format("instance.{}", state),
                         fmt::format("{} {}", id_of(s, k), state), 1, id_of(s, k), "{}");
          tx.commit();
        }
      }
    }
    r.node_side_s = Seconds(Clock::now() - t);
  }
  return r;
}

std::string Rate(int n, double s) {
  return s > 0 ? fmt::format("{:.0f}/s", n / s) : "n/a";
}

}  // namespace

int main(int argc, char** argv) {
  // 50 nodes starting and stopping 3,000 instances log a line each at info.
  muon::log::SetLevel(muon::log::Level::kWarn);
  const Args a = ParseArgs(argc, argv);
  try {
    muon::testing::TempDir work("muon-test-scheduler-bench");
    muon::testing::NatsServer nats;
    muon::testing::Postgres pg;
    {
      std::ifstream la("/proc/loadavg");
      std::string l1, l5;
      la >> l1 >> l5;
      fmt::print(
          "scheduler_bench: {} services x {} replicas on {} dry-run nodes ({} connections each); "
          "{} CPUs, load average {} {}\n",
          a.services, a.replicas, a.nodes, a.node_pool, std::thread::hardware_concurrency(), l1,
          l5);
    }
    const int want = a.services * a.replicas;
    CaseResult steady, alone, rollout;
    if (a.steady) steady = RunCase(a, "steady", false, true, nats, pg, work.path());
    if (a.alone) alone = RunCase(a, "controller-alone", false, false, nats, pg, work.path());
    if (a.rollout) rollout = RunCase(a, "rollout", true, true, nats, pg, work.path());
    const Reference ref = RunReference(a, pg);
    fmt::print(
        "  reference SQL (one connection): {} INSERTs in 1 tx {:.3f} s; in {} tx {:.3f} s; "
        "+ an event tx each {:.3f} s; node side (2 UPDATE + 2 event tx per instance) "
        "{:.3f} s\n",
        want, ref.one_tx_s, a.services, ref.per_service_s, ref.with_events_s, ref.node_side_s);

    bool ok = true;
    fmt::print("\n{:<50} {:>14} {:>34}  {:<12} {}\n", "metric", "measured", "reference (same run)",
               "target", "met");
    auto row = [&](const std::string& metric, const std::string& measured,
                   const std::string& reference, const std::string& target,
                   const std::string& met) {
      fmt::print("{:<50} {:>14} {:>34}  {:<12} {}\n", metric, measured, reference, target, met);
    };
    if (steady.ran) {
      const double rate = steady.placed_s > 0 ? want / steady.placed_s : 0;
      const bool met = steady.complete && steady.instances == want && rate >= 1500;
      ok &= met;
      row("steady: placements/s (all rows written)", Rate(want, steady.placed_s),
          fmt::format("INSERT 1 tx {}", Rate(want, ref.one_tx_s)), ">= 1,500/s",
          met ? "yes" : "NO");
      row("", "", fmt::format("INSERT tx/service {}", Rate(want, ref.per_service_s)), "", "");
      row("", "", fmt::format("+ event tx {}", Rate(want, ref.with_events_s)), "", "");
      row("steady: instances healthy/s (nodes reported)", Rate(want, steady.healthy_s),
          fmt::format("node-side SQL {}", Rate(want, ref.node_side_s)), "-", "");
    }
    if (alone.ran) {
      row("steady, nodes idle while placing: placements/s", Rate(want, alone.placed_s),
          fmt::format("+ event tx {}", Rate(want, ref.with_events_s)), "-",
          alone.placed_s > 0 && want / alone.placed_s >= 1500 ? "(>= 1,500)" : "(< 1,500)");
      row("  then healthy/s, from the agents' start",
          Rate(want, alone.healthy_s - alone.nodes_started_s),
          fmt::format("node-side SQL {}", Rate(want, ref.node_side_s)), "-", "");
    }
    if (rollout.ran) {
      const double rate = rollout.placed_s > 0 ? want / rollout.placed_s : 0;
      row("first rollout: placements/s (rows written)", Rate(want, rollout.placed_s),
          fmt::format("+ event tx {}", Rate(want, ref.with_events_s)), "-",
          rate >= 1500 ? "(>= 1,500)" : "(< 1,500)");
      row("first rollout: instances healthy/s", Rate(want, rollout.healthy_s),
          fmt::format("node-side SQL {}", Rate(want, ref.node_side_s)), "-", "");
      row("first rollout: all rollouts succeeded at", fmt::format("{:.2f} s", rollout.succeeded_s),
          fmt::format("min_ready {:.2f} s", a.min_ready_ms / 1000.0), "-", "");
    }
    if (steady.ran) fmt::print("\nresult: {}\n", ok ? "target met" : "TARGET MISSED");
  } catch (const std::exception& e) {
    fmt::print(stderr, "scheduler_bench: {}\n", e.what());
    return 1;
  }
  return 0;
}
