#include "muon/cli/app.h"

#include <fmt/format.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/time_util.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "muon/auth/v1/auth.pb.h"
#include "muon/builder/v1/builder.pb.h"
#include "muon/cli/commands.h"
#include "muon/cli/exit_codes.h"
#include "muon/cli/output.h"
#include "muon/cli/scheduler_output.h"
#include "muon/cli/store.h"
#include "muon/common/errors.h"
#include "muon/common/log_lines.h"
#include "muon/common/v1/common.pb.h"
#include "muon/github_events/v1/github_events.pb.h"

namespace muon::cli {
namespace {

namespace pb = google::protobuf;
namespace auth = muon::auth::v1;
namespace bld = muon::builder::v1;
namespace gh = muon::github_events::v1;
using std::chrono::milliseconds;

constexpr size_t kMaxStdinBody = size_t{64} << 20;

int64_t SystemNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Get(const config::Environment& env, const char* key) {
  auto it = env.find(key);
  return it == env.end() ? std::string{} : it->second;
}

bool Truthy(const std::string& value) {
  return value == "1" || value == "true" || value == "yes" || value == "on";
}

bool IsLoopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0 ||
         (host.size() > 10 && host.compare(host.size() - 10, 10, ".localhost") == 0);
}

std::string JoinStrings(const pb::RepeatedPtrField<std::string>& items, std::string_view sep) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out;
}

std::string TimestampText(const pb::Timestamp& ts) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return FormatUnixTime(ts.seconds());
}

std::string OrDash(const std::string& s) {
  return s.empty() ? "-" : s;
}

std::string RelativeTo(int64_t when, int64_t now) {
  return when >= now ? "in " + FormatSeconds(when - now) : FormatSeconds(now - when) + " ago";
}

// Sorted, compact JSON of a Struct (whose own printing follows hash order).
std::string StructJson(const pb::Struct& s) {
  return ReformatJson(ToJson(s), false).value_or(ToJson(s));
}

void SetString(pb::Struct& s, const std::string& key, const std::string& value) {
  (*s.mutable_fields())[key].set_string_value(value);
}

// The claims of a JWT access token, decoded for display only (the ingress verifies tokens; the
// CLI never trusts them for anything). nullopt when `jwt` does not look like a JWT.
std::optional<auth::Claims> PeekClaims(const std::string& jwt) {
  const auto first = jwt.find('.');
  const auto second = first == std::string::npos ? first : jwt.find('.', first + 1);
  if (second == std::string::npos) return std::nullopt;
  std::string b64 = jwt.substr(first + 1, second - first - 1);
  for (char& c : b64) {
    if (c == '-') c = '+';
    if (c == '_') c = '/';
  }
  const size_t padding = (4 - b64.size() % 4) % 4;
  b64.append(padding, '=');
  std::string json(b64.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(json.data()),
                                reinterpret_cast<const unsigned char*>(b64.data()),
                                static_cast<int>(b64.size()));
  if (n < 0 || static_cast<size_t>(n) < padding) return std::nullopt;
  json.resize(static_cast<size_t>(n) - padding);
  auth::Claims claims;
  if (!FromJson(json, &claims, nullptr)) return std::nullopt;
  return claims;
}

// RFC 3986 unreserved characters stay, everything else is %XX.
std::string PercentEncode(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += fmt::format("%{:02X}", c);
    }
  }
  return out;
}

class App {
 public:
  App(AppContext& ctx, const GlobalOptions& global)
      : ctx_(ctx), global_(global), json_(global.output == OutputFormat::kJson) {}

  int Run(const Command& command) {
    return std::visit([this](const auto& cmd) { return Do(cmd); }, command);
  }

 private:
  // ---- plumbing ---------------------------------------------------------------------------

  int64_t Now() const { return ctx_.now ? ctx_.now() : SystemNow(); }

  const Store& store() {
    if (!store_) store_.emplace(ConfigDir(ctx_.env));
    return *store_;
  }

  std::string EnvName() const {
    return global_.env.empty() ? Get(ctx_.env, "MUON_ENV") : global_.env;
  }

  Endpoint CurrentEndpoint() {
    return ResolveEndpoint(store().LoadConfig(), EnvName(), ctx_.env, ctx_.cwd);
  }

  // " --env NAME" when the user picked the env explicitly, so suggested commands hit it too.
  std::string EnvFlag(const Endpoint& ep) const {
    return !EnvName().empty() && ep.configured ? " --env " + ep.name : "";
  }

  HttpClientOptions ClientOptions(milliseconds timeout) const {
    HttpClientOptions options;
    options.insecure = global_.insecure || Truthy(Get(ctx_.env, "MUON_INSECURE"));
    options.ca_file = Get(ctx_.env, "MUON_CA_FILE");
    options.timeout = timeout;
    options.user_agent = fmt::format("muon-cli/{}", CliVersion());
    return options;
  }

  // on_body_piece: stream a 2xx body (server-sent events) instead of collecting it.
  HttpResponse Send(const Endpoint& ep, const HttpRequest& request, milliseconds timeout,
                    std::function<bool(std::string_view)> on_body_piece = {}) {
    const std::string url = ep.url.ToString();
    try {
      HttpClientOptions options = ClientOptions(timeout);
      options.on_body_piece = std::move(on_body_piece);
      return cli::Send(ep.url, request, options);
    } catch (const TransportError& e) {
      switch (e.kind()) {
        case TransportError::Kind::kConnect:
          throw CliError(kExitUnavailable,
                         fmt::format("cannot reach the ingress at {}: {} ({})", url, e.what(),
                                     IsLoopback(ep.url.host)
                                         ? "is the stack running? scripts/up"
                                         : "is it running? check the URL with `muon env list`"));
        case TransportError::Kind::kTimeout:
          throw CliError(kExitUnavailable,
                         fmt::format("no response from the ingress at {} within {} ({})", url,
                                     config::FormatDuration(timeout), e.what()));
        case TransportError::Kind::kTls:
          throw CliError(kExitError,
                         fmt::format("{} (trust a private CA with MUON_CA_FILE=ca.pem, or skip "
                                     "verification with --insecure)",
                                     e.what()));
        case TransportError::Kind::kTooLarge:
          throw CliError(kExitError, fmt::format("the ingress at {}: {}", url, e.what()));
        case TransportError::Kind::kProtocol:
          break;
      }
      throw CliError(kExitUnavailable,
                     fmt::format("talking to the ingress at {}: {}", url, e.what()));
    }
  }

  HttpResponse Post(const Endpoint& ep, std::string target, std::string body,
                    const std::string& access_token,
                    std::vector<std::pair<std::string, std::string>> extra = {},
                    std::optional<milliseconds> timeout = std::nullopt) {
    HttpRequest request;
    request.method = "POST";
    request.target = std::move(target);
    request.body = std::move(body);
    request.headers = {{"Content-Type", "application/json"}, {"Accept", "application/json"}};
    if (!access_token.empty())
      request.headers.emplace_back("Authorization", "Bearer " + access_token);
    for (auto& h : extra) request.headers.push_back(std::move(h));
    return Send(ep, request, timeout.value_or(ctx_.default_timeout));
  }

  // Throws the response as a CliError unless it is 2xx.
  void Expect2xx(const HttpResponse& response, const Endpoint& ep) {
    if (response.status >= 200 && response.status < 300) return;
    std::string message = FormatApiError(response);
    if (response.status == 401) {
      message += fmt::format("\nhint: log in again with `muon login{}`", EnvFlag(ep));
    }
    throw CliError(ExitCodeForStatus(response.status), message);
  }

  template <typename Message>
  Message ParseReply(const HttpResponse& response, std::string_view what) {
    Message message;
    std::string error;
    if (!FromJson(response.body, &message, &error)) {
      throw CliError(kExitError, fmt::format("unexpected reply to {} from the ingress: {}", what,
                                             Sanitize(error)));
    }
    return message;
  }

  [[noreturn]] void NotLoggedIn(const Endpoint& ep) {
    throw CliError(kExitUnauthorized, fmt::format("not logged in to {} ({}): run `muon login{}`",
                                                  ep.name, ep.url.ToString(), EnvFlag(ep)));
  }

  // The stored session of `ep`, refreshed first when the access token expires within 60 s.
  // nullopt when not logged in and !required.
  std::optional<v1::Credential> Session(const Endpoint& ep, bool required) {
    if (std::string token = Get(ctx_.env, "MUON_TOKEN"); !token.empty()) {
      v1::Credential given;
      given.set_access_token(token);
      return given;
    }
    auto creds = store().LoadCredentials();
    auto it = creds.envs().find(ep.name);
    if (it == creds.envs().end() ||
        (it->second.access_token().empty() && it->second.refresh_token().empty())) {
      if (!required) return std::nullopt;
      NotLoggedIn(ep);
    }
    CheckSameIngress(ep, it->second);
    if (!NeedsRefresh(it->second.expires_at(), Now())) return it->second;

    // Another muon process may be refreshing the same session: take the lock, then look again.
    auto lock = store().LockCredentials();
    creds = store().LoadCredentials();
    it = creds.envs().find(ep.name);
    if (it == creds.envs().end()) NotLoggedIn(ep);
    if (!NeedsRefresh(it->second.expires_at(), Now())) return it->second;
    v1::Credential credential = it->second;
    if (credential.refresh_token().empty()) {
      throw CliError(kExitUnauthorized,
                     fmt::format("the session for {} has expired: log in again with `muon login{}`",
                                 ep.name, EnvFlag(ep)));
    }
    auth::RefreshRequest request;
    request.set_refresh_token(credential.refresh_token());
    const HttpResponse response = Post(ep, "/v1/auth/Refresh", ToJson(request), "");
    if (response.status == 401) {
      creds.mutable_envs()->erase(ep.name);
      store().SaveCredentials(creds);
      throw CliError(kExitUnauthorized,
                     fmt::format("the session for {} has ended: {}\nhint: log in again with "
                                 "`muon login{}`",
                                 ep.name, FormatApiError(response), EnvFlag(ep)));
    }
    Expect2xx(response, ep);
    const auto tokens = ParseReply<auth::TokenResponse>(response, "Refresh");
    ApplyTokens(tokens, credential);
    credential.set_url(ep.url.ToString());
    (*creds.mutable_envs())[ep.name] = credential;
    store().SaveCredentials(creds);
    return credential;
  }

