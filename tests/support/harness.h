#pragma once
// Real servers for integration and e2e tests: a nats-server with JetStream and a PostgreSQL
// cluster, each on a free loopback port with a throw-away data dir, ready (polled with a deadline)
// when the constructor returns, and removed by the destructor even when the test failed. Child
// processes get PR_SET_PDEATHSIG, so a crashed test binary does not leave servers running; stale
// dirs of dead test runs are swept at the next start.

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "muon/common/process.h"

namespace muon::testing {

// A port nobody listens on right now (bind to port 0 on 127.0.0.1, read it back).
uint16_t FreePort();

// Directory of the built binaries (build/bin) and of the source tree.
std::string BinDir();
std::string SourceDir();

// Runs git in `cwd` with a fixed author and no user or system config; returns its output.
// Throws std::runtime_error with the output when git fails.
std::string Git(const std::string& cwd, std::vector<std::string> args);

// Polls `condition` every `interval` until it returns true or `deadline` passes.
bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds deadline,
               std::chrono::milliseconds interval = std::chrono::milliseconds(20));

// A directory under /tmp (muon-test-<pid>-XXXXXX) removed recursively on destruction. When
// `owner` is given (e.g. "postgres") it is chowned to that user.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix = "muon-test", const std::string& owner = "");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

class NatsServer {
 public:
  NatsServer();  // starts and waits until a client can connect and JetStream answers
  ~NatsServer();
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  std::string url() const;  // nats://127.0.0.1:<port>
  uint16_t port() const { return port_; }
  void Stop();   // SIGTERM and wait
  void Start();  // same port and store dir; waits for readiness
  void Restart() {
    Stop();
    Start();
  }
  // Path of the server's log file (for diagnostics in failure messages).
  std::string log_path() const;

 private:
  std::unique_ptr<TempDir> dir_;
  uint16_t port_ = 0;
  Process process_;
};

class Postgres {
 public:
  Postgres();  // initdb (as the postgres user when root), start, wait for readiness
  ~Postgres();
  Postgres(const Postgres&) = delete;
  Postgres& operator=(const Postgres&) = delete;

  // Connection URL of database `db` (default "postgres"), superuser postgres, no password.
  std::string url(const std::string& db = "postgres") const;
  uint16_t port() const { return port_; }
  // Creates a fresh database with a unique name and returns its URL.
  std::string CreateDatabase();
  void Stop();   // fast shutdown
  void Start();  // same data dir and port; waits for readiness
  void Restart() {
    Stop();
    Start();
  }
  std::string log_path() const;

  // One cluster per test process, started on first use (initdb costs seconds; databases are
  // cheap). Destroyed at exit.
  static Postgres& Shared();

 private:
  std::unique_ptr<TempDir> dir_;
  uint16_t port_ = 0;
  Process process_;
  int next_db_ = 0;
};

}  // namespace muon::testing
