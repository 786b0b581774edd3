"""Fact lag: commit of an outbox row → JetStream's ack, read from the services' own metric.

Every relay observes ``trinity_outbox_publish_lag_seconds`` when JetStream's ack of a row
arrives: from the instant its unit of work committed it (told to the relay at the commit;
a row's ``created_at`` is taken at its insert, which in a grouped transaction can come
well before the commit), or from ``created_at`` for a row whose commit this process did
not see (another process's, or one of before a restart). The
suite serves ``/metrics`` per service; a window scrapes the histogram of every service
before and after and takes the difference, so the figure covers exactly the facts
published during the window. Percentiles interpolate inside a bucket, like Prometheus'
``histogram_quantile``; the buckets are fine around the 20 ms target, and
``within_20ms_pct`` is exact (20 ms is a bucket bound).
"""

from __future__ import annotations

import asyncio
import math
import urllib.request
from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

LAG_METRIC = "trinity_outbox_publish_lag_seconds"
TARGET_S = 0.020

# upper bound (seconds; inf for +Inf) -> cumulative count
Buckets = dict[float, float]


def parse_lag(text: str) -> Buckets:
    """The cumulative buckets of the lag histogram in a ``/metrics`` page (empty if absent)."""
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != LAG_METRIC:
            continue
        for sample in family.samples:
            if sample.name == f"{LAG_METRIC}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def _fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def scrape_lag(ports: Mapping[str, int]) -> Buckets:
    """The lag histogram summed over the processes serving ``/metrics`` on ``ports``."""
    pages = await asyncio.gather(
        *(asyncio.to_thread(_fetch, port) for port in ports.values()), return_exceptions=True
    )
    total: Buckets = {}
    for page in pages:
        if isinstance(page, BaseException):
            continue  # a process without the endpoint (or gone): its facts are not counted
        for bound, count in parse_lag(page).items():
            total[bound] = total.get(bound, 0.0) + count
    return total


def difference(after: Buckets, before: Buckets) -> Buckets:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def quantile(buckets: Buckets, q: float) -> float:
    """The ``q`` quantile (0-1) in seconds, linear inside the bucket; NaN when empty."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, buckets[bounds[-1]] if bounds else 0.0)
    if total <= 0:
        return math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bound: the bound is all we know
            inside = count - lower_count
            share = (rank - lower_count) / inside if inside else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, count
    return lower_bound


def lag_values(buckets: Buckets) -> dict[str, float]:
    """``fact_lag_p50_ms``, ``fact_lag_p99_ms``, ``fact_lag_within_20ms_pct``."""
    total = buckets.get(math.inf, 0.0)
    within = buckets.get(TARGET_S, math.nan)
    return {
        "fact_lag_p50_ms": quantile(buckets, 0.50) * 1000,
        "fact_lag_p99_ms": quantile(buckets, 0.99) * 1000,
        "fact_lag_within_20ms_pct": within / total * 100 if total else math.nan,
    }