  // A session is only sent to the ingress it came from: when an env's URL changed (or the local
  // stack moved to another port), its tokens must not travel to the new address unasked.
  void CheckSameIngress(const Endpoint& ep, const v1::Credential& credential) {
    if (credential.url().empty() || credential.url() == ep.url.ToString()) return;
    throw CliError(kExitUnauthorized,
                   fmt::format("the session stored for {} was obtained from {}, not {}: log in "
                               "again with `muon login{}`",
                               ep.name, credential.url(), ep.url.ToString(), EnvFlag(ep)));
  }

  void ApplyTokens(const auth::TokenResponse& tokens, v1::Credential& credential) {
    credential.set_access_token(tokens.access_token());
    credential.set_refresh_token(tokens.refresh_token());
    credential.set_expires_at(Now() + std::max<int64_t>(tokens.expires_in(), 0));
    if (!tokens.account().email().empty()) credential.set_email(tokens.account().email());
    if (!tokens.region().empty()) credential.set_region(tokens.region());
  }

  v1::Credential SaveSession(const Endpoint& ep, const auth::TokenResponse& tokens,
                             const std::string& email) {
    auto lock = store().LockCredentials();
    auto creds = store().LoadCredentials();
    v1::Credential credential;
    credential.set_email(email);
    ApplyTokens(tokens, credential);
    credential.set_url(ep.url.ToString());
    (*creds.mutable_envs())[ep.name] = credential;
    store().SaveCredentials(creds);
    return credential;
  }

  // POST /v1/<service>/<method> with the session's token; returns the 2xx response.
  HttpResponse ServiceCall(const Endpoint& ep, std::string_view service, std::string_view method,
                           const pb::Message& request) {
    const auto session = Session(ep, true);
    HttpResponse response = Post(ep, fmt::format("/v1/{}/{}", service, method), ToJson(request),
                                 session->access_token());
    Expect2xx(response, ep);
    return response;
  }

  HttpResponse AuthCall(const Endpoint& ep, std::string_view method, const pb::Message& request) {
    return ServiceCall(ep, "auth", method, request);
  }

  void PrintJson(const std::string& raw) {
    ctx_.out << ReformatJson(raw, false).value_or(raw) << "\n";
  }

  void WarnPlainHttp(const Endpoint& ep) {
    if (!ep.url.tls() && !IsLoopback(ep.url.host)) {
      ctx_.err << fmt::format(
          "warning: {} is plain http: the password crosses the network "
          "unencrypted\n",
          ep.url.ToString());
    }
  }

  bool Interactive() const { return ctx_.prompter != nullptr && ctx_.prompter->Interactive(); }

  std::string Ask(const std::string& prompt, const std::string& needed_for) {
    if (!Interactive()) {
      throw CliError(kExitUsage,
                     fmt::format("{} is needed and stdin is not a terminal", needed_for));
    }
    auto line = ctx_.prompter->ReadLine(prompt, true);
    if (!line) throw CliError(kExitUsage, "no input");
    return *line;
  }

  std::string AskSecret(const std::string& prompt) {
    if (!Interactive()) {
      throw CliError(kExitUsage,
                     "a password is needed and stdin is not a terminal: use --password-stdin");
    }
    auto line = ctx_.prompter->ReadLine(prompt, false);
    if (!line) throw CliError(kExitUsage, "no input");
    if (line->empty()) throw CliError(kExitUsage, "the password must not be empty");
    return *line;
  }

  std::string AskNewSecret(const std::string& prompt) {
    std::string first = AskSecret(prompt);
    std::string again = AskSecret(
        "Repeat " + std::string(1, static_cast<char>(std::tolower(prompt[0]))) + prompt.substr(1));
    if (first != again) throw CliError(kExitUsage, "the passwords do not match");
    return first;
  }

  std::string StdinSecret(std::string_view what) {
    std::string line;
    if (!std::getline(ctx_.in, line) && line.empty()) {
      throw CliError(kExitUsage, fmt::format("--password-stdin: no {} on stdin", what));
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) throw CliError(kExitUsage, fmt::format("--password-stdin: empty {}", what));
    return line;
  }

  // ---- env ---------------------------------------------------------------------------------

  int Do(const HelpCmd& cmd) {
    ctx_.out << cmd.text;
    return kExitOk;
  }

  int Do(const VersionCmd&) {
    ctx_.out << "muon " << CliVersion() << "\n";
    return kExitOk;
  }

  int Do(const EnvListCmd&) {
    const auto config = store().LoadConfig();
    if (json_) {
      ctx_.out << ToJson(config) << "\n";
      return kExitOk;
    }
    const auto creds = store().LoadCredentials();
    auto user = [&](const std::string& name) {
      auto it = creds.envs().find(name);
      return it == creds.envs().end() ? std::string("-") : OrDash(it->second.email());
    };
    if (config.envs_size() == 0) {
      if (auto implicit = ImplicitEndpoint(ctx_.env, ctx_.cwd)) {
        ctx_.out << fmt::format(
            "No envs configured; using {}{} from {}, logged in as {}.\n"
            "Add one with: muon env add NAME URL [--region R]\n",
            implicit->url.ToString(),
            implicit->region.empty() ? "" : " (region " + implicit->region + ")", implicit->source,
            user(implicit->name));
      } else {
        ctx_.out << "No envs configured. Add one with: muon env add NAME URL [--region R]\n"
                    "(or set MUON_INGRESS_URL, or start the local stack: scripts/up)\n";
      }
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& env : config.envs()) {
      rows.push_back({env.name() == config.current_env() ? "*" : "", env.name(), env.url(),
                      OrDash(env.region()), user(env.name())});
    }
    ctx_.out << RenderTable({"CURRENT", "NAME", "URL", "REGION", "USER"}, rows);
    return kExitOk;
  }

  int Do(const EnvAddCmd& cmd) {
    std::string error;
    auto url = ParseUrl(cmd.url, &error);
    if (!url) {
      throw CliError(kExitUsage, fmt::format("'{}' is not an ingress URL: {}", cmd.url, error));
    }
    auto config = store().LoadConfig();
    if (const v1::Env* existing = FindEnv(config, cmd.name)) {
      throw CliError(kExitUsage, fmt::format("env '{}' already exists ({}); remove it first with "
                                             "`muon env remove {}`",
                                             cmd.name, existing->url(), cmd.name));
    }
    v1::Env* env = config.add_envs();
    env->set_name(cmd.name);
    env->set_url(url->ToString());
    env->set_region(cmd.region);
    const bool now_current = FindEnv(config, config.current_env()) == nullptr;
    if (now_current) config.set_current_env(cmd.name);
    store().SaveConfig(config);
    if (json_) {
      ctx_.out << ToJson(*FindEnv(config, cmd.name)) << "\n";
      return kExitOk;
    }
    ctx_.out << fmt::format("Added env {} ({}{}).\n", cmd.name, url->ToString(),
                            cmd.region.empty() ? "" : ", region " + cmd.region);
    if (now_current) {
      ctx_.out << fmt::format("Current env: {}. Next: muon login\n", cmd.name);
    } else {
      ctx_.out << fmt::format("Switch to it with `muon env use {}`, or use --env {} once.\n",
                              cmd.name, cmd.name);
    }
    return kExitOk;
  }

  int Do(const EnvUseCmd& cmd) {
    auto config = store().LoadConfig();
    const v1::Env* env = FindEnv(config, cmd.name);
    if (env == nullptr) {
      throw CliError(kExitUsage, fmt::format("unknown env '{}' (see `muon env list`)", cmd.name));
    }
    config.set_current_env(cmd.name);
    store().SaveConfig(config);
    if (json_) {
      ctx_.out << ToJson(*env) << "\n";
    } else {
      ctx_.out << fmt::format("Using env {} ({}).\n", env->name(), env->url());
    }
    return kExitOk;
  }

  int Do(const EnvRemoveCmd& cmd) {
    auto config = store().LoadConfig();
    auto* envs = config.mutable_envs();
    auto it = std::find_if(envs->begin(), envs->end(),
                           [&](const v1::Env& e) { return e.name() == cmd.name; });
    if (it == envs->end()) {
      throw CliError(kExitUsage, fmt::format("unknown env '{}' (see `muon env list`)", cmd.name));
    }
    envs->erase(it);
    if (config.current_env() == cmd.name) {
      config.set_current_env(config.envs_size() > 0 ? config.envs(0).name() : "");
    }
    bool had_session = false;
    {
      auto lock = store().LockCredentials();
      auto creds = store().LoadCredentials();
      had_session = creds.mutable_envs()->erase(cmd.name) > 0;
      if (had_session) store().SaveCredentials(creds);
    }
    store().SaveConfig(config);
    if (json_) {
      ctx_.out << ToJson(config) << "\n";
      return kExitOk;
    }
    ctx_.out << fmt::format("Removed env {}{}.\n", cmd.name,
                            had_session ? " and its stored credentials" : "");
    if (!config.current_env().empty()) {
      ctx_.out << fmt::format("Current env: {}.\n", config.current_env());
    }
    return kExitOk;
  }

