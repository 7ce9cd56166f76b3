#include "muon/common/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <iterator>
#include <set>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <utility>

namespace muon::metrics {
namespace {

bool IsAlpha(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
bool IsDigit(char c) {
  return c >= '0' && c <= '9';
}

void ValidateMetricName(const std::string& name) {
  bool ok = !name.empty() && !IsDigit(name.front());
  for (char c : name) ok = ok && (IsAlpha(c) || IsDigit(c) || c == '_' || c == ':');
  if (!ok) throw std::invalid_argument(fmt::format("metrics: invalid metric name \"{}\"", name));
}

void ValidateLabelNames(const std::string& metric, const std::vector<std::string>& names,
                        bool histogram) {
  std::set<std::string_view> seen;
  for (const std::string& name : names) {
    bool ok = !name.empty() && !IsDigit(name.front());
    for (char c : name) ok = ok && (IsAlpha(c) || IsDigit(c) || c == '_');
    if (!ok) {
      throw std::invalid_argument(
          fmt::format("metrics: {}: invalid label name \"{}\"", metric, name));
    }
    if (name.starts_with("__")) {
      throw std::invalid_argument(
          fmt::format("metrics: {}: label names starting with __ are reserved", metric));
    }
    // "le" carries the bucket bound of a histogram series.
    if (histogram && name == "le") {
      throw std::invalid_argument(
          fmt::format("metrics: {}: \"le\" is reserved in histograms", metric));
    }
    if (!seen.insert(name).second) {
      throw std::invalid_argument(fmt::format("metrics: {}: duplicate label \"{}\"", metric, name));
    }
  }
}

void ValidateBounds(const std::string& metric, const std::vector<double>& bounds) {
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      // The +Inf bucket is always added; an explicit one would be exposed twice.
      throw std::invalid_argument(fmt::format("metrics: {}: bucket bounds must be finite", metric));
    }
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      throw std::invalid_argument(
          fmt::format("metrics: {}: bucket bounds must be strictly increasing", metric));
    }
  }
}

// Shortest representation that parses back to the same double, as Prometheus clients do.
std::string FormatDouble(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

void AppendEscaped(std::string& out, std::string_view s, bool escape_quote) {
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// Appends `{a="x",b="y"}` (plus le="..." for bucket lines), or nothing when there are no labels.
void AppendLabels(std::string& out, const std::vector<std::string>& names,
                  const std::vector<std::string>& values, const std::string* le = nullptr) {
  if (names.empty() && le == nullptr) return;
  out += '{';
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i];
    out += "=\"";
    AppendEscaped(out, values[i], true);
    out += '"';
  }
  if (le != nullptr) {
    if (!names.empty()) out += ',';
    out += "le=\"";
    out += *le;
    out += '"';
  }
  out += '}';
}

}  // namespace

// --- HistogramCell --------------------------------------------------------------------------

HistogramCell::HistogramCell(const std::vector<double>* bounds)
    : bounds_(bounds), buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds->size() + 1)) {}

void HistogramCell::Observe(double value) {
  // First bucket whose bound is >= value (bounds are inclusive upper limits). Written as a
  // negated >= so that NaN lands in the +Inf bucket, as in the reference Go client.
  const auto it = std::partition_point(bounds_->begin(), bounds_->end(),
                                       [value](double bound) { return !(bound >= value); });
  const auto index = static_cast<size_t>(std::distance(bounds_->begin(), it));
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::vector<uint64_t> HistogramCell::CumulativeCounts() const {
  std::vector<uint64_t> counts(bounds_->size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    counts[i] = running;
  }
  return counts;
}

uint64_t HistogramCell::Count() const {
  return count_.load(std::memory_order_relaxed);
}

double HistogramCell::Sum() const {
  return sum_.load(std::memory_order_relaxed);
}

const std::vector<double>& DefaultLatencyBuckets() {
  static const std::vector<double> buckets = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                              0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                              0.5,     1,      2.5,     5,      10};
  return buckets;
}

// --- Family ---------------------------------------------------------------------------------

template <typename Cell>
Family<Cell>::Family(std::string name, std::string help, std::vector<std::string> label_names,
                     std::vector<double> bounds)
    : name_(std::move(name)),
      help_(std::move(help)),
      label_names_(std::move(label_names)),
      bounds_(std::move(bounds)) {
  constexpr bool kHistogram = std::is_same_v<Cell, HistogramCell>;
  ValidateMetricName(name_);
  ValidateLabelNames(name_, label_names_, kHistogram);
  if constexpr (kHistogram) {
    ValidateBounds(name_, bounds_);
  } else if (!bounds_.empty()) {
    throw std::invalid_argument(fmt::format("metrics: {}: only histograms have buckets", name_));
  }
  // A family without labels has exactly one series; exposing it from the start (at zero) lets
  // rate() and absent() work before the first event, as the reference clients do.
  if (label_names_.empty()) With({});
}

