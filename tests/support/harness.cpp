#include "harness.h"

#include <arpa/inet.h>
#include <nats/nats.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <pqxx/pqxx>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace muon::testing {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

// A loaded CI machine once took over 10 s to start one (an empty log meanwhile): the deadline
// only bounds a real failure.
constexpr auto kNatsReadyDeadline = std::chrono::seconds(30);
constexpr auto kPostgresReadyDeadline = std::chrono::seconds(30);
constexpr auto kPostgresStopDeadline = std::chrono::seconds(30);
constexpr auto kInitdbTimeout = std::chrono::minutes(2);
// First try plus three retries when the server exits at once because someone took the port
// between FreePort() and the server's bind.
constexpr int kPortAttempts = 4;

// A server process that exited while we waited for it to become ready; in the constructor this
// usually means the port was taken, which is worth another try on a new port.
class ServerExited : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct FdCloser {
  int fd;
  ~FdCloser() {
    if (fd >= 0) ::close(fd);
  }
};

// Last `max_bytes` of a log file, starting at a line boundary, for failure messages.
std::string LogTail(const std::string& path, size_t max_bytes = 4096) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "(no log at " + path + ")";
  in.seekg(0, std::ios::end);
  auto size = static_cast<size_t>(in.tellg());
  size_t start = size > max_bytes ? size - max_bytes : 0;
  in.seekg(static_cast<std::streamoff>(start));
  std::string text(size - start, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (start > 0) {
    size_t nl = text.find('\n');
    if (nl != std::string::npos) text.erase(0, nl + 1);
  }
  return "--- last lines of " + path + " ---\n" + text;
}

bool ProcessAlive(pid_t pid) {
  return ::kill(pid, 0) == 0 || errno != ESRCH;
}

// The pid in a TempDir name "muon-test[-more]-<pid>-XXXXXX", or 0 when the name is not one.
// Parsed by hand: std::regex trips g++ 12's -Wmaybe-uninitialized in sanitizer builds.
pid_t PidInTempDirName(std::string_view name) {
  constexpr std::string_view kPrefix = "muon-test";
  constexpr size_t kSuffix = 7;  // "-XXXXXX"
  if (name.size() < kPrefix.size() + kSuffix + 2 || name.substr(0, kPrefix.size()) != kPrefix ||
      name[kPrefix.size()] != '-') {
    return 0;
  }
  std::string_view rest = name.substr(0, name.size() - kSuffix);
  if (name[rest.size()] != '-') return 0;
  size_t dash = rest.rfind('-');
  if (dash == std::string_view::npos || dash < kPrefix.size()) return 0;
  std::string_view digits = rest.substr(dash + 1);
  if (digits.empty() || digits.size() > 9 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return 0;
  }
  return static_cast<pid_t>(std::stol(std::string(digits)));
}

// Removes /tmp/muon-test*-<pid>-XXXXXX dirs of test processes that are gone (crashed or killed
// before their destructors ran). Their servers died with them through PR_SET_PDEATHSIG.
void SweepStaleDirs() {
  std::error_code ec;
  for (fs::directory_iterator it("/tmp", ec), end; !ec && it != end; it.increment(ec)) {
    pid_t pid = PidInTempDirName(it->path().filename().string());
    if (pid <= 0 || pid == ::getpid() || ProcessAlive(pid)) continue;
    if (it->is_symlink(ec) || !it->is_directory(ec)) continue;
    std::error_code ignored;  // other users' dirs, races with a parallel sweep: not our problem
    fs::remove_all(it->path(), ignored);
  }
}

struct UserIds {
  uid_t uid;
  gid_t gid;
};

UserIds LookupUser(const std::string& user) {
  std::vector<char> buffer(16384);
  passwd pw{};
  passwd* found = nullptr;
  int err = 0;
  while ((err = ::getpwnam_r(user.c_str(), &pw, buffer.data(), buffer.size(), &found)) == ERANGE) {
    buffer.resize(buffer.size() * 2);
  }
  if (err != 0) throw std::system_error(err, std::generic_category(), "getpwnam " + user);
  if (found == nullptr) throw std::runtime_error("no such user: " + user);
  return {pw.pw_uid, pw.pw_gid};
}

