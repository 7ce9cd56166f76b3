// The test harness itself and the Process class it is built on: real child processes, a real
// nats-server and a real PostgreSQL. Everything here must clean up after itself even when an
// assertion fails, which is what the RAII types are for.

#include "harness.h"

#include <nats/nats.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <system_error>

#include "muon/common/process.h"

namespace {

namespace fs = std::filesystem;
using muon::ExitStatus;
using muon::Process;
using muon::ProcessOptions;
using muon::RunCommand;
using muon::testing::NatsServer;
using muon::testing::Postgres;
using muon::testing::TempDir;
using muon::testing::WaitUntil;
using namespace std::chrono_literals;

ProcessOptions Command(std::string program, std::vector<std::string> args = {}) {
  ProcessOptions options;
  options.program = std::move(program);
  options.args = std::move(args);
  return options;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// True when no live process is left in group `pgid`. Members that died but were never reaped
// count as gone: where PID 1 does not reap orphans (some containers), a killed grandchild stays
// a zombie in the group forever, and kill(-pgid, 0) keeps succeeding for it.
bool GroupGone(pid_t pgid) {
  if (::kill(-pgid, 0) == -1 && errno == ESRCH) return true;
  std::error_code ec;
  for (fs::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    std::string stat = ReadFile(it->path().string() + "/stat");
    size_t paren = stat.rfind(')');
    if (paren == std::string::npos) continue;
    std::istringstream fields(stat.substr(paren + 1));
    char state = 0;
    long ppid = 0;
    long pgrp = 0;
    if (!(fields >> state >> ppid >> pgrp)) continue;
    if (pgrp == pgid && state != 'Z') return false;
  }
  return true;
}

bool ProcessGone(pid_t pid) {
  if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
  std::string stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
  size_t paren = stat.rfind(')');
  return paren == std::string::npos || stat.substr(paren + 2, 1) == "Z";
}

std::string CurrentUserName() {
  const passwd* pw = ::getpwuid(::geteuid());
  REQUIRE(pw != nullptr);
  return pw->pw_name;
}

// nats.c handles, destroyed on scope exit even when a REQUIRE throws.
struct NatsDeleter {
  void operator()(natsConnection* p) const { natsConnection_Destroy(p); }
  void operator()(natsSubscription* p) const { natsSubscription_Destroy(p); }
  void operator()(natsMsg* p) const { natsMsg_Destroy(p); }
  void operator()(natsOptions* p) const { natsOptions_Destroy(p); }
  void operator()(jsCtx* p) const { jsCtx_Destroy(p); }
  void operator()(jsStreamInfo* p) const { jsStreamInfo_Destroy(p); }
  void operator()(jsPubAck* p) const { jsPubAck_Destroy(p); }
};
template <typename T>
using NatsPtr = std::unique_ptr<T, NatsDeleter>;

NatsPtr<natsConnection> Connect(const std::string& url) {
  natsOptions* raw_opts = nullptr;
  REQUIRE(natsOptions_Create(&raw_opts) == NATS_OK);
  NatsPtr<natsOptions> opts(raw_opts);
  REQUIRE(natsOptions_SetURL(opts.get(), url.c_str()) == NATS_OK);
  // Without this nats.c delays every publish by about a millisecond (DESIGN.md, known traps).
  REQUIRE(natsOptions_SetSendAsap(opts.get(), true) == NATS_OK);
  natsConnection* nc = nullptr;
  REQUIRE(natsConnection_Connect(&nc, opts.get()) == NATS_OK);
  return NatsPtr<natsConnection>(nc);
}

NatsPtr<jsCtx> JetStream(natsConnection* nc) {
  jsCtx* js = nullptr;
  REQUIRE(natsConnection_JetStream(&js, nc, nullptr) == NATS_OK);
  return NatsPtr<jsCtx>(js);
}

void EchoHandler(natsConnection* nc, natsSubscription*, natsMsg* raw, void*) {
  NatsPtr<natsMsg> msg(raw);
  if (const char* reply = natsMsg_GetReply(msg.get())) {
    natsConnection_Publish(nc, reply, natsMsg_GetData(msg.get()), natsMsg_GetDataLength(msg.get()));
  }
}

// ---------------------------------------------------------------------------------------------
// Process

TEST_CASE("Process reports the exit code", "[process]") {
  Process p(Command("sh", {"-c", "exit 3"}));
  ExitStatus status = p.Wait();
  CHECK(status.code == 3);
  CHECK(status.signal == 0);
  CHECK_FALSE(status.Success());
  CHECK(status.Describe() == "exit code 3");
  CHECK_FALSE(p.Running());
  CHECK(Process(Command("true")).Wait().Success());
}

TEST_CASE("Process throws when the program cannot be started", "[process]") {
  try {
    Process p(Command("muon-no-such-program-xyz"));
    FAIL("expected std::system_error");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK_THAT(e.what(), Catch::Contains("muon-no-such-program-xyz"));
  }
  ProcessOptions bad_dir = Command("true");
  bad_dir.working_dir = "/nonexistent/muon-test";
  CHECK_THROWS_AS(Process(bad_dir), std::system_error);
}

TEST_CASE("Process::Stop ends a child with SIGTERM", "[process]") {
  Process p(Command("sleep", {"100"}));
  REQUIRE(p.Running());
  auto start = std::chrono::steady_clock::now();
  ExitStatus status = p.Stop(5s);
  CHECK(std::chrono::steady_clock::now() - start < 4s);  // SIGTERM worked, no SIGKILL fallback
  CHECK(status.signal == SIGTERM);
  CHECK(status.code == -1);
  CHECK_THAT(status.Describe(), Catch::StartsWith("killed by signal 15 ("));
  CHECK_FALSE(p.Running());
}

namespace {

// Exit status of a forked child that has SIGTERM pending (as when its parent's group was
// signalled between fork and setpgid) and then prepares its signals the way spawned children do.
ExitStatus ChildWithPendingTerm(bool new_process_group) {
  pid_t pid;
  {
    muon::SignalsBlockedForFork blocked;
    pid = ::fork();
    if (pid == 0) {
      ::raise(SIGTERM);  // pending: every signal is blocked
      const bool prepared = muon::PrepareChildSignals(new_process_group);
      ::_exit(prepared ? 0 : 127);  // reached only if the pending SIGTERM was dropped
    }
  }
  REQUIRE(pid > 0);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  ExitStatus result;
  if (WIFEXITED(status)) result.code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

}  // namespace

TEST_CASE("a child drops the signals sent to its parent's group before it had its own",
          "[process]") {
  // A service draining on SIGTERM must not lose the command it was starting at that moment.
  ExitStatus own_group = ChildWithPendingTerm(true);
  CHECK(own_group.code == 0);
  CHECK(own_group.signal == 0);
  // Staying in the parent's group, the signal was meant for it too: delivered once unblocked.
  ExitStatus same_group = ChildWithPendingTerm(false);
  CHECK(same_group.signal == SIGTERM);
}

TEST_CASE("Process starts with the ignored signals asked for, the others at their default",
          "[process]") {
  auto options = Command("sh", {"-c", "kill -TERM $$; echo still here"});
  options.ignored_signals = {SIGTERM};
  auto ignoring = muon::RunCommand(options, 10s);
  CHECK(ignoring.status.Success());
  CHECK(ignoring.output == "still here\n");
  options.ignored_signals.clear();
  auto defaulted = muon::RunCommand(options, 10s);
  CHECK(defaulted.status.signal == SIGTERM);
  CHECK(defaulted.output.empty());
}

TEST_CASE("Process destructor kills the whole process group", "[process]") {
  TempDir dir;
  std::string pid_file = dir.path() + "/sleep.pid";
  pid_t pgid = -1;
  pid_t sleep_pid = -1;
  {
    Process p(Command("sh", {"-c", "sleep 100 & echo $! > " + pid_file + "; wait"}));
    pgid = p.pid();
    // sh writes the file in pieces; a trailing newline means the pid is complete.
    REQUIRE(WaitUntil(
        [&] {
          std::string text = ReadFile(pid_file);
          return !text.empty() && text.back() == '\n';
        },
        5s));
    sleep_pid = std::stoi(ReadFile(pid_file));
    REQUIRE(::getpgid(sleep_pid) == pgid);  // the grandchild really is in the group
    REQUIRE_FALSE(GroupGone(pgid));
  }
  CHECK(WaitUntil([&] { return GroupGone(pgid); }, 5s));
  CHECK(ProcessGone(sleep_pid));
}

TEST_CASE("Process moves keep ownership of the child", "[process]") {
  Process a(Command("sleep", {"100"}));
  pid_t pid = a.pid();
  Process b(std::move(a));
  CHECK(a.pid() == -1);
  CHECK_FALSE(a.Running());
  CHECK(b.pid() == pid);
  CHECK(b.Running());
  b = Process();  // assigning over a running child kills it
  CHECK(WaitUntil([&] { return ProcessGone(pid); }, 5s));
}

TEST_CASE("Process children die with their parent (PR_SET_PDEATHSIG)", "[process]") {
  // A helper process starts the child and then dies without running destructors, the way a
  // crashed test binary would.
  int pid_pipe[2];
  int go_pipe[2];
  REQUIRE(::pipe(pid_pipe) == 0);
  REQUIRE(::pipe(go_pipe) == 0);
  pid_t helper = ::fork();
  REQUIRE(helper >= 0);
  if (helper == 0) {
    ::close(pid_pipe[0]);
    ::close(go_pipe[1]);
    pid_t child = -1;
    try {
      child = Process(Command("sleep", {"100"})).Release();
    } catch (...) {
    }
    [[maybe_unused]] ssize_t w = ::write(pid_pipe[1], &child, sizeof(child));
    char go;
    [[maybe_unused]] ssize_t r = ::read(go_pipe[0], &go, 1);
    ::_exit(0);
  }
  ::close(pid_pipe[1]);
  ::close(go_pipe[0]);
  pid_t child = -1;
  ssize_t n = ::read(pid_pipe[0], &child, sizeof(child));
  ::close(pid_pipe[0]);
  bool alive_before = n == sizeof(child) && child > 0 && !ProcessGone(child);
  ::close(go_pipe[1]);  // lets the helper exit
  int status = 0;
  ::waitpid(helper, &status, 0);
  REQUIRE(alive_before);
  CHECK(WaitUntil([&] { return ProcessGone(child); }, 5s));
}

TEST_CASE("RunCommand captures stdout and stderr", "[process]") {
  muon::RunResult result = RunCommand(Command("sh", {"-c", "echo out; echo err >&2; exit 4"}), 10s);
  CHECK(result.status.code == 4);
  CHECK_THAT(result.output, Catch::Contains("out\n"));
  CHECK_THAT(result.output, Catch::Contains("err\n"));

  // More than a pipe buffer: only works if the output is drained while waiting.
  muon::RunResult big =
      RunCommand(Command("sh", {"-c", "head -c 1000000 /dev/zero | tr '\\0' x"}), 10s);
  CHECK(big.status.Success());
  CHECK(big.output.size() == 1000000);

  ProcessOptions env = Command("sh", {"-c", "echo \"$MUON_TEST_VAR\""});
  env.env["MUON_TEST_VAR"] = "hello";
  CHECK(RunCommand(env, 10s).output == "hello\n");
}

TEST_CASE("RunCommand honours the timeout and cleans up background children", "[process]") {
  auto start = std::chrono::steady_clock::now();
  muon::RunResult result = RunCommand(Command("sleep", {"100"}), 200ms);
  auto elapsed = std::chrono::steady_clock::now() - start;
  CHECK(result.status.signal == SIGKILL);
  CHECK(elapsed >= 200ms);
  CHECK(elapsed < 5s);

  // The background sleep keeps the output pipe open; RunCommand must not wait for it, and must
  // not leave it running.
  start = std::chrono::steady_clock::now();
  muon::RunResult bg = RunCommand(Command("sh", {"-c", "sleep 100 & echo $!"}), 10s);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  REQUIRE(bg.status.Success());
  pid_t sleep_pid = std::stoi(bg.output);
  CHECK(WaitUntil([&] { return ProcessGone(sleep_pid); }, 5s));
}

TEST_CASE("RunCommand switches user when asked", "[process]") {
  ProcessOptions options = Command("sh", {"-c", "id -un; echo \"$HOME\""});
  if (::geteuid() == 0) {
    options.run_as_user = "postgres";
    muon::RunResult result = RunCommand(options, 10s);
    INFO(result.output);
    REQUIRE(result.status.Success());
    CHECK_THAT(result.output, Catch::StartsWith("postgres\n"));
    const passwd* pw = ::getpwnam("postgres");
    REQUIRE(pw != nullptr);
    CHECK(result.output == "postgres\n" + std::string(pw->pw_dir) + "\n");
  } else {
    // Without root no switch is possible: the child runs as us, and naming ourselves works.
    std::string me = CurrentUserName();
    muon::RunResult plain = RunCommand(options, 10s);
    REQUIRE(plain.status.Success());
    CHECK_THAT(plain.output, Catch::StartsWith(me + "\n"));
    options.run_as_user = me;
    muon::RunResult same = RunCommand(options, 10s);
    INFO(same.output);
    REQUIRE(same.status.Success());
    CHECK_THAT(same.output, Catch::StartsWith(me + "\n"));
  }
}

// ---------------------------------------------------------------------------------------------
// TempDir

TEST_CASE("TempDir is removed on destruction", "[harness]") {
  std::string path;
  {
    TempDir dir;
    path = dir.path();
    REQUIRE(fs::is_directory(path));
    CHECK_THAT(fs::path(path).filename().string(),
               Catch::StartsWith("muon-test-" + std::to_string(::getpid()) + "-"));
    CHECK((fs::status(path).permissions() & fs::perms::all) == static_cast<fs::perms>(0755));
    fs::create_directories(path + "/a/b");
    std::ofstream(path + "/a/b/file") << "data";
  }
  CHECK_FALSE(fs::exists(path));

  // With an owner (as root: postgres; otherwise only ourselves is possible).
  std::string owner = ::geteuid() == 0 ? "postgres" : CurrentUserName();
  const passwd* pw = ::getpwnam(owner.c_str());
  REQUIRE(pw != nullptr);
  uid_t owner_uid = pw->pw_uid;
  TempDir owned("muon-test-owned", owner);
  struct stat st {};
  REQUIRE(::stat(owned.path().c_str(), &st) == 0);
  CHECK(st.st_uid == owner_uid);
}

TEST_CASE("FreePort returns a bindable port", "[harness]") {
  uint16_t port = muon::testing::FreePort();
  CHECK(port > 0);
  CHECK_FALSE(muon::testing::SourceDir().empty());
  CHECK(fs::exists(muon::testing::SourceDir() + "/tests/support/harness.h"));
  CHECK_FALSE(muon::testing::BinDir().empty());
}

// ---------------------------------------------------------------------------------------------
// NatsServer

TEST_CASE("NatsServer serves request/reply and keeps JetStream data across a restart", "[nats]") {
  NatsServer nats;
  CHECK(nats.url() == "nats://127.0.0.1:" + std::to_string(nats.port()));
  uint16_t port = nats.port();

  {
    NatsPtr<natsConnection> responder = Connect(nats.url());
    natsSubscription* raw_sub = nullptr;
    REQUIRE(natsConnection_Subscribe(&raw_sub, responder.get(), "muon.test.echo", EchoHandler,
                                     nullptr) == NATS_OK);
    NatsPtr<natsSubscription> sub(raw_sub);
    REQUIRE(natsConnection_Flush(responder.get()) == NATS_OK);

    NatsPtr<natsConnection> requester = Connect(nats.url());
    natsMsg* raw_reply = nullptr;
    REQUIRE(natsConnection_RequestString(&raw_reply, requester.get(), "muon.test.echo", "ping",
                                         2000) == NATS_OK);
    NatsPtr<natsMsg> reply(raw_reply);
    CHECK(std::string(natsMsg_GetData(reply.get()), natsMsg_GetDataLength(reply.get())) == "ping");

    NatsPtr<jsCtx> js = JetStream(requester.get());
    jsStreamConfig config;
    jsStreamConfig_Init(&config);
    config.Name = "MUON_TEST";
    const char* subjects[] = {"muon.test.stream.>"};
    config.Subjects = subjects;
    config.SubjectsLen = 1;
    config.Storage = js_FileStorage;
    jsStreamInfo* raw_info = nullptr;
    jsErrCode jerr = static_cast<jsErrCode>(0);
    REQUIRE(js_AddStream(&raw_info, js.get(), &config, nullptr, &jerr) == NATS_OK);
    NatsPtr<jsStreamInfo> info(raw_info);
    jsPubAck* raw_ack = nullptr;
    REQUIRE(js_Publish(&raw_ack, js.get(), "muon.test.stream.one", "x", 1, nullptr, &jerr) ==
            NATS_OK);
    NatsPtr<jsPubAck> ack(raw_ack);
  }

  nats.Restart();
  CHECK(nats.port() == port);

  NatsPtr<natsConnection> nc = Connect(nats.url());
  NatsPtr<jsCtx> js = JetStream(nc.get());
  jsStreamInfo* raw_info = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  REQUIRE(js_GetStreamInfo(&raw_info, js.get(), "MUON_TEST", nullptr, &jerr) == NATS_OK);
  NatsPtr<jsStreamInfo> info(raw_info);
  CHECK(info->State.Msgs == 1);
  CHECK(fs::exists(nats.log_path()));
}

// ---------------------------------------------------------------------------------------------
// Postgres

TEST_CASE("Postgres creates separate databases and keeps data across a restart", "[postgres]") {
  Postgres pg;
  uint16_t port = pg.port();
  CHECK(pg.url() == "postgresql://postgres@127.0.0.1:" + std::to_string(port) + "/postgres");

  std::string first = pg.CreateDatabase();
  std::string second = pg.CreateDatabase();
  REQUIRE(first != second);
  {
    pqxx::connection a(first);
    pqxx::connection b(second);
    pqxx::work wa(a);
    pqxx::work wb(b);
    CHECK(wa.exec1("SELECT current_database()")[0].as<std::string>() !=
          wb.exec1("SELECT current_database()")[0].as<std::string>());
    wa.exec0("CREATE TABLE kept (value text)");
    wa.exec0("INSERT INTO kept VALUES ('survives restart')");
    wa.commit();
    // The table exists in the first database only.
    CHECK(wb.exec1("SELECT to_regclass('kept') IS NULL")[0].as<bool>());
  }

  pg.Restart();
  CHECK(pg.port() == port);
  pqxx::connection again(first);
  pqxx::work w(again);
  CHECK(w.exec1("SELECT value FROM kept")[0].as<std::string>() == "survives restart");
  CHECK(fs::exists(pg.log_path()));
}

TEST_CASE("Postgres::Shared is one cluster per process", "[postgres]") {
  Postgres& shared = Postgres::Shared();
  CHECK(&shared == &Postgres::Shared());
  pqxx::connection conn(shared.CreateDatabase());
  pqxx::work w(conn);
  CHECK(w.exec1("SELECT 1 + 1")[0].as<int>() == 2);
}

}  // namespace
