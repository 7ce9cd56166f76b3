#include "planner.h"

#include <fmt/format.h>

#include <algorithm>

namespace muon::scheduler {

namespace {

bool Running(const InstanceView& i) {
  return i.desired == "running" && i.state != "lost";
}

bool Available(const InstanceView& i, TimePoint now, const PlannerSettings& s) {
  return i.state == "healthy" && i.healthy_at && now - *i.healthy_at >= s.min_ready;
}

// Which instance to stop first among `candidates`: one that does not serve (not healthy), then
// the newest (the oldest have proven themselves).
const InstanceView* StopCandidate(const std::vector<const InstanceView*>& candidates) {
  const InstanceView* best = nullptr;
  for (const InstanceView* i : candidates) {
    if (!best) {
      best = i;
      continue;
    }
    const bool i_healthy = i->state == "healthy";
    const bool best_healthy = best->state == "healthy";
    if (i_healthy != best_healthy) {
      if (!i_healthy) best = i;
    } else if (i->created_at > best->created_at ||
               (i->created_at == best->created_at && i->id > best->id)) {
      best = i;
    }
  }
  return best;
}

void Remove(std::vector<const InstanceView*>& from, const InstanceView* which) {
  from.erase(std::remove(from.begin(), from.end(), which), from.end());
}

}  // namespace

bool IsFailureCategory(const std::string& category) {
  return category == "start_failed" || category == "health_timeout" || category == "crash_loop";
}

std::optional<std::string> PickNode(std::vector<NodeView>& nodes,
                                    std::map<std::string, int>& line_counts) {
  NodeView* best = nullptr;
  for (NodeView& n : nodes) {
    if (!n.alive) continue;
    if (!best) {
      best = &n;
      continue;
    }
    const int a = line_counts[n.id];
    const int b = line_counts[best->id];
    if (a != b                           ? a < b
        : n.instances != best->instances ? n.instances < best->instances
                                         : n.id < best->id) {
      best = &n;
    }
  }
  if (!best) return std::nullopt;
  ++best->instances;
  ++line_counts[best->id];
  return best->id;
}

Plan PlanLine(const LineView& line, std::vector<NodeView>& nodes, TimePoint now,
              const PlannerSettings& settings) {
  Plan plan;
  std::map<std::string, bool> alive;
  for (const NodeView& n : nodes) alive[n.id] = n.alive;

  // Instances whose node went away are lost: replaced below like any missing instance.
  std::vector<const InstanceView*> running;
  std::map<std::string, int> line_counts;
  for (const InstanceView& i : line.instances) {
    if (!Running(i)) continue;
    if (!alive[i.node]) {
      plan.stops.push_back(
          {.id = i.id, .reason = fmt::format("its node {} went away", i.node), .lost = true});
      continue;
    }
    running.push_back(&i);
    ++line_counts[i.node];
  }

  auto start = [&](int version) {
    if (auto node = PickNode(nodes, line_counts)) {
      plan.starts.push_back({.version = version, .node = *node});
      return true;
    }
    plan.notes.push_back("no live node to place an instance on");
    return false;
  };

  if (line.target_version != 0) {
    const int target = line.target_version;
    std::vector<const InstanceView*> fresh, old;
    for (const InstanceView* i : running) (i->version == target ? fresh : old).push_back(i);

    for (const InstanceView* i : fresh) {
      if (!IsFailureCategory(i->category)) continue;
      plan.rollout = RolloutOutcome{.succeeded = false,
                                    .category = i->category,
                                    .detail = i->detail,
                                    .last_lines = i->last_lines,
                                    .instance = i->id};
      for (const InstanceView* f : fresh) {
        plan.stops.push_back(
            {.id = f->id, .reason = fmt::format("the rollout of v{} failed", target)});
      }
      return plan;
    }

    int available = 0;
    bool on_its_way = false;
    for (const InstanceView* i : fresh) {
      if (Available(*i, now, settings)) {
        ++available;
      } else {
        on_its_way = true;
      }
    }
    // Scaled down during the rollout: drop the surplus of the new release first.
    while (static_cast<int>(fresh.size()) > line.replicas && !fresh.empty()) {
      const InstanceView* extra = StopCandidate(fresh);
      if (Available(*extra, now, settings)) --available;
      plan.stops.push_back({.id = extra->id, .reason = fmt::format("scaled to {}", line.replicas)});
      Remove(fresh, extra);
    }
    if (old.empty()) {
      // Nothing to protect (a first rollout, or everything old is gone): start them all.
      for (int n = static_cast<int>(fresh.size()); n < line.replicas; ++n) {
        if (!start(target)) break;
      }
    } else if (static_cast<int>(fresh.size()) < line.replicas && !on_its_way) {
      start(target);
    }

    int old_running = static_cast<int>(old.size());
    while (old_running > 0 && available + old_running > line.replicas) {
      const InstanceView* victim = StopCandidate(old);
      plan.stops.push_back({.id = victim->id,
                            .reason = fmt::format("replaced by v{} ({}/{} available)", target,
                                                  available, line.replicas)});
      Remove(old, victim);
      --old_running;
    }
    if (available >= line.replicas && old_running == 0) {
      plan.rollout = RolloutOutcome{.succeeded = true};
    }
    return plan;
  }

  // Steady state: the live release at the desired count, nothing else.
  std::vector<const InstanceView*> live;
  for (const InstanceView* i : running) {
    if (line.live_version != 0 && i->version == line.live_version) {
      live.push_back(i);
    } else {
      plan.stops.push_back(
          {.id = i->id,
           .reason = line.live_version == 0
                         ? std::string("no release of this service is live")
                         : fmt::format("not the live release (v{})", line.live_version)});
    }
  }
  if (line.live_version == 0) return plan;
  int count = static_cast<int>(live.size());
  while (count > line.replicas) {
    const InstanceView* extra = StopCandidate(live);
    plan.stops.push_back(
        {.id = extra->id, .reason = fmt::format("{} running, {} wanted", count, line.replicas)});
    Remove(live, extra);
    --count;
  }
  for (; count < line.replicas; ++count) {
    if (!start(line.live_version)) break;
  }
  return plan;
}

}  // namespace muon::scheduler
