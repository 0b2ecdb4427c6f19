"""Prometheus metrics, on a registry per process (tests make several)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

# Fire lag buckets: the target is p99 <= 100 ms, so resolve well below that.
_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0)


class _PhaseCollector(Collector):
    """``sympozium_schedules{phase}`` computed at scrape time from the cache."""

    def __init__(self, phases: Callable[[], Iterable[str]]):
        self._phases = phases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "sympozium_schedules", "SympoziumSchedules by status phase", labels=["phase"])
        counts = Tally(self._phases())
        for phase in ("Active", "Suspended", "Error", "Unknown"):
            family.add_metric([phase], counts.get(phase, 0))
        yield family


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.fires = Counter("sympozium_schedule_fires", "AgentRuns created by schedules",
                             ["trigger"], registry=r)
        self.skips = Counter("sympozium_schedule_skips", "Ticks skipped, by reason",
                             ["reason"], registry=r)
        self.errors = Counter("sympozium_schedule_errors",
                              "Failed operations, by kind (store errors, invalid schedules)",
                              ["kind"], registry=r)
        self.fire_lag = Histogram("sympozium_schedule_fire_lag_seconds",
                                  "AgentRun creation time minus the scheduled tick",
                                  buckets=_LAG_BUCKETS, registry=r)
        self.store_writes = Counter("sympozium_schedule_store_writes",
                                    "Writes the controller made, by operation", ["op"], registry=r)
        self.events_dropped = Counter("sympozium_schedule_events_dropped",
                                      "Kubernetes Events not written (rate limit or error)",
                                      registry=r)
        # Children resolved once: labels() is a dict lookup under a lock, per fire.
        self.scheduled_fires = self.fires.labels("schedule")
        self.creates = self.store_writes.labels("create")
        self.deletes = self.store_writes.labels("delete")
        self.status_writes = self.store_writes.labels("status")
        self.router_requests = Counter("sympozium_schedule_router_requests",
                                       "Self-scheduling requests, by action and outcome",
                                       ["action", "outcome"], registry=r)
        self.agent_runs = Counter("sympozium_agent_runs",
                                  "AgentRuns the local runner finished, by phase (Succeeded, Failed)",
                                  ["phase"], registry=r)
        self.router_latency = Histogram("sympozium_schedule_router_seconds",
                                        "Time from request receipt to result published",
                                        buckets=_LAG_BUCKETS, registry=r)

    def watch_phases(self, phases: Callable[[], Iterable[str]]) -> None:
        self.registry.register(_PhaseCollector(phases))