// PATH first, then the sbin dirs a non-root PATH on Debian lacks (nats-server lives in
// /usr/sbin there).
std::string FindProgram(const std::string& name) {
  std::vector<std::string> dirs;
  if (const char* path = std::getenv("PATH")) {
    std::string p = path;
    size_t pos = 0;
    while (pos <= p.size()) {
      size_t colon = p.find(':', pos);
      if (colon == std::string::npos) colon = p.size();
      if (colon > pos) dirs.push_back(p.substr(pos, colon - pos));
      pos = colon + 1;
    }
  }
  for (const char* d : {"/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"}) {
    dirs.emplace_back(d);
  }
  for (const auto& dir : dirs) {
    std::string candidate = dir + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  throw std::runtime_error(name + " not found in PATH or /usr/sbin, /usr/bin");
}

// The newest /usr/lib/postgresql/<version>/bin with both initdb and postgres; Debian keeps them
// out of PATH. Falls back to PATH for other layouts.
std::string PostgresBinDir() {
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (fs::directory_iterator it("/usr/lib/postgresql", ec), end; !ec && it != end;
       it.increment(ec)) {
    std::string version_text = it->path().filename().string();
    char* rest = nullptr;
    long version = std::strtol(version_text.c_str(), &rest, 10);
    if (rest == version_text.c_str()) continue;
    fs::path bin = it->path() / "bin";
    if (::access((bin / "initdb").c_str(), X_OK) != 0 ||
        ::access((bin / "postgres").c_str(), X_OK) != 0) {
      continue;
    }
    if (version > best_version) {
      best_version = static_cast<int>(version);
      best = bin.string();
    }
  }
  if (!best.empty()) return best;
  return fs::path(FindProgram("initdb")).parent_path().string();
}

// nats.c handles, destroyed on scope exit.
struct NatsConnectionDeleter {
  void operator()(natsConnection* nc) const { natsConnection_Destroy(nc); }
};
struct JsCtxDeleter {
  void operator()(jsCtx* js) const { jsCtx_Destroy(js); }
};
struct JsAccountInfoDeleter {
  void operator()(jsAccountInfo* ai) const { jsAccountInfo_Destroy(ai); }
};
struct NatsOptionsDeleter {
  void operator()(natsOptions* o) const { natsOptions_Destroy(o); }
};

// True when a client can connect and the JetStream API answers: a plain TCP connect is not
// enough, JetStream finishes recovering its store after the listener may already accept.
bool NatsReady(const std::string& url) {
  natsOptions* raw_opts = nullptr;
  if (natsOptions_Create(&raw_opts) != NATS_OK) return false;
  std::unique_ptr<natsOptions, NatsOptionsDeleter> opts(raw_opts);
  natsOptions_SetURL(opts.get(), url.c_str());
  natsOptions_SetTimeout(opts.get(), 1000);
  natsOptions_SetAllowReconnect(opts.get(), false);

  natsConnection* raw_nc = nullptr;
  if (natsConnection_Connect(&raw_nc, opts.get()) != NATS_OK) return false;
  std::unique_ptr<natsConnection, NatsConnectionDeleter> nc(raw_nc);

  jsOptions js_opts;
  jsOptions_Init(&js_opts);
  js_opts.Wait = 1000;  // keep each probe short so the overall deadline is honoured
  jsCtx* raw_js = nullptr;
  if (natsConnection_JetStream(&raw_js, nc.get(), &js_opts) != NATS_OK) return false;
  std::unique_ptr<jsCtx, JsCtxDeleter> js(raw_js);

  jsAccountInfo* raw_ai = nullptr;
  jsErrCode jerr = static_cast<jsErrCode>(0);
  natsStatus s = js_GetAccountInfo(&raw_ai, js.get(), nullptr, &jerr);
  std::unique_ptr<jsAccountInfo, JsAccountInfoDeleter> ai(raw_ai);
  return s == NATS_OK && ai != nullptr;
}

bool PostgresReady(const std::string& url) {
  // A real connection instead of libpq's PQping: libpq itself is not on the link line of
  // muon_common (only libpqxx is), and "accepting connections" is what callers need anyway.
  try {
    pqxx::connection conn(url);
    return conn.is_open();
  } catch (const std::exception&) {
    return false;
  }
}

// Polls `ready` until it holds; throws ServerExited when the process dies meanwhile and
// runtime_error at the deadline, both with the log tail.
void AwaitReady(Process& process, const std::string& what, const std::string& log,
                std::chrono::milliseconds deadline, const std::function<bool()>& ready) {
  auto start = Clock::now();
  bool ok = WaitUntil(
      [&] {
        if (!process.Running()) return true;  // stop polling; reported below
        return ready();
      },
      deadline, std::chrono::milliseconds(10));
  if (!process.Running()) {
    ExitStatus status = process.Wait();
    throw ServerExited(what + " exited during startup (" + status.Describe() + ")\n" +
                       LogTail(log));
  }
  if (!ok) {
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    throw std::runtime_error(what + " not ready after " + std::to_string(waited.count()) + " ms\n" +
                             LogTail(log));
  }
}

// Starts the process and waits for readiness; a server that never became ready is killed.
void StartAndAwait(Process& process, const ProcessOptions& options, const std::string& what,
                   std::chrono::milliseconds deadline, const std::function<bool()>& ready) {
  process = Process(options);
  try {
    AwaitReady(process, what, options.output_file, deadline, ready);
  } catch (...) {
    process = Process();
    throw;
  }
}

bool RunningAsRoot() {
  return ::geteuid() == 0;
}

}  // namespace