  // ---- sessions ----------------------------------------------------------------------------

  Endpoint LoginEndpoint(const std::string& region) {
    const auto config = store().LoadConfig();
    auto known = [&] {
      std::string out;
      for (const auto& e : config.envs()) {
        out += (out.empty() ? "" : ", ") + e.name() + (e.region().empty() ? "" : "/" + e.region());
      }
      return out.empty() ? std::string("none configured") : "known: " + out;
    };
    if (!EnvName().empty() || region.empty()) {
      Endpoint ep = ResolveEndpoint(config, EnvName(), ctx_.env, ctx_.cwd);
      if (!region.empty() && !ep.region.empty() && ep.region != region && ep.name != region) {
        throw CliError(kExitUsage,
                       fmt::format("env {} serves region {}, not {}", ep.name, ep.region, region));
      }
      return ep;
    }
    if (const v1::Env* env = FindEnvForRegion(config, region)) return EndpointFromEnv(*env);
    if (config.envs_size() == 0) {
      if (auto implicit = ImplicitEndpoint(ctx_.env, ctx_.cwd)) {
        if (implicit->region.empty() || implicit->region == region) return *implicit;
      }
    }
    throw CliError(kExitUsage,
                   fmt::format("no env for region '{}' ({}); add one with `muon env add {} URL "
                               "--region {}`",
                               region, known(), region, region));
  }

  void PrintSession(const char* verb, const Endpoint& ep, const v1::Credential& c,
                    int64_t expires_in) {
    if (json_) {
      pb::Struct s;
      SetString(s, "env", ep.name);
      SetString(s, "url", ep.url.ToString());
      SetString(s, "email", c.email());
      SetString(s, "region", c.region());
      SetString(
          s, "expiresAt",
          pb::util::TimeUtil::ToString(pb::util::TimeUtil::SecondsToTimestamp(c.expires_at())));
      ctx_.out << StructJson(s) << "\n";
      return;
    }
    ctx_.out << fmt::format("{} {} ({}) as {}, region {}; token valid {}\n", verb, ep.name,
                            ep.url.ToString(), c.email(), OrDash(c.region()),
                            FormatSeconds(expires_in));
  }

  int Do(const LoginCmd& cmd) {
    const Endpoint ep = LoginEndpoint(cmd.region);
    std::string email = cmd.email;
    if (email.empty()) {
      std::string previous;
      const auto creds = store().LoadCredentials();
      if (auto it = creds.envs().find(ep.name); it != creds.envs().end()) {
        previous = it->second.email();
      }
      email = Ask(previous.empty() ? "Email: " : fmt::format("Email [{}]: ", previous),
                  "an email (--email)");
      if (email.empty()) email = previous;
      if (email.empty()) throw CliError(kExitUsage, "an email is needed");
    }
    WarnPlainHttp(ep);
    auth::LoginRequest request;
    request.set_email(email);
    request.set_password(cmd.password_stdin ? StdinSecret("password") : AskSecret("Password: "));
    const HttpResponse response = Post(ep, "/v1/auth/Login", ToJson(request), "");
    Expect2xx(response, ep);
    const auto tokens = ParseReply<auth::TokenResponse>(response, "Login");
    const auto credential = SaveSession(ep, tokens, email);
    PrintSession("Logged in to", ep, credential, tokens.expires_in());
    return kExitOk;
  }

  int Do(const SignupCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    auth::SignupRequest request;
    request.set_invite_code(cmd.invite);
    request.set_email(cmd.email);
    if (cmd.name) {
      request.set_name(*cmd.name);
    } else if (Interactive() && !cmd.password_stdin) {
      request.set_name(Ask("Name (optional): ", "a name"));
    }
    WarnPlainHttp(ep);
    request.set_password(cmd.password_stdin ? StdinSecret("password")
                                            : AskNewSecret("New password: "));
    const HttpResponse response = Post(ep, "/v1/auth/Signup", ToJson(request), "");
    Expect2xx(response, ep);
    const auto tokens = ParseReply<auth::TokenResponse>(response, "Signup");
    const auto credential = SaveSession(ep, tokens, cmd.email);
    PrintSession("Signed up; logged in to", ep, credential, tokens.expires_in());
    return kExitOk;
  }

  int Do(const LogoutCmd&) {
    const Endpoint ep = CurrentEndpoint();
    auto lock = store().LockCredentials();
    auto creds = store().LoadCredentials();
    auto it = creds.envs().find(ep.name);
    if (it == creds.envs().end()) {
      if (json_) {
        ctx_.out << "{}\n";
      } else {
        ctx_.out << fmt::format("Not logged in to {} ({}).\n", ep.name, ep.url.ToString());
      }
      return kExitOk;
    }
    std::string failure;
    if (!it->second.refresh_token().empty()) {
      auth::LogoutRequest request;
      request.set_refresh_token(it->second.refresh_token());
      try {
        const HttpResponse response =
            Post(ep, "/v1/auth/Logout", ToJson(request), "", {}, milliseconds(15000));
        if (response.status < 200 || response.status >= 300) failure = FormatApiError(response);
      } catch (const CliError& e) {
        failure = e.what();
      }
    }
    creds.mutable_envs()->erase(ep.name);
    store().SaveCredentials(creds);
    if (!failure.empty()) {
      ctx_.err << fmt::format(
          "warning: the ingress did not confirm the logout: {}\n"
          "warning: removed the stored credentials anyway; the session ends on the server when "
          "its refresh token expires\n",
          failure);
    }
    if (json_) {
      pb::Struct s;
      SetString(s, "env", ep.name);
      (*s.mutable_fields())["revoked"].set_bool_value(failure.empty());
      ctx_.out << StructJson(s) << "\n";
    } else {
      ctx_.out << fmt::format("Logged out of {} ({}){}.\n", ep.name, ep.url.ToString(),
                              failure.empty() ? "" : " locally");
    }
    return kExitOk;
  }

  int Do(const WhoamiCmd&) {
    const Endpoint ep = CurrentEndpoint();
    const auto session = Session(ep, true);
    const HttpResponse response = Post(ep, "/v1/auth/Whoami", "{}", session->access_token());
    Expect2xx(response, ep);
    const auto account = ParseReply<auth::Account>(response, "Whoami");
    // Region and expiry of the token: what was stored at login, else what the token says.
    std::string token_region = session->region();
    int64_t expires_at = session->expires_at();
    if (auto claims = PeekClaims(session->access_token())) {
      if (token_region.empty()) token_region = claims->iss();
      if (expires_at == 0) expires_at = claims->exp();
    }
    if (json_) {
      pb::Struct s;
      std::string error;
      if (!FromJson(response.body, &s, &error)) s.Clear();
      SetString(s, "env", ep.name);
      SetString(s, "url", ep.url.ToString());
      SetString(s, "tokenRegion", token_region);
      if (expires_at != 0) {
        SetString(s, "tokenExpiresAt",
                  pb::util::TimeUtil::ToString(pb::util::TimeUtil::SecondsToTimestamp(expires_at)));
      }
      ctx_.out << StructJson(s) << "\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"email:", account.email()},
        {"name:", OrDash(account.name())},
        {"roles:", OrDash(JoinStrings(account.roles(), ", "))},
        {"account:", fmt::format("{}{}{}", OrDash(account.id()),
                                 account.created_region().empty()
                                     ? ""
                                     : ", created in region " + account.created_region(),
                                 account.disabled() ? " (disabled)" : "")},
        {"env:", fmt::format("{} ({})", ep.name, ep.url.ToString())},
        {"token:", fmt::format("region {}, expires {}", OrDash(token_region),
                               expires_at == 0 ? std::string("-")
                                               : fmt::format("{} ({})", FormatUnixTime(expires_at),
                                                             RelativeTo(expires_at, Now())))},
    };
    std::string table = RenderTable({"", ""}, rows);
    ctx_.out << table.substr(table.find('\n') + 1);  // no header line
    return kExitOk;
  }

  int Do(const TokenCmd&) {
    const Endpoint ep = CurrentEndpoint();
    const auto session = Session(ep, true);
    if (json_) {
      pb::Struct s;
      SetString(s, "accessToken", session->access_token());
      if (session->expires_at() != 0) {
        SetString(s, "expiresAt",
                  pb::util::TimeUtil::ToString(
                      pb::util::TimeUtil::SecondsToTimestamp(session->expires_at())));
      }
      ctx_.out << StructJson(s) << "\n";
    } else {
      ctx_.out << session->access_token() << "\n";
    }
    return kExitOk;
  }

  int Do(const PasswdCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    auth::ChangePasswordRequest request;
    if (cmd.password_stdin) {
      request.set_current_password(StdinSecret("current password"));
      request.set_new_password(StdinSecret("new password (second line)"));
    } else {
      request.set_current_password(AskSecret("Current password: "));
      request.set_new_password(AskNewSecret("New password: "));
    }
    WarnPlainHttp(ep);
    const HttpResponse response = AuthCall(ep, "ChangePassword", request);
    if (json_) {
      PrintJson(response.body.empty() ? "{}" : response.body);
    } else {
      ctx_.out << "Password changed.\n";
    }
    return kExitOk;
  }

