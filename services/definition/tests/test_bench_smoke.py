"""The benchmark module runs (its figures are reported by the bench harness, not asserted)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


async def test_bench_publish_runs() -> None:
    path = Path(__file__).with_name("bench_publish.py")
    spec = importlib.util.spec_from_file_location("definition_bench_publish", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = await module.run(quick=True, steps=60)
    assert result["steps"] == 60 and result["iterations"] == 3
    assert result["total_ms_median"] > 0