uint16_t FreePort() {
  FdCloser sock{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  if (sock.fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(sock.fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    throw std::system_error(errno, std::generic_category(), "bind 127.0.0.1:0");
  }
  socklen_t len = sizeof(addr);
  if (::getsockname(sock.fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::system_error(errno, std::generic_category(), "getsockname");
  }
  return ntohs(addr.sin_port);
}

std::string BinDir() {
  return MUON_BIN_DIR;
}
std::string SourceDir() {
  return MUON_SOURCE_DIR;
}

bool WaitUntil(const std::function<bool()>& condition, std::chrono::milliseconds deadline,
               std::chrono::milliseconds interval) {
  auto end = Clock::now() + deadline;
  while (true) {
    if (condition()) return true;
    auto now = Clock::now();
    if (now >= end) return false;
    std::this_thread::sleep_for(std::min<Clock::duration>(interval, end - now));
  }
}

// ---------------------------------------------------------------------------------------------
// TempDir

TempDir::TempDir(const std::string& prefix, const std::string& owner) {
  static std::once_flag swept;
  std::call_once(swept, SweepStaleDirs);

  std::string tmpl = "/tmp/" + prefix + "-" + std::to_string(::getpid()) + "-XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp " + tmpl);
  }
  path_ = tmpl;
  try {
    // mkdtemp makes it 0700; the postgres user (and anything we start as another user) must be
    // able to traverse it.
    if (::chmod(path_.c_str(), 0755) != 0) {
      throw std::system_error(errno, std::generic_category(), "chmod " + path_);
    }
    if (!owner.empty()) {
      UserIds ids = LookupUser(owner);
      if (::chown(path_.c_str(), ids.uid, ids.gid) != 0) {
        throw std::system_error(errno, std::generic_category(), "chown " + path_ + " to " + owner);
      }
    }
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
    throw;
  }
}

TempDir::~TempDir() {
  std::error_code ignored;  // a destructor must not throw; leftovers are swept next run
  fs::remove_all(path_, ignored);
}

// ---------------------------------------------------------------------------------------------
// NatsServer

NatsServer::NatsServer() : dir_(std::make_unique<TempDir>("muon-test-nats")) {
  for (int attempt = 1;; ++attempt) {
    port_ = FreePort();
    try {
      Start();
      return;
    } catch (const ServerExited&) {
      if (attempt >= kPortAttempts) throw;
    }
  }
}

// Members go in reverse order: process_ (killed with its group, reaped) before dir_ is removed.
NatsServer::~NatsServer() = default;

std::string NatsServer::url() const {
  return "nats://127.0.0.1:" + std::to_string(port_);
}

std::string NatsServer::log_path() const {
  return dir_->path() + "/nats.log";
}

void NatsServer::Stop() {
  // nats-server flushes its JetStream store on SIGTERM; a stuck one is killed after the grace.
  process_.Stop(std::chrono::seconds(10));
  process_ = Process();
}

void NatsServer::Start() {
  if (process_.Running()) throw std::logic_error("NatsServer::Start: already running");
  ProcessOptions options;
  options.program = FindProgram("nats-server");
  // As scripts/up configures it: GitHub webhook bodies (up to 25 MB) travel in one message.
  const std::string config = dir_->path() + "/nats.conf";
  if (!std::ifstream(config)) std::ofstream(config) << "max_payload: 32MB\n";
  options.args = {"-c",        config, "-a",
                  "127.0.0.1", "-p",   std::to_string(port_),
                  "-js",       "-sd",  dir_->path() + "/js"};
  // Output redirection instead of -l also catches what the server prints before its logger is
  // configured (flag errors, panics).
  options.output_file = log_path();
  options.parent_death_signal = SIGKILL;
  StartAndAwait(process_, options, "nats-server on port " + std::to_string(port_),
                kNatsReadyDeadline, [this] { return NatsReady(url()); });
}

// ---------------------------------------------------------------------------------------------
// Postgres

Postgres::Postgres()
    : dir_(std::make_unique<TempDir>("muon-test-pg", RunningAsRoot() ? "postgres" : "")) {
  ProcessOptions initdb;
  initdb.program = PostgresBinDir() + "/initdb";
  initdb.args = {"-D",           dir_->path() + "/data",
                 "-U",           "postgres",
                 "--auth=trust", "--no-sync",
                 "-E",           "UTF8",
                 "--locale=C"};
  // PostgreSQL refuses to run as root.
  if (RunningAsRoot()) initdb.run_as_user = "postgres";
  RunResult result = RunCommand(initdb, kInitdbTimeout);
  if (!result.status.Success()) {
    throw std::runtime_error("initdb failed (" + result.status.Describe() + "):\n" + result.output);
  }
  for (int attempt = 1;; ++attempt) {
    port_ = FreePort();
    try {
      Start();
      return;
    } catch (const ServerExited&) {
      if (attempt >= kPortAttempts) throw;
    }
  }
}

Postgres::~Postgres() {
  // Immediate shutdown (SIGQUIT) rather than SIGKILL: the postmaster then still removes its
  // SysV shared memory segment, which a SIGKILL would leak on every test run. The data is thrown
  // away, so no checkpoint is needed.
  if (process_.Running()) {
    ::kill(process_.pid(), SIGQUIT);
    process_.WaitFor(std::chrono::seconds(10));
  }
  // process_'s destructor SIGKILLs whatever is left, then dir_ is removed.
}

std::string Postgres::url(const std::string& db) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + db;
}

