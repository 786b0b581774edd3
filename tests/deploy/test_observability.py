"""Prometheus finds every Trinity pod's /metrics, and the Grafana dashboard plots
only metrics the code really exports."""

from __future__ import annotations

import json
import re

from deploy_support import ROOT, Manifests
from prometheus_client import REGISTRY

import trinity_platform.metrics  # noqa: F401  (registers every Trinity metric)
from trinity_platform.config import DEFAULT_PORTS
from trinity_platform.metrics import parse_listen

DASHBOARD = ROOT / "deploy" / "grafana" / "trinity.json"
WORKLOADS = [f"trinity-{s}" for s in DEFAULT_PORTS] + ["trinity-executor"]


def exported_names() -> set[str]:
    names = set()
    for collector in list(REGISTRY._collector_to_names):
        for family in collector.describe() if hasattr(collector, "describe") else []:
            names.update(sample_names(family.name, family.type))
    return {n for n in names if n.startswith("trinity_")}


def sample_names(name: str, kind: str) -> list[str]:
    if kind == "counter":
        return [f"{name}_total", name]
    if kind == "histogram":
        return [f"{name}_bucket", f"{name}_count", f"{name}_sum"]
    return [name]


def test_every_workload_is_scraped_where_it_serves_metrics(rendered: tuple[str, Manifests]) -> None:
    _, manifests = rendered
    for name in WORKLOADS:
        pod = manifests.get("Deployment", name)["spec"]["template"]
        annotations = pod["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true", name
        (container,) = pod["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == int(annotations["prometheus.io/port"]), name
        listen = [e["value"] for e in container["env"] if e["name"].endswith("_METRICS_LISTEN")]
        assert len(listen) == 1, name
        assert parse_listen(listen[0]) == ("0.0.0.0", ports["metrics"]), name


def test_the_dashboard_plots_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\btrinity_[a-z_]+", e)}
    exported = exported_names()
    assert len(exported) > 20, exported
    assert used, "the dashboard plots nothing"
    assert used <= exported, used - exported
    # The key figures are there.
    for figure in (
        "trinity_steps_completed_total",
        "trinity_step_duration_seconds_bucket",
        "trinity_grpc_server_handled_total",
        "trinity_outbox_backlog",
        "trinity_consumer_lag_seconds_bucket",
        "trinity_dispatch_backlog",
        "trinity_work_queue_wait_seconds_bucket",
        "trinity_approvals_pending",
    ):
        assert figure in used, figure
