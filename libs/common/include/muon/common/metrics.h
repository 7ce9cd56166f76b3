#pragma once
// Counters and latency histograms with Prometheus text exposition (format 0.0.4). Recording is
// lock-free on the hot path once a labelled series exists; Render() walks everything.
//   auto& requests = registry.Counter("muon_rpc_requests_total", "RPC requests handled",
//                                     {"endpoint", "code"});
//   requests.With({"Echo", "200"}).Inc();
//   auto& latency = registry.Histogram("muon_rpc_duration_seconds", "RPC latency", {"endpoint"});
//   latency.With({"Echo"}).Observe(0.00042);

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace muon::metrics {

class CounterCell {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

class GaugeCell {
 public:
  void Set(int64_t v) { value_.store(v, std::memory_order_relaxed); }
  void Add(int64_t d) { value_.fetch_add(d, std::memory_order_relaxed); }
  int64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> value_{0};
};

class HistogramCell {
 public:
  explicit HistogramCell(const std::vector<double>* bounds);
  void Observe(double value);
  // Cumulative counts per bound (as exposed in _bucket{le=..}), then +Inf == Count().
  std::vector<uint64_t> CumulativeCounts() const;
  uint64_t Count() const;
  double Sum() const;

 private:
  const std::vector<double>* bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_->size() + 1 (the +Inf bucket)
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Default latency buckets in seconds: 50µs … 10s.
const std::vector<double>& DefaultLatencyBuckets();

template <typename Cell>
class Family {
 public:
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bounds = {});
  // Returns the series for these label values (created on first use); the reference stays valid
  // for the family's lifetime. Throws std::invalid_argument on a wrong number of values.
  Cell& With(const std::vector<std::string>& label_values);
  void RenderTo(std::string& out, const char* type) const;
  const std::string& name() const { return name_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  const std::vector<double>& bounds() const { return bounds_; }

 private:
  std::string name_;
  std::string help_;
  std::vector<std::string> label_names_;
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Cell>> cells_;
};

using CounterFamily = Family<CounterCell>;
using GaugeFamily = Family<GaugeCell>;
using HistogramFamily = Family<HistogramCell>;

class Registry {
 public:
  // Registering the same name twice returns the existing family (labels must match, else throws).
  CounterFamily& Counter(const std::string& name, const std::string& help,
                         std::vector<std::string> label_names = {});
  GaugeFamily& Gauge(const std::string& name, const std::string& help,
                     std::vector<std::string> label_names = {});
  HistogramFamily& Histogram(const std::string& name, const std::string& help,
                             std::vector<std::string> label_names = {},
                             std::vector<double> bounds = DefaultLatencyBuckets());

  // Prometheus text exposition, families sorted by name, series by label values; label values
  // escaped (backslash, quote, newline), HELP escaped (backslash, newline).
  std::string Render() const;

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::unique_ptr<CounterFamily>> counters_;
  std::map<std::string, std::unique_ptr<GaugeFamily>> gauges_;
  std::map<std::string, std::unique_ptr<HistogramFamily>> histograms_;
};

}  // namespace muon::metrics