std::string Postgres::log_path() const {
  return dir_->path() + "/postgres.log";
}

std::string Postgres::CreateDatabase() {
  // Shared() may be used from several threads of a test; names must stay unique.
  static std::mutex mutex;
  std::string name;
  {
    std::lock_guard lock(mutex);
    name = "muon_test_" + std::to_string(next_db_++);
  }
  pqxx::connection conn(url());
  pqxx::nontransaction tx(conn);  // CREATE DATABASE cannot run inside a transaction block
  tx.exec0("CREATE DATABASE " + tx.quote_name(name));
  return url(name);
}

void Postgres::Stop() {
  if (process_.Running()) {
    // Fast shutdown, sent to the postmaster only: it stops its backends itself, while SIGINT to
    // the whole group would also cancel queries in them.
    ::kill(process_.pid(), SIGINT);
    if (!process_.WaitFor(kPostgresStopDeadline)) {
      process_.Signal(SIGKILL);
      process_.Wait();
    }
  }
  process_ = Process();
}

void Postgres::Start() {
  if (process_.Running()) throw std::logic_error("Postgres::Start: already running");
  ProcessOptions options;
  options.program = PostgresBinDir() + "/postgres";
  options.args = {"-D", dir_->path() + "/data",
                  "-p", std::to_string(port_),
                  "-c", "listen_addresses=127.0.0.1",
                  "-c", "unix_socket_directories=" + dir_->path(),
                  "-c", "fsync=off",
                  "-c", "synchronous_commit=off",
                  "-c", "full_page_writes=off",
                  "-c", "max_connections=200",
                  "-c", "shared_buffers=128MB"};
  if (RunningAsRoot()) options.run_as_user = "postgres";
  options.output_file = log_path();
  // In the foreground (not pg_ctl) so the death signal reaches the postmaster; SIGQUIT is an
  // immediate shutdown in which it still stops its children and frees shared memory.
  options.parent_death_signal = SIGQUIT;
  StartAndAwait(process_, options, "postgres on port " + std::to_string(port_),
                kPostgresReadyDeadline, [this] { return PostgresReady(url()); });
}

Postgres& Postgres::Shared() {
  static Postgres instance;
  return instance;
}

std::string Git(const std::string& cwd, std::vector<std::string> args) {
  ProcessOptions o;
  o.program = "git";
  o.args = std::move(args);
  o.working_dir = cwd;
  o.env = {{"GIT_AUTHOR_NAME", "Dev"},         {"GIT_AUTHOR_EMAIL", "dev@example.com"},
           {"GIT_COMMITTER_NAME", "Dev"},      {"GIT_COMMITTER_EMAIL", "dev@example.com"},
           {"GIT_CONFIG_GLOBAL", "/dev/null"}, {"GIT_CONFIG_NOSYSTEM", "1"}};
  const RunResult r = RunCommand(o, std::chrono::seconds(60));
  if (!r.status.Success()) {
    throw std::runtime_error("git " + (o.args.empty() ? std::string() : o.args.front()) +
                             " failed (" + r.status.Describe() + "): " + r.output);
  }
  return r.output;
}

}  // namespace muon::testing