  // ---- calls -------------------------------------------------------------------------------

  int Do(const CallCmd& cmd) {
    std::string body = cmd.body;
    if (cmd.body_from_stdin) {
      body.clear();
      char buf[65536];
      while (ctx_.in.read(buf, sizeof buf) || ctx_.in.gcount() > 0) {
        body.append(buf, static_cast<size_t>(ctx_.in.gcount()));
        if (body.size() > kMaxStdinBody) {
          throw CliError(kExitUsage, "the request body on stdin is larger than 64 MiB");
        }
      }
    }
    if (auto problem = JsonError(body)) {
      throw CliError(kExitUsage,
                     fmt::format("the request body is not valid JSON: {}", Sanitize(*problem)));
    }
    const Endpoint ep = CurrentEndpoint();
    // Calls may reach public endpoints: without a session they go out without a token.
    const auto session = Session(ep, false);
    std::vector<std::pair<std::string, std::string>> headers;
    if (!cmd.version.empty()) headers.emplace_back("Muon-Version", cmd.version);
    milliseconds timeout = ctx_.default_timeout;
    if (cmd.timeout) {
      headers.emplace_back("Muon-Timeout", config::FormatDuration(*cmd.timeout));
      timeout = std::chrono::ceil<milliseconds>(*cmd.timeout) + ctx_.timeout_slack;
    }
    const HttpResponse response =
        Post(ep, fmt::format("/v1/{}/{}", cmd.service, cmd.method), std::move(body),
             session ? session->access_token() : std::string{}, std::move(headers), timeout);
    if (response.status == 401 && !session) {
      throw CliError(kExitUnauthorized,
                     fmt::format("{}\nhint: not logged in to {}: run `muon login{}`",
                                 FormatApiError(response), ep.name, EnvFlag(ep)));
    }
    Expect2xx(response, ep);
    if (response.body.empty()) return kExitOk;
    if (auto formatted = ReformatJson(response.body, !json_)) {
      ctx_.out << *formatted << "\n";
    } else {
      ctx_.out << response.body;
      if (response.body.back() != '\n') ctx_.out << "\n";
    }
    return kExitOk;
  }

  // ---- logs --------------------------------------------------------------------------------

  int Do(const LogsCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    const auto session = Session(ep, true);
    logs::v1::Filter filter;
    filter.set_service(cmd.service);
    filter.set_instance(cmd.instance);
    filter.set_release(cmd.release);
    if (!cmd.source.empty()) filter.set_source(*loglines::ParseSourceName(cmd.source));
    if (!cmd.severity.empty()) filter.set_min_severity(*loglines::ParseSeverityName(cmd.severity));
    filter.set_grep(cmd.grep);
    if (!cmd.build.empty()) {
      filter.set_instance(cmd.build);
      filter.set_source(logs::v1::SOURCE_BUILD);
    }
    if (cmd.follow) return FollowLogs(ep, session->access_token(), cmd, filter);

    logs::v1::QueryRequest query;
    *query.mutable_filter() = filter;
    query.set_since(cmd.since);
    query.set_until(cmd.until);
    query.set_limit(cmd.lines);
    const HttpResponse response =
        Post(ep, "/v1/logs/Query", ToJson(query, false), session->access_token());
    Expect2xx(response, ep);
    const auto page = ParseReply<logs::v1::QueryResponse>(response, "logs.Query");
    // Newest first from the service; printed oldest first, like a log file.
    for (int i = page.lines_size() - 1; i >= 0; --i) PrintLogLine(page.lines(i));
    if (page.lines_size() == 0 && !json_) {
      ctx_.err << fmt::format("No log lines match (since {}{}).\n",
                              cmd.since.empty() ? "24h ago" : cmd.since,
                              cmd.until.empty() ? "" : ", until " + cmd.until);
    }
    return kExitOk;
  }

  void PrintLogLine(const logs::v1::LogLine& line) {
    if (json_) {
      ctx_.out << ToJson(line, false) << "\n";
    } else {
      ctx_.out << FormatLogLine(line, ctx_.color) << "\n";
    }
  }

  int FollowLogs(const Endpoint& ep, const std::string& access_token, const LogsCmd& cmd,
                 const logs::v1::Filter& filter) {
    std::string target = "/v1/logs/tail?n=" + std::to_string(cmd.lines);
    auto add = [&](const char* key, const std::string& value) {
      if (!value.empty()) target += fmt::format("&{}={}", key, PercentEncode(value));
    };
    add("service", filter.service());
    add("instance", filter.instance());
    add("release", filter.release());
    add("source", std::string(loglines::SourceName(filter.source())));
    add("severity", std::string(loglines::SeverityName(filter.min_severity())));
    add("grep", filter.grep());
    HttpRequest request;
    request.target = target;
    request.headers = {{"Accept", "text/event-stream"},
                       {"Authorization", "Bearer " + access_token}};
    std::string buffer;
    std::optional<CliError> failure;
    auto on_piece = [&](std::string_view piece) {
      buffer.append(piece);
      for (auto& [type, data] : TakeSseEvents(buffer)) {
        if (type == "line") {
          logs::v1::LogLine line;
          if (FromJson(data, &line, nullptr)) PrintLogLine(line);
        } else if (type == "error") {
          common::v1::Error error;
          std::string detail = data;
          if (FromJson(data, &error, nullptr)) detail = error.detail();
          failure.emplace(kExitUnavailable, "the tail ended: " + Sanitize(detail));
          return false;
        }
      }
      ctx_.out.flush();
      return true;
    };
    const HttpResponse response = Send(ep, request, ctx_.default_timeout, on_piece);
    Expect2xx(response, ep);
    if (failure) throw *failure;
    throw CliError(kExitUnavailable,
                   "the ingress ended the tail (restarting or draining); run "
                   "the command again");
  }

