#include "node_store.h"

#include <fmt/format.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

namespace muon::scheduler {
namespace {

int64_t Micros(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}

// The sealed secrets of a release: a JSON object of strings. Values that are not strings are
// taken as their JSON text. False when it does not open or parse.
bool OpenSecrets(const SecretBox& box, const std::string& sealed,
                 std::map<std::string, std::string>& out, std::string& error) {
  const auto opened = box.Open(sealed);
  if (!opened) {
    error = "the release's secrets do not open with this node's key";
    return false;
  }
  google::protobuf::Struct object;
  if (!google::protobuf::util::JsonStringToMessage(*opened, &object).ok()) {
    error = "the release's secrets are not a JSON object";
    return false;
  }
  for (const auto& [key, value] : object.fields()) {
    if (value.kind_case() == google::protobuf::Value::kStringValue) {
      out[key] = value.string_value();
    } else {
      std::string json;
      (void)google::protobuf::util::MessageToJsonString(value, &json);
      out[key] = json;
    }
  }
  return true;
}

}  // namespace

void PgNodeStore::Heartbeat(const std::string& node, const std::string& region,
                            const std::string& host) {
  pool_.Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(
        "INSERT INTO scheduler.nodes (id, region, host) VALUES ($1, $2, $3) "
        "ON CONFLICT (id) DO UPDATE SET region = EXCLUDED.region, host = EXCLUDED.host, "
        "last_seen = now()",
        node, region, host);
    tx.commit();
  });
}

const builder::ManifestResult& PgNodeStore::ParsedManifest(const std::string& service, int version,
                                                           const pqxx::field& text) {
  // Releases are immutable: a manifest is parsed once, not at every poll of every row.
  std::lock_guard lock(manifests_mu_);
  auto key = std::make_pair(service, version);
  auto it = manifests_.find(key);
  if (it == manifests_.end()) {
    if (manifests_.size() > 10000) manifests_.clear();
    it = manifests_.emplace(std::move(key), builder::ParseManifest(text.as<std::string>())).first;
  }
  return it->second;
}

std::vector<Assignment> PgNodeStore::Assigned(const std::string& node) {
  auto rows = pool_.Run([&](pqxx::connection& c) {
    pqxx::read_transaction tx(c);
    return tx.exec_params(
        "SELECT i.id, i.service, i.version, i.preview, i.desired, i.state, i.pid, i.restarts, "
        "  r.version IS NOT NULL, coalesce(r.artifact_digest, ''), coalesce(r.manifest, ''), "
        "  CASE WHEN jsonb_typeof(r.env) = 'object' "
        "    THEN ARRAY(SELECT key FROM jsonb_each_text(r.env) ORDER BY key) "
        "    ELSE '{}'::text[] END, "
        "  CASE WHEN jsonb_typeof(r.env) = 'object' "
        "    THEN ARRAY(SELECT coalesce(value, '') FROM jsonb_each_text(r.env) ORDER BY key) "
        "    ELSE '{}'::text[] END, "
        "  r.secrets "
        "FROM scheduler.instances i "
        "LEFT JOIN scheduler.releases r ON r.service = i.service AND r.version = i.version "
        "WHERE i.node = $1 AND (i.desired = 'running' OR i.state <> 'stopped') "
        "ORDER BY i.id",
        node);
  });
  std::vector<Assignment> out;
  out.reserve(rows.size());
  for (const auto& row : rows) {
    Assignment a;
    a.id = row[0].as<std::string>();
    a.service = row[1].as<std::string>();
    a.version = row[2].as<int>();
    a.preview = row[3].as<std::string>();
    a.desired = row[4].as<std::string>();
    a.state = row[5].as<std::string>();
    a.pid = row[6].as<int>();
    a.restarts = row[7].as<int>();
    if (!row[8].as<bool>()) {
      a.problem = fmt::format("release v{} of {} does not exist", a.version, a.service);
      out.push_back(std::move(a));
      continue;
    }
    a.artifact_digest = row[9].as<std::string>();
    const builder::ManifestResult& parsed = ParsedManifest(a.service, a.version, row[10]);
    if (!parsed.manifest) {
      a.problem = "the release's manifest is invalid: " +
                  builder::FormatManifestErrors(parsed.errors, "muon.yaml");
      while (!a.problem.empty() && a.problem.back() == '\n') a.problem.pop_back();
      out.push_back(std::move(a));
      continue;
    }
    a.manifest = *parsed.manifest;
    a.env = a.manifest.run_env;
    const auto keys = db::ParseTextArray(row[11]);
    const auto values = db::ParseTextArray(row[12]);
    for (size_t i = 0; i < keys.size() && i < values.size(); ++i) a.env[keys[i]] = values[i];
    if (!row[13].is_null()) {
      const pqxx::binarystring sealed(row[13]);
      std::map<std::string, std::string> secrets;
      if (!OpenSecrets(box_, sealed.str(), secrets, a.problem)) {
        out.push_back(std::move(a));
        continue;
      }
      for (auto& [k, v] : secrets) {
        if (!v.empty()) a.secret_values.push_back(v);
        a.env[k] = std::move(v);
      }
    }
    out.push_back(std::move(a));
  }
  return out;
}

void PgNodeStore::Report(const InstanceReport& r) {
  pool_.Run([&](pqxx::connection& c) {
    pqxx::work tx(c);
    tx.exec_params(
        "UPDATE scheduler.instances SET state = $2, "
        "  pid = CASE WHEN $3 THEN $4 ELSE pid END, "
        "  restarts = CASE WHEN $5 THEN $6 ELSE restarts END, "
        "  started_at = CASE WHEN $7 THEN to_timestamp($8 / 1000000.0) ELSE started_at END, "
        "  healthy_at = CASE WHEN $9 THEN to_timestamp($10 / 1000000.0) ELSE healthy_at END, "
        "  category = CASE WHEN $11 THEN $12 ELSE category END, "
        "  detail = CASE WHEN $13 THEN $14 ELSE detail END, "
        "  last_lines = CASE WHEN $15 THEN $16::text[] ELSE last_lines END, "
        "  updated_at = now() "
        "WHERE id = $1",
        r.id, r.state, r.pid.has_value(), r.pid.value_or(0), r.restarts.has_value(),
        r.restarts.value_or(0), r.started_at.has_value(), r.started_at ? Micros(*r.started_at) : 0,
        r.healthy_at.has_value(), r.healthy_at ? Micros(*r.healthy_at) : 0, r.category.has_value(),
        r.category.value_or(""), r.detail.has_value(), r.detail.value_or(""),
        r.last_lines.has_value(),
        db::TextArrayLiteral(r.last_lines.value_or(std::vector<std::string>{})));
    tx.commit();
  });
}

}  // namespace muon::scheduler
