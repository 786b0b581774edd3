"""Helpers of the deployment tests: the repository's deploy/ folder, rendered
kustomizations, and deploy/'s scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
KUSTOMIZATIONS = {"base": K8S / "base", "production": K8S / "overlays" / "production"}


def load_script(relative: str) -> ModuleType:
    """A script under deploy/ as a module (deploy/ is not a package)."""
    path = DEPLOY / relative
    name = "trinity_deploy_" + path.stem.replace("-", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def kustomize(path: Path) -> str:
    """``kubectl kustomize`` output (kubectl ships kustomize; it is in the machine image)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(
            "kubectl (with its built-in kustomize) is not installed; manifests not rendered"
        )
    result = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


class Manifests:
    """The documents of one rendered kustomization, looked up by kind and name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.documents: list[dict[str, Any]] = [d for d in yaml.safe_load_all(text) if d]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.documents if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        """By name; generated ConfigMaps match on their name before the hash suffix."""
        for document in self.of_kind(kind):
            actual = document["metadata"]["name"]
            if actual == name or (kind == "ConfigMap" and actual.rsplit("-", 1)[0] == name):
                return document
        raise KeyError(f"{kind}/{name}")
