"""AdmissionLimit: the count from the store, what this replica admitted since, the bound."""

from __future__ import annotations

import pytest

from trinity_platform.admission import AdmissionLimit
from trinity_platform.errors import ResourceExhausted


class Store:
    def __init__(self, in_progress: int) -> None:
        self.in_progress = in_progress
        self.counts = 0

    async def count(self) -> int:
        self.counts += 1
        return self.in_progress


async def test_a_burst_cannot_overshoot_between_two_counts() -> None:
    store = Store(in_progress=1)
    limit = AdmissionLimit(3, store.count, what="executions", refresh=3600)
    await limit.admit()
    await limit.admit()  # 1 counted + 2 admitted here = the bound
    with pytest.raises(ResourceExhausted) as refused:
        await limit.admit()
    assert refused.value.reason == "ADMISSION_LIMIT"
    assert refused.value.retry_after and refused.value.retry_after > 0
    assert refused.value.metadata == {"in_progress": "3", "bound": "3"}
    assert store.counts == 1 and limit.refused == 1


async def test_room_is_seen_at_the_next_count() -> None:
    store = Store(in_progress=2)
    limit = AdmissionLimit(2, store.count, what="executions", refresh=0)
    with pytest.raises(ResourceExhausted):
        await limit.admit()
    store.in_progress = 1  # one ended
    await limit.admit()
    assert store.counts == 2


async def test_bound_zero_admits_everything_without_counting() -> None:
    store = Store(in_progress=10**9)
    limit = AdmissionLimit(0, store.count, what="executions")
    for _ in range(5):
        await limit.admit()
    assert store.counts == 0
    with pytest.raises(ValueError):
        AdmissionLimit(-1, store.count, what="executions")
