"""Prometheus metrics of one controller (its own registry, so several can live in a process).

Names and values are in base units (seconds, ratios), as Prometheus conventions ask;
the controller's own ms figures are divided by 1000 here."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pacao.controller.lifecycle import PlanState


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.probe_rtt = Gauge(
            "pacao_probe_rtt_seconds",
            "Mean RTT of the last S' window, user<->xTR (seconds: Prometheus base unit)",
            ["user", "rloc"],
            registry=r,
        )
        self.probe_availability = Gauge(
            "pacao_probe_availability",
            "Answered / sent probes in the last window",
            ["user", "rloc"],
            registry=r,
        )
        self.sla_violations = Counter(
            "pacao_sla_violations",
            "Windows in which a user's SLA was violated",
            ["user"],
            registry=r,
        )
        self.sla_met = Gauge(
            "pacao_sla_met", "1 when the user's SLA is met now", ["user"], registry=r
        )
        self.plans = Gauge("pacao_plans", "Stored plans by state", ["state"], registry=r)
        self.migration_seconds = Histogram(
            "pacao_migration_duration_seconds",
            "Wall time of VM migrations",
            buckets=(1, 5, 10, 30, 60, 120, 300, 600, 1800),
            registry=r,
        )
        self.decision_seconds = Histogram(
            "pacao_decision_latency_seconds",
            "Time of one decision cycle (Step 1 or Step 2)",
            ["step"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5),
            registry=r,
        )
        self.samples = Counter("pacao_probe_samples", "Probe samples ingested", ["xtr"], registry=r)
        self.pruned = Counter(
            "pacao_storage_pruned_rows",
            "Rows deleted by the retention of storage.retention / storage.history",
            ["table"],
            registry=r,
        )
        self.history_rows = Counter(
            "pacao_storage_history_rows", "Down-sampled history rows written", registry=r
        )
        # Replicas (ha.enabled): who leads and since when; 0 on a single controller.
        self.leader = Gauge(
            "pacao_leader", "1 while this replica holds the leader lease", registry=r
        )
        self.leader_epoch = Gauge(
            "pacao_leader_epoch", "Epoch of the lease as this replica last saw it", registry=r
        )
        self.leader_since = Gauge(
            "pacao_leader_since_seconds",
            "Unix time (database clock) at which the current leader took the lease",
            registry=r,
        )
        self.leader_terms = Counter(
            "pacao_leader_terms", "Leader terms this replica started", registry=r
        )
        for s in PlanState:
            self.plans.labels(state=s.value).set(0)

    def set_plans(self, counts: dict[str, int]) -> None:
        for s, n in counts.items():
            self.plans.labels(state=s).set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