  int Do(const ServicesCmd&) {
    const Endpoint ep = CurrentEndpoint();
    const auto session = Session(ep, true);
    HttpRequest request;
    request.target = "/v1/services";
    request.headers = {{"Accept", "application/json"},
                       {"Authorization", "Bearer " + session->access_token()}};
    const HttpResponse response = Send(ep, request, ctx_.default_timeout);
    Expect2xx(response, ep);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto list = ParseReply<v1::ServicesResponse>(response, "GET /v1/services");
    if (list.services_size() == 0) {
      ctx_.out << "No services are running.\n";
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows;
    for (const auto& svc : list.services()) {
      std::set<std::string> versions;
      for (const auto& inst : svc.instances()) {
        if (!inst.version().empty()) versions.insert(inst.version());
      }
      std::string version_text;
      for (const auto& v : versions) version_text += (version_text.empty() ? "" : ",") + v;
      // One name per endpoint even when several versions report it.
      std::string endpoints;
      std::set<std::string> named;
      for (const auto& e : svc.endpoints()) {
        if (!named.insert(e.name()).second) continue;
        endpoints += (endpoints.empty() ? "" : ",") + e.name();
      }
      rows.push_back({svc.name(), OrDash(version_text), std::to_string(svc.instances_size()),
                      OrDash(endpoints)});
    }
    ctx_.out << RenderTable({"NAME", "VERSIONS", "INSTANCES", "ENDPOINTS"}, rows);
    return kExitOk;
  }

  // ---- admin -------------------------------------------------------------------------------

  int Do(const AccountsListCmd&) {
    const Endpoint ep = CurrentEndpoint();
    const HttpResponse response = AuthCall(ep, "ListAccounts", auth::ListAccountsRequest());
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto list = ParseReply<auth::ListAccountsResponse>(response, "ListAccounts");
    std::vector<std::vector<std::string>> rows;
    for (const auto& a : list.accounts()) {
      rows.push_back({a.email(), OrDash(a.name()), OrDash(JoinStrings(a.roles(), ",")),
                      OrDash(a.created_region()), a.service_account() ? "service" : "user",
                      a.disabled() ? "disabled" : "active", TimestampText(a.created_at())});
    }
    ctx_.out << RenderTable({"EMAIL", "NAME", "ROLES", "REGION", "KIND", "STATUS", "CREATED"},
                            rows);
    return kExitOk;
  }

  int Do(const AccountsSetDisabledCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    auth::SetAccountDisabledRequest request;
    request.set_email(cmd.email);
    request.set_disabled(cmd.disabled);
    const HttpResponse response = AuthCall(ep, "SetAccountDisabled", request);
    if (json_) {
      PrintJson(response.body);
    } else {
      ctx_.out << fmt::format("{} account {}.\n", cmd.disabled ? "Disabled" : "Enabled", cmd.email);
    }
    return kExitOk;
  }

  int Do(const InvitesListCmd&) {
    const Endpoint ep = CurrentEndpoint();
    const HttpResponse response = AuthCall(ep, "ListInvites", auth::ListInvitesRequest());
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto list = ParseReply<auth::ListInvitesResponse>(response, "ListInvites");
    std::vector<std::vector<std::string>> rows;
    const int64_t now = Now();
    for (const auto& inv : list.invites()) {
      std::string state = inv.used() ? "used" : "open";
      if (!inv.used() && inv.expires_at().seconds() != 0 && inv.expires_at().seconds() <= now) {
        state = "expired";
      }
      rows.push_back({OrDash(inv.id()), inv.email(), OrDash(JoinStrings(inv.roles(), ",")),
                      TimestampText(inv.expires_at()), state, OrDash(inv.created_by())});
    }
    ctx_.out << RenderTable({"ID", "EMAIL", "ROLES", "EXPIRES", "STATE", "CREATED BY"}, rows);
    return kExitOk;
  }

  int Do(const InvitesCreateCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    auth::CreateInviteRequest request;
    request.set_email(cmd.email);
    for (const auto& role : cmd.roles) request.add_roles(role);
    if (cmd.ttl_seconds) request.set_ttl_seconds(*cmd.ttl_seconds);
    const HttpResponse response = AuthCall(ep, "CreateInvite", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto invite = ParseReply<auth::Invite>(response, "CreateInvite");
    ctx_.out << fmt::format("Invited {} (roles: {}), valid until {}.\n", invite.email(),
                            OrDash(JoinStrings(invite.roles(), ", ")),
                            TimestampText(invite.expires_at()));
    ctx_.out << fmt::format("Invite code: {}\n\nGive the invitee these commands:\n", invite.code());
    std::string env_flag;
    if (ep.configured) {
      ctx_.out << fmt::format("  muon env add {} {}{}    # once\n", ShellQuote(ep.name),
                              ShellQuote(ep.url.ToString()),
                              ep.region.empty() ? "" : " --region " + ShellQuote(ep.region));
      env_flag = " --env " + ShellQuote(ep.name);
    }
    ctx_.out << fmt::format("  muon signup{} --invite {} --email {}\n", env_flag,
                            ShellQuote(invite.code()), ShellQuote(invite.email()));
    return kExitOk;
  }

  int Do(const RulesListCmd&) {
    const Endpoint ep = CurrentEndpoint();
    const HttpResponse response = AuthCall(ep, "ListRules", auth::ListRulesRequest());
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto list = ParseReply<auth::ListRulesResponse>(response, "ListRules");
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : list.rules()) {
      rows.push_back({OrDash(r.id()), std::to_string(r.priority()), r.role(), r.service(),
                      r.endpoint(), r.effect(), r.description()});
    }
    ctx_.out << RenderTable(
        {"ID", "PRIORITY", "ROLE", "SERVICE", "ENDPOINT", "EFFECT", "DESCRIPTION"}, rows);
    return kExitOk;
  }

  int Do(const RulesAddCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    auth::Rule rule;
    rule.set_role(cmd.role);
    rule.set_service(cmd.service);
    rule.set_endpoint(cmd.endpoint);
    rule.set_effect(cmd.effect);
    rule.set_priority(cmd.priority);
    rule.set_description(cmd.description);
    const HttpResponse response = AuthCall(ep, "CreateRule", rule);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto created = ParseReply<auth::Rule>(response, "CreateRule");
    ctx_.out << fmt::format("Created rule {}: {} role {} on {}.{} (priority {}).\n",
                            OrDash(created.id()), created.effect(), created.role(),
                            created.service(), created.endpoint(), created.priority());
    return kExitOk;
  }

  int Do(const RulesDeleteCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    auth::DeleteRuleRequest request;
    request.set_id(cmd.id);
    const HttpResponse response = AuthCall(ep, "DeleteRule", request);
    if (json_) {
      PrintJson(response.body.empty() ? "{}" : response.body);
    } else {
      ctx_.out << fmt::format("Deleted rule {}.\n", cmd.id);
    }
    return kExitOk;
  }

  // ---- github-events -----------------------------------------------------------------------

  // The secret of a --secret-file, read before anything is sent; never printed.
  std::string Secret(const std::string& path) {
    std::string problem;
    auto secret = ReadSecretFile(path, &problem);
    if (!secret) throw CliError(kExitUsage, problem);
    return *secret;
  }

  int Do(const ReposListCmd&) {
    const Endpoint ep = CurrentEndpoint();
    const HttpResponse response =
        ServiceCall(ep, "github-events", "ListRepos", gh::ListReposRequest());
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto list = ParseReply<gh::ListReposResponse>(response, "ListRepos");
    if (list.repos_size() == 0) {
      ctx_.out << "No repos registered. Add one with: muon repos add OWNER/NAME --secret-file F\n";
      return kExitOk;
    }
    const int64_t now = Now();
    std::vector<std::vector<std::string>> rows;
    for (const auto& r : list.repos()) {
      // The previous secret only matters while it is still accepted.
      const auto& until = r.previous_secret_valid_until();
      rows.push_back({r.name(), OrDash(r.branch()), OrDash(r.clone_url()),
                      TimestampText(r.secret_updated_at()),
                      until.seconds() > now ? TimestampText(until) : "-",
                      std::to_string(r.rejected_deliveries())});
    }
    ctx_.out << RenderTable(
        {"NAME", "BRANCH", "CLONE URL", "SECRET UPDATED", "PREVIOUS SECRET UNTIL", "REJECTED"},
        rows);
    return kExitOk;
  }

  int Do(const ReposAddCmd& cmd) {
    gh::AddRepoRequest request;
    request.set_name(cmd.name);
    request.set_secret(Secret(cmd.secret_file));
    request.set_clone_url(cmd.clone_url);
    request.set_branch(cmd.branch);
    const Endpoint ep = CurrentEndpoint();
    const HttpResponse response = ServiceCall(ep, "github-events", "AddRepo", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto repo = ParseReply<gh::Repo>(response, "AddRepo");
    const std::string branch =
        !repo.branch().empty() ? repo.branch() : (cmd.branch.empty() ? "main" : cmd.branch);
    ctx_.out << fmt::format(
        "Added repo {} (branch {}). Point its GitHub webhook at {}/v1/github/events with content "
        "type application/json and this secret.\n",
        repo.name().empty() ? cmd.name : repo.name(), branch, ep.url.ToString());
    return kExitOk;
  }

  int Do(const ReposRemoveCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    gh::RemoveRepoRequest request;
    request.set_name(cmd.name);
    const HttpResponse response = ServiceCall(ep, "github-events", "RemoveRepo", request);
    if (json_) {
      PrintJson(response.body.empty() ? "{}" : response.body);
    } else {
      ctx_.out << fmt::format(
          "Removed repo {}. Its webhooks are refused from now on; delete the webhook on GitHub "
          "too.\n",
          cmd.name);
    }
    return kExitOk;
  }

  int Do(const ReposRotateSecretCmd& cmd) {
    gh::RotateSecretRequest request;
    request.set_name(cmd.name);
    request.set_secret(Secret(cmd.secret_file));
    request.set_grace(cmd.grace);
    const Endpoint ep = CurrentEndpoint();
    const HttpResponse response = ServiceCall(ep, "github-events", "RotateSecret", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto repo = ParseReply<gh::Repo>(response, "RotateSecret");
    const std::string name = repo.name().empty() ? cmd.name : repo.name();
    const int64_t until = repo.previous_secret_valid_until().seconds();
    if (until > Now()) {
      ctx_.out << fmt::format(
          "Rotated the webhook secret of {}. The old secret is accepted until {} ({}): set the "
          "new one on the repository's GitHub webhook before then.\n",
          name, FormatUnixTime(until), RelativeTo(until, Now()));
    } else {
      ctx_.out << fmt::format(
          "Rotated the webhook secret of {}. The old secret is no longer accepted: set the new "
          "one on the repository's GitHub webhook now.\n",
          name);
    }
    return kExitOk;
  }

  // "refs/heads/main 1a2b3c4: <detail>" for a push, else the detail.
  static std::string DeliveryDetail(const gh::Delivery& d) {
    std::string push;
    if (!d.ref().empty() || !d.after().empty()) {
      push = OrDash(d.ref());
      const std::string& after = d.after();
      if (!after.empty() && after.find_first_not_of('0') == std::string::npos) {
        push += " deleted";
      } else if (!after.empty()) {
        push += " " + after.substr(0, 7);
      }
    }
    if (push.empty()) return OrDash(d.detail());
    return d.detail().empty() ? push : push + ": " + d.detail();
  }

  int Do(const DeliveriesCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    gh::ListDeliveriesRequest request;
    request.set_repo(cmd.repo);
    request.set_limit(cmd.limit);
    const HttpResponse response = ServiceCall(ep, "github-events", "ListDeliveries", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto list = ParseReply<gh::ListDeliveriesResponse>(response, "ListDeliveries");
    if (list.deliveries_size() == 0) {
      ctx_.out << (cmd.repo.empty() ? std::string("No deliveries yet.\n")
                                    : fmt::format("No deliveries for {} yet.\n", cmd.repo));
    } else {
      std::vector<std::vector<std::string>> rows;
      for (const auto& d : list.deliveries()) {
        rows.push_back({TimestampText(d.received_at()), OrDash(d.delivery_id()), OrDash(d.repo()),
                        OrDash(d.event()), OrDash(d.status()), DeliveryDetail(d)});
      }
      ctx_.out << RenderTable({"RECEIVED", "DELIVERY", "REPO", "EVENT", "STATUS", "DETAIL"}, rows);
    }
    if (list.rejections_size() > 0) {
      std::vector<std::vector<std::string>> rows;
      for (const auto& r : list.rejections()) {
        rows.push_back({OrDash(r.repo()), OrDash(r.reason()), std::to_string(r.count()),
                        TimestampText(r.last_at())});
      }
      ctx_.out << "\nRejected (not stored):\n"
               << RenderTable({"REPO", "REASON", "COUNT", "LAST"}, rows);
    }
    return kExitOk;
  }

  // ---- builder -----------------------------------------------------------------------------

  static std::string ShortCommit(const std::string& commit) { return OrDash(commit.substr(0, 12)); }

  // "failed (timeout)" for a failed build, else the status.
  static std::string BuildStatus(const bld::Build& b) {
    if (b.status() == "failed" && !b.category().empty()) return "failed (" + b.category() + ")";
    return OrDash(b.status());
  }

  // From start to finish; while running, so far.
  std::string BuildDuration(const bld::Build& b) const {
    if (b.finished_at().seconds() != 0 || b.duration_ms() > 0) return FormatMillis(b.duration_ms());
    if (b.status() == "running" && b.started_at().seconds() != 0) {
      return FormatSeconds(Now() - b.started_at().seconds()) + " so far";
    }
    return "-";
  }

  std::string NoBuildsYet(const BuildsListCmd& cmd, const Endpoint& ep) const {
    const std::string repo = cmd.repo.empty() ? "OWNER/NAME" : cmd.repo;
    if (!cmd.service.empty()) {
      return fmt::format(
          "No builds of {}{} yet. Build it with: muon deploy {} --ref REF --repo {}{}\n",
          cmd.service, cmd.repo.empty() ? "" : " from " + cmd.repo, cmd.service, repo, EnvFlag(ep));
    }
    if (!cmd.repo.empty()) {
      return fmt::format(
          "No builds from {} yet. Push to it, or run: muon deploy SERVICE --ref REF "
          "--repo {}{}\n",
          cmd.repo, cmd.repo, EnvFlag(ep));
    }
    return fmt::format(
        "No builds yet. Push to a registered repo (muon repos add), or run: muon "
        "deploy SERVICE --ref REF --repo OWNER/NAME{}\n",
        EnvFlag(ep));
  }

  int Do(const BuildsListCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    bld::ListBuildsRequest request;
    request.set_service(cmd.service);
    request.set_repo(cmd.repo);
    request.set_limit(cmd.limit);
    const HttpResponse response = ServiceCall(ep, "builder", "ListBuilds", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto list = ParseReply<bld::ListBuildsResponse>(response, "ListBuilds");
    if (list.builds_size() == 0) {
      ctx_.out << NoBuildsYet(cmd, ep);
      return kExitOk;
    }
    // Newest first, as the builder lists them.
    std::vector<std::vector<std::string>> rows;
    for (const auto& b : list.builds()) {
      rows.push_back({OrDash(b.id()), OrDash(b.service()), ShortCommit(b.commit()), BuildStatus(b),
                      OrDash(b.trigger()), TimestampText(b.created_at()), BuildDuration(b)});
    }
    ctx_.out << RenderTable({"ID", "SERVICE", "COMMIT", "STATUS", "TRIGGER", "CREATED", "DURATION"},
                            rows);
    return kExitOk;
  }

  int Do(const BuildsShowCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    bld::GetBuildRequest request;
    request.set_id(cmd.id);
    const HttpResponse response = ServiceCall(ep, "builder", "GetBuild", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto b = ParseReply<bld::Build>(response, "GetBuild");
    const std::string id = b.id().empty() ? cmd.id : b.id();
    std::vector<std::vector<std::string>> rows = {
        {"id:", id},
        {"service:", OrDash(b.service())},
        {"repo:", OrDash(b.repo()) + (b.folder().empty() ? "" : ", folder " + b.folder())},
        {"commit:", OrDash(b.commit())},
        {"ref:", OrDash(b.ref())},
        {"trigger:", OrDash(b.trigger())},
        {"status:", BuildStatus(b)},
        {"attempts:", std::to_string(b.attempts())},
        {"created:", TimestampText(b.created_at())},
        {"started:", TimestampText(b.started_at())},
        {"finished:", TimestampText(b.finished_at())},
        {"duration:", BuildDuration(b)},
    };
    if (!b.artifact_digest().empty()) {
      rows.push_back(
          {"artifact:",
           fmt::format("sha256:{} ({}){}", b.artifact_digest(), FormatBytes(b.artifact_size()),
                       b.reused() ? ", reused from an identical earlier build" : "")});
    }
    const bool failed = b.status() == "failed";
    if (failed) {
      rows.push_back({"category:", OrDash(b.category())});
      rows.push_back({"step:", OrDash(b.failed_step())});
      rows.push_back({"exit code:", b.exit_code() < 0 ? std::string("- (killed, or no step ran)")
                                                      : std::to_string(b.exit_code())});
    }
    if (failed || !b.detail().empty()) rows.push_back({"detail:", OrDash(b.detail())});
    rows.push_back({"logs:", fmt::format("muon builds logs {}{}", id, EnvFlag(ep))});
    std::string table = RenderTable({"", ""}, rows);
    table = table.substr(table.find('\n') + 1);  // no header line
    // The logs hint goes last, after the output's last lines, aligned with the rest.
    const size_t hint = table.rfind('\n', table.size() - 2) + 1;
    ctx_.out << table.substr(0, hint);
    if (failed && b.last_lines_size() > 0) {
      ctx_.out << "last lines:\n";
      for (const auto& line : b.last_lines()) ctx_.out << "  " << Sanitize(line) << "\n";
    }
    ctx_.out << table.substr(hint);
    return kExitOk;
  }

  // The STATUS of a build `muon deploy` started (or found done).
  static std::string DeployStatus(const bld::Build& b) {
    if (b.status() == "succeeded") {
      return b.artifact_digest().empty()
                 ? std::string("succeeded")
                 : "succeeded: reusing artifact " + b.artifact_digest().substr(0, 12);
    }
    return BuildStatus(b);
  }

  int Do(const DeployCmd& cmd) {
    if (cmd.ref.empty()) {
      // No build: roll out an existing release (the newest when none is named).
      sched::DeployRequest deploy;
      deploy.set_service(cmd.service);
      deploy.set_version(cmd.release);
      return Mutate("Deploy", deploy);
    }
    const Endpoint ep = CurrentEndpoint();
    bld::StartBuildRequest request;
    request.set_service(cmd.service);
    request.set_ref(cmd.ref);
    request.set_repo(cmd.repo);
    const HttpResponse response = ServiceCall(ep, "builder", "StartBuild", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto started = ParseReply<bld::StartBuildResponse>(response, "StartBuild");
    PrintBuildReceipt(ep, started.builds(), started.commit());
    if (!started.builds().empty()) PrintRolloutHint(ep, cmd.service, started.builds());
    return kExitOk;
  }

  // After a build was asked for: the scheduler takes it from there.
  void PrintRolloutHint(const Endpoint& ep, const std::string& service,
                        const google::protobuf::RepeatedPtrField<bld::Build>& builds) {
    ctx_.out << "\nWhen the build succeeds the scheduler makes a release of it and rolls it out:\n";
    for (const auto& b : builds) {
      if (b.service() != service && !b.service().empty()) continue;
      ctx_.out << fmt::format("  muon wait {} --build {}{}\n", service, b.id(), EnvFlag(ep));
      break;
    }
    ctx_.out << fmt::format("  muon events {} -f{}\n", service, EnvFlag(ep));
  }

  int Do(const ReposSyncCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    gh::SyncRepoRequest request;
    request.set_name(cmd.name);
    request.set_branch(cmd.branch);
    const HttpResponse response = ServiceCall(ep, "github-events", "SyncRepo", request);
    if (json_) {
      PrintJson(response.body);
      return kExitOk;
    }
    const auto synced = ParseReply<gh::SyncRepoResponse>(response, "SyncRepo");
    ctx_.out << fmt::format("{} at {}:\n", cmd.name, ShortCommit(synced.commit()));
    PrintBuildReceipt(ep, synced.builds(), synced.commit());
    return kExitOk;
  }

  // The receipt of started builds: what each one is, and the commands to watch it.
  void PrintBuildReceipt(const Endpoint& ep,
                         const google::protobuf::RepeatedPtrField<bld::Build>& builds,
                         const std::string& commit) {
    if (builds.empty()) {
      ctx_.out << "No builds were started.\n";
      return;
    }
    std::vector<std::vector<std::string>> rows;
    bool active = false;
    for (const auto& b : builds) {
      rows.push_back({OrDash(b.id()), OrDash(b.service()),
                      ShortCommit(b.commit().empty() ? commit : b.commit()), DeployStatus(b)});
      active = active || b.status() == "queued" || b.status() == "running";
    }
    ctx_.out << RenderTable({"ID", "SERVICE", "COMMIT", "STATUS"}, rows);
    ctx_.out << (active ? "\nWatch with:\n" : "\nDetails:\n");
    for (const auto& b : builds) {
      ctx_.out << fmt::format("  muon builds show {}{}\n", b.id(), EnvFlag(ep));
      if (b.status() == "queued" || b.status() == "running") {
        ctx_.out << fmt::format("  muon builds logs {} -f{}\n", b.id(), EnvFlag(ep));
      }
    }
  }

  // ---- scheduler ---------------------------------------------------------------------------

  template <typename Reply>
  Reply SchedulerCall(const Endpoint& ep, std::string_view method, const pb::Message& request,
                      std::string* raw = nullptr) {
    const HttpResponse response = ServiceCall(ep, "scheduler", method, request);
    if (raw != nullptr) *raw = response.body;
    return ParseReply<Reply>(response, "scheduler." + std::string(method));
  }

  // A mutation: its receipt, or with --output json the scheduler's answer.
  int Mutate(std::string_view method, const pb::Message& request) {
    const Endpoint ep = CurrentEndpoint();
    std::string raw;
    const auto receipt = SchedulerCall<sched::Receipt>(ep, method, request, &raw);
    if (json_) {
      PrintJson(raw);
    } else {
      ctx_.out << RenderReceipt(receipt, EnvFlag(ep));
    }
    return kExitOk;
  }

  // Pauses between polls; false: stop (tests only).
  bool Pause(milliseconds d) {
    if (ctx_.sleep) return ctx_.sleep(d);
    std::this_thread::sleep_for(d);
    return true;
  }

  // The one service of a Status reply for `service`.
  static const sched::ServiceStatus& OneService(const sched::StatusResponse& status,
                                                const std::string& service) {
    for (const auto& s : status.services()) {
      if (s.name() == service) return s;
    }
    throw CliError(kExitNotFound,
                   fmt::format("no service named {} (see `muon status`)", Sanitize(service)));
  }

  int Do(const StatusCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    sched::StatusRequest request;
    request.set_service(cmd.service);
    std::string raw;
    const auto status = SchedulerCall<sched::StatusResponse>(ep, "Status", request, &raw);
    if (json_) {
      PrintJson(raw);
    } else if (cmd.service.empty()) {
      ctx_.out << RenderStatusOverview(status, Now());
    } else {
      ctx_.out << RenderServiceStatus(OneService(status, cmd.service), Now());
    }
    return kExitOk;
  }

  int Do(const DescribeCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    sched::GetServiceRequest request;
    request.set_service(cmd.service);
    std::string raw;
    const auto describe = SchedulerCall<sched::DescribeResponse>(ep, "Describe", request, &raw);
    if (json_) {
      PrintJson(raw);
    } else {
      ctx_.out << RenderDescribe(describe, Now());
    }
    return kExitOk;
  }

  int Do(const ReleasesCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    sched::ListReleasesRequest request;
    request.set_service(cmd.service);
    request.set_limit(cmd.limit);
    std::string raw;
    const auto list = SchedulerCall<sched::ListReleasesResponse>(ep, "ListReleases", request, &raw);
    if (json_) {
      PrintJson(raw);
    } else if (list.releases_size() == 0) {
      ctx_.out << fmt::format("No releases of {} yet.\n", cmd.service);
    } else {
      ctx_.out << RenderReleases(list.releases(), Now());
    }
    return kExitOk;
  }

  // Events oldest first (by id), whatever order the scheduler answers in.
  static void SortEvents(pb::RepeatedPtrField<sched::Event>* events) {
    std::sort(events->begin(), events->end(),
              [](const sched::Event& a, const sched::Event& b) { return a.id() < b.id(); });
  }

  sched::ListEventsResponse ListEvents(const Endpoint& ep,
                                       const sched::ListEventsRequest& request) {
    auto list = SchedulerCall<sched::ListEventsResponse>(ep, "ListEvents", request);
    SortEvents(list.mutable_events());
    return list;
  }

  int Do(const HistoryCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    sched::ListEventsRequest request;
    request.set_service(cmd.service);
    request.set_limit(1000);  // instance events are filtered out here
    auto list = ListEvents(ep, request);
    sched::ListEventsResponse shown;
    for (const auto& e : list.events()) {
      if (IsHistoryEvent(e.type())) *shown.add_events() = e;
    }
    auto* events = shown.mutable_events();
    if (events->size() > cmd.limit) events->DeleteSubrange(0, events->size() - cmd.limit);
    if (json_) {
      for (const auto& e : shown.events()) ctx_.out << ToJson(e) << "\n";
    } else if (shown.events_size() == 0) {
      ctx_.out << fmt::format("No history of {} yet.\n", cmd.service);
    } else {
      ctx_.out << RenderHistory(shown.events());
    }
    return kExitOk;
  }

  void PrintEvent(const sched::Event& e) {
    ctx_.out << (json_ ? ToJson(e) : FormatEventLine(e)) << "\n";
  }

  int Do(const EventsCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    sched::ListEventsRequest request;
    request.set_service(cmd.service);
    request.set_limit(cmd.limit);
    if (!cmd.since.empty()) *request.mutable_since() = SinceTimestamp(cmd.since);
    auto list = ListEvents(ep, request);
    int64_t last = list.last_id();
    for (const auto& e : list.events()) {
      PrintEvent(e);
      last = std::max(last, e.id());
    }
    if (!cmd.follow) {
      if (list.events_size() == 0 && !json_) {
        ctx_.err << (cmd.since.empty() ? std::string("No events.\n")
                                       : fmt::format("No events since {}.\n", cmd.since));
      }
      return kExitOk;
    }
    ctx_.out.flush();
    // Following: the events after the newest one seen, every 500 ms, until Ctrl-C. A poll the
    // ingress cannot answer (restarting, overloaded) is retried; other errors end the command.
    bool warned = false;
    while (Pause(milliseconds(500))) {
      sched::ListEventsRequest next;
      next.set_service(cmd.service);
      next.set_after_id(last);
      next.set_limit(1000);
      try {
        list = ListEvents(ep, next);
        warned = false;
      } catch (const CliError& e) {
        if (e.exit_code() != kExitUnavailable) throw;
        if (!warned) ctx_.err << "warning: " << e.what() << "; still trying\n";
        warned = true;
        continue;
      }
      for (const auto& e : list.events()) {
        if (e.id() <= last) continue;
        PrintEvent(e);
        last = e.id();
      }
      last = std::max(last, list.last_id());
      ctx_.out.flush();
    }
    return kExitOk;
  }

  // --since: a duration back from now, or an RFC 3339 time (checked when parsing).
  pb::Timestamp SinceTimestamp(const std::string& since) const {
    pb::Timestamp ts;
    if (auto d = config::ParseDuration(since)) {
      ts.set_seconds(Now() - std::chrono::duration_cast<std::chrono::seconds>(*d).count());
    } else {
      pb::util::TimeUtil::FromString(since, &ts);
    }
    return ts;
  }

  // `muon wait --build ID`: the build, then the release made of it. 0 when the timeout ran out
  // first (with a note printed).
  int32_t WaitForBuildRelease(const Endpoint& ep, const WaitCmd& cmd,
                              const std::function<bool()>& expired,
                              const std::function<bool(milliseconds)>& pause) {
    std::string last_status;
    bld::Build build;
    while (true) {
      bld::GetBuildRequest get;
      get.set_id(cmd.build);
      build = ParseReply<bld::Build>(ServiceCall(ep, "builder", "GetBuild", get), "GetBuild");
      if (build.status() != last_status && !json_) {
        ctx_.out << fmt::format("build {}: {}\n", cmd.build, BuildStatus(build));
        ctx_.out.flush();
      }
      last_status = build.status();
      if (build.status() == "failed") {
        std::string text = fmt::format("build {} failed: {}\n", cmd.build,
                                       CategoryDetail(build.category(), build.detail()));
        for (const auto& line : build.last_lines()) text += "  " + Sanitize(line) + "\n";
        if (!json_) ctx_.out << text;
        throw CliError(kExitRolloutFailed,
                       fmt::format("build {} of {} failed (details: muon builds show {}{})",
                                   cmd.build, cmd.service, cmd.build, EnvFlag(ep)));
      }
      if (build.status() == "succeeded") break;
      if (expired() || !pause(milliseconds(500))) return 0;
    }
    // The scheduler makes a release of the build's artifact; find it.
    bool said = false;
    while (true) {
      sched::ListReleasesRequest list_request;
      list_request.set_service(cmd.service);
      list_request.set_limit(20);
      const auto list =
          SchedulerCall<sched::ListReleasesResponse>(ep, "ListReleases", list_request);
      for (const auto& r : list.releases()) {  // newest first
        if (r.build_id() == cmd.build ||
            (!build.artifact_digest().empty() && r.artifact_digest() == build.artifact_digest())) {
          if (!json_) ctx_.out << fmt::format("release {} made of it\n", VersionLabel(r.version()));
          return r.version();
        }
      }
      if (!said && !json_) {
        ctx_.out << "waiting for the scheduler to make a release of it\n";
        said = true;
      }
      if (expired() || !pause(milliseconds(500))) return 0;
    }
  }

  int Do(const WaitCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    const auto start = std::chrono::steady_clock::now();
    milliseconds paused{0};  // with a test's sleep hook no real time passes: count it
    auto elapsed = [&] {
      auto real =
          std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - start);
      return ctx_.sleep ? real + paused : real;
    };
    const std::function<bool(milliseconds)> pause = [&](milliseconds d) {
      paused += d;
      return Pause(d);
    };
    const std::function<bool()> expired = [&] { return elapsed() >= cmd.timeout; };
    const std::string timeout_text =
        FormatSeconds(std::chrono::duration_cast<std::chrono::seconds>(cmd.timeout).count());

    int32_t version = cmd.release;
    if (!cmd.build.empty()) {
      version = WaitForBuildRelease(ep, cmd, expired, pause);
      if (version == 0) {
        throw CliError(kExitWaitTimeout,
                       fmt::format("build {} of {} has no release yet after {} (muon builds show "
                                   "{}{})",
                                   cmd.build, cmd.service, timeout_text, cmd.build, EnvFlag(ep)));
      }
    }
    std::string last_line;
    bool warned = false;
    while (true) {
      sched::StatusRequest request;
      request.set_service(cmd.service);
      std::optional<sched::StatusResponse> status;
      try {
        status = SchedulerCall<sched::StatusResponse>(ep, "Status", request);
        warned = false;
      } catch (const CliError& e) {
        // A poll the ingress cannot answer right now is retried until the timeout.
        if (e.exit_code() != kExitUnavailable) throw;
        if (!warned) ctx_.err << "warning: " << e.what() << "; still trying\n";
        warned = true;
      }
      if (status) {
        const auto& s = OneService(*status, cmd.service);
        const std::string line = WaitProgressLine(s);
        if (line != last_line && !json_) {
          ctx_.out << line << "\n";
          ctx_.out.flush();
        }
        last_line = line;
        switch (JudgeWait(s, version)) {
          case WaitVerdict::kConverged:
            if (json_) {
              ctx_.out << ToJson(s) << "\n";
            } else {
              ctx_.out << fmt::format("{} converged: {} live, {} healthy.\n", cmd.service,
                                      VersionLabel(s.live_version()),
                                      fmt::format("{}/{}", s.healthy(), s.desired_replicas()));
            }
            return kExitOk;
          case WaitVerdict::kFailed:
            WaitFailed(ep, s);
          case WaitVerdict::kWaiting:
            break;
        }
      }
      if (expired()) {
        throw CliError(
            kExitWaitTimeout,
            fmt::format("{} has not converged within {}{}; follow it with `muon events "
                        "{} -f{}`",
                        cmd.service, timeout_text, last_line.empty() ? "" : " (" + last_line + ")",
                        cmd.service, EnvFlag(ep)));
      }
      if (!pause(milliseconds(500))) {
        throw CliError(kExitWaitTimeout, fmt::format("{}: stopped waiting", cmd.service));
      }
    }
  }

  [[noreturn]] void WaitFailed(const Endpoint& ep, const sched::ServiceStatus& s) {
    // The failed release's last lines: ListReleases has them, Status does not.
    std::optional<sched::Release> release;
    try {
      sched::ListReleasesRequest request;
      request.set_service(s.name());
      request.set_limit(10);
      const auto list = SchedulerCall<sched::ListReleasesResponse>(ep, "ListReleases", request);
      for (const auto& r : list.releases()) {
        if (r.version() == s.rollout().version()) release = r;
      }
      // Unless a newer release failed before any rollout of it started (config_missing,
      // manifest_invalid, dependency_failed): then that one is what failed.
      for (const auto& r : list.releases()) {  // newest first
        if (r.status() == "failed" && r.preview().empty() && r.version() > s.rollout().version() &&
            r.version() > s.live_version()) {
          release = r;
          break;
        }
      }
    } catch (const CliError&) {
      // The status alone says enough.
    }
    if (json_) {
      ctx_.out << ToJson(s) << "\n";
    } else {
      ctx_.out << RenderWaitFailure(s, release ? &*release : nullptr);
    }
    throw CliError(kExitRolloutFailed,
                   fmt::format("the rollout of {} failed{} (more: muon describe {}{}, muon logs "
                               "{} --release {})",
                               s.name(), s.paused() ? "; auto-deploy is paused" : "", s.name(),
                               EnvFlag(ep), s.name(),
                               VersionLabel(release ? release->version() : s.rollout().version())));
  }

  int Do(const DriftCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    sched::DriftRequest request;
    request.set_service(cmd.service);
    std::string raw;
    const auto drift = SchedulerCall<sched::DriftResponse>(ep, "Drift", request, &raw);
    if (json_) {
      PrintJson(raw);
    } else {
      ctx_.out << RenderDrift(drift);
    }
    return kExitOk;
  }

  int Do(const LocksCmd&) {
    const Endpoint ep = CurrentEndpoint();
    std::string raw;
    const auto locks =
        SchedulerCall<sched::ListLocksResponse>(ep, "ListLocks", sched::ListLocksRequest{}, &raw);
    if (json_) {
      PrintJson(raw);
    } else {
      ctx_.out << RenderLocks(locks, Now());
    }
    return kExitOk;
  }

  int Do(const UnlockCmd& cmd) {
    sched::UnlockRequest request;
    request.set_service(cmd.service);
    request.set_force(true);
    return Mutate("Unlock", request);
  }

  int Do(const RollbackCmd& cmd) {
    sched::RollbackRequest request;
    request.set_service(cmd.service);
    request.set_to_version(cmd.to_version);
    return Mutate("Rollback", request);
  }

  int Do(const ScaleCmd& cmd) {
    sched::ScaleRequest request;
    request.set_service(cmd.service);
    request.set_replicas(cmd.replicas);
    return Mutate("Scale", request);
  }

  int Do(const EnvSetCmd& cmd) {
    sched::SetEnvRequest request;
    request.set_service(cmd.service);
    for (const auto& [key, value] : cmd.set) (*request.mutable_set())[key] = value;
    for (const auto& key : cmd.unset) request.add_unset(key);
    request.set_deploy(cmd.deploy);
    return Mutate("SetEnv", request);
  }

  int Do(const SecretsSetCmd& cmd) {
    constexpr size_t kMaxSecret = size_t{1} << 20;
    std::string text;
    if (cmd.from_stdin) {
      text.assign(std::istreambuf_iterator<char>(ctx_.in), std::istreambuf_iterator<char>());
    } else {
      std::error_code ec;
      if (std::filesystem::is_directory(cmd.file, ec)) {
        throw CliError(kExitUsage,
                       fmt::format("--from-file: '{}' is a directory", Sanitize(cmd.file)));
      }
      std::ifstream file(cmd.file, std::ios::binary);
      if (!file) {
        throw CliError(kExitUsage, fmt::format("--from-file: cannot read '{}': {}",
                                               Sanitize(cmd.file), std::strerror(errno)));
      }
      text.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    }
    if (text.size() > kMaxSecret) throw CliError(kExitUsage, "the secret is larger than 1 MiB");
    std::string value = SecretValueFromText(std::move(text));
    if (value.empty()) {
      throw CliError(kExitUsage, fmt::format("the value of {} is empty ({})", cmd.key,
                                             cmd.from_stdin ? "stdin" : Sanitize(cmd.file)));
    }
    sched::SetEnvRequest request;
    request.set_service(cmd.service);
    (*request.mutable_secrets())[cmd.key] = std::move(value);
    request.set_deploy(cmd.deploy);
    return Mutate("SetEnv", request);
  }

  int Do(const ExecCmd& cmd) {
    const Endpoint ep = CurrentEndpoint();
    const auto session = Session(ep, true);
    sched::ExecRequest request;
    request.set_service(cmd.service);
    request.set_instance(cmd.instance);
    for (const auto& word : cmd.command) request.add_command(word);
    request.set_timeout_ms(static_cast<int32_t>(cmd.timeout.count()));
    // The ingress gives a call 10 s unless asked for more: the command's time and some.
    const milliseconds run = cmd.timeout.count() > 0 ? cmd.timeout : milliseconds(30000);
    const milliseconds budget = run + milliseconds(5000);
    const HttpResponse response =
        Post(ep, "/v1/scheduler/Exec", ToJson(request), session->access_token(),
             {{"Muon-Timeout", fmt::format("{}ms", budget.count())}}, budget + ctx_.timeout_slack);
    Expect2xx(response, ep);
    const auto result = ParseReply<sched::ExecResponse>(response, "scheduler.Exec");
    if (json_) {
      PrintJson(response.body);
      return ExecExitCode(result);
    }
    ctx_.out << result.output();
    ctx_.out.flush();
    if (result.truncated()) ctx_.err << "warning: the output was cut at 1 MiB\n";
    if (result.signal() > 0) {
      ctx_.err << fmt::format("{} on {} was killed by signal {}\n", OrDash(result.instance()),
                              OrDash(result.node()), result.signal());
    }
    return ExecExitCode(result);
  }

  AppContext& ctx_;
  GlobalOptions global_;
  bool json_;
  std::optional<Store> store_;
};

void PrintError(std::ostream& err, const std::string& message) {
  err << "error: " << message << "\n";
}

}  // namespace

std::string FormatApiError(const HttpResponse& response) {
  common::v1::Error error;
  std::string parse_error;
  int code = response.status;
  std::string status;
  std::string detail;
  if (FromJson(response.body, &error, &parse_error) &&
      (error.code() != 0 || !error.detail().empty())) {
    if (error.code() != 0) code = error.code();
    status = error.status();
    detail = error.detail();
  } else {
    // Not the platform's shape (a proxy in front, a crash page): the first line of the body.
    std::string_view body = response.body;
    body = body.substr(0, body.find('\n'));
    if (body.size() > 200) body = body.substr(0, 200);
    const bool html = response.Header("Content-Type").find("html") != std::string::npos;
    if (!html) detail = std::string(body);
    status = response.reason;
  }
  if (status.empty()) status = std::string(StatusText(code));
  if (detail.empty()) detail = status.empty() || status == "Unknown" ? "request failed" : status;
  const std::string request_id = response.Header("Muon-Request-Id");
  return fmt::format("{} ({} {}{})", Sanitize(detail), code, Sanitize(status),
                     request_id.empty() ? "" : ", request " + Sanitize(request_id));
}

int RunCli(const std::vector<std::string>& args, AppContext& ctx) {
  Invocation invocation;
  try {
    invocation = ParseArgs(args);
  } catch (const UsageError& e) {
    PrintError(ctx.err, e.what());
    ctx.err << e.usage() << "\n";
    return kExitUsage;
  }
  try {
    App app(ctx, invocation.global);
    const int code = app.Run(invocation.command);
    ctx.out.flush();
    return code;
  } catch (const CliError& e) {
    PrintError(ctx.err, e.what());
    return e.exit_code();
  } catch (const std::exception& e) {
    PrintError(ctx.err, e.what());
    return kExitError;
  }
}

}  // namespace muon::cli