template <typename Cell>
Cell& Family<Cell>::With(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size()) {
    throw std::invalid_argument(fmt::format("metrics: {}: expected {} label values, got {}", name_,
                                            label_names_.size(), label_values.size()));
  }
  std::lock_guard lock(mu_);
  auto it = cells_.find(label_values);
  if (it == cells_.end()) {
    std::unique_ptr<Cell> cell;
    if constexpr (std::is_same_v<Cell, HistogramCell>) {
      cell = std::make_unique<Cell>(&bounds_);
    } else {
      cell = std::make_unique<Cell>();
    }
    it = cells_.emplace(label_values, std::move(cell)).first;
  }
  return *it->second;
}

template <typename Cell>
void Family<Cell>::RenderTo(std::string& out, const char* type) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  AppendEscaped(out, help_, false);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type;
  out += '\n';

  std::lock_guard lock(mu_);
  for (const auto& [values, cell] : cells_) {
    if constexpr (std::is_same_v<Cell, HistogramCell>) {
      const std::vector<uint64_t> counts = cell->CumulativeCounts();
      for (size_t i = 0; i < counts.size(); ++i) {
        const std::string le = i < bounds_.size() ? FormatDouble(bounds_[i]) : "+Inf";
        out += name_;
        out += "_bucket";
        AppendLabels(out, label_names_, values, &le);
        fmt::format_to(std::back_inserter(out), " {}\n", counts[i]);
      }
      out += name_;
      out += "_sum";
      AppendLabels(out, label_names_, values);
      out += ' ';
      out += FormatDouble(cell->Sum());
      out += '\n';
      // Taken from the buckets rather than Count() so that _count always equals the +Inf bucket
      // even while other threads are observing.
      out += name_;
      out += "_count";
      AppendLabels(out, label_names_, values);
      fmt::format_to(std::back_inserter(out), " {}\n", counts.back());
    } else {
      out += name_;
      AppendLabels(out, label_names_, values);
      fmt::format_to(std::back_inserter(out), " {}\n", cell->Value());
    }
  }
}

template class Family<CounterCell>;
template class Family<GaugeCell>;
template class Family<HistogramCell>;

// --- Registry -------------------------------------------------------------------------------

namespace {

template <typename F>
F* FindMatching(std::map<std::string, std::unique_ptr<F>>& families, const std::string& name,
                const std::vector<std::string>& label_names) {
  auto it = families.find(name);
  if (it == families.end()) return nullptr;
  if (it->second->label_names() != label_names) {
    throw std::invalid_argument(
        fmt::format("metrics: {} registered again with different label names", name));
  }
  return it->second.get();
}

template <typename A, typename B>
void CheckNotTaken(const std::string& name, const char* wanted, const A& a, const char* a_type,
                   const B& b, const char* b_type) {
  const char* taken = a.count(name) ? a_type : b.count(name) ? b_type : nullptr;
  if (taken != nullptr) {
    throw std::invalid_argument(
        fmt::format("metrics: {} is already registered as a {}, not a {}", name, taken, wanted));
  }
}

}  // namespace

CounterFamily& Registry::Counter(const std::string& name, const std::string& help,
                                 std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  if (auto* f = FindMatching(counters_, name, label_names)) return *f;
  CheckNotTaken(name, "counter", gauges_, "gauge", histograms_, "histogram");
  auto family = std::make_unique<CounterFamily>(name, help, std::move(label_names));
  return *counters_.emplace(name, std::move(family)).first->second;
}

GaugeFamily& Registry::Gauge(const std::string& name, const std::string& help,
                             std::vector<std::string> label_names) {
  std::lock_guard lock(mu_);
  if (auto* f = FindMatching(gauges_, name, label_names)) return *f;
  CheckNotTaken(name, "gauge", counters_, "counter", histograms_, "histogram");
  auto family = std::make_unique<GaugeFamily>(name, help, std::move(label_names));
  return *gauges_.emplace(name, std::move(family)).first->second;
}

HistogramFamily& Registry::Histogram(const std::string& name, const std::string& help,
                                     std::vector<std::string> label_names,
                                     std::vector<double> bounds) {
  std::lock_guard lock(mu_);
  if (auto* f = FindMatching(histograms_, name, label_names)) {
    // Silently handing back different buckets would make the caller's data mean something else.
    if (f->bounds() != bounds) {
      throw std::invalid_argument(
          fmt::format("metrics: {} registered again with different buckets", name));
    }
    return *f;
  }
  CheckNotTaken(name, "histogram", counters_, "counter", gauges_, "gauge");
  auto family =
      std::make_unique<HistogramFamily>(name, help, std::move(label_names), std::move(bounds));
  return *histograms_.emplace(name, std::move(family)).first->second;
}

std::string Registry::Render() const {
  std::lock_guard lock(mu_);
  // Names are unique across the three kinds, so one map orders them all.
  std::map<std::string_view, std::function<void(std::string&)>> ordered;
  for (const auto& [name, f] : counters_) {
    ordered.emplace(name, [&f = *f](std::string& out) { f.RenderTo(out, "counter"); });
  }
  for (const auto& [name, f] : gauges_) {
    ordered.emplace(name, [&f = *f](std::string& out) { f.RenderTo(out, "gauge"); });
  }
  for (const auto& [name, f] : histograms_) {
    ordered.emplace(name, [&f = *f](std::string& out) { f.RenderTo(out, "histogram"); });
  }
  std::string out;
  for (const auto& [name, render] : ordered) render(out);
  return out;
}

}  // namespace muon::metrics
