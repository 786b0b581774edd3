"""Fixtures of the deployment tests (helpers in deploy_support.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# The test modules import deploy_support by name (pytest runs in importlib mode).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_support import KUSTOMIZATIONS, Manifests, kustomize, load_script


@pytest.fixture(scope="session", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, Manifests]:
    """(name, manifests) of the base and of the production overlay."""
    return request.param, Manifests(kustomize(KUSTOMIZATIONS[request.param]))


@pytest.fixture(scope="session")
def render_module() -> ModuleType:
    return load_script("render.py")


@pytest.fixture(scope="session")
def provision_module() -> ModuleType:
    return load_script("jetstream/provision.py")


@pytest.fixture
def processes() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start subprocesses that are terminated (then killed) when the test ends."""
    started: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(started):
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
