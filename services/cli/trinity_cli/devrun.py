"""`make run`: the whole suite on this machine, the examples published, until Ctrl-C.

NATS (started when none answers), the four services, the web console and one
executor configured for the examples (`examples/executor.yaml`), on SQLite under the data folder. Once
every service is healthy the examples are applied and published, and what to type
next is printed. Ctrl-C (or SIGTERM) stops everything, newest process first.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from trinity_cli.client import Clients
from trinity_cli.commands.definitions import apply_file
from trinity_cli.context import Context
from trinity_cli.errors import CliError
from trinity_cli.local_suite import (
    DEFAULT_METRICS_PORTS,
    DEFAULT_PORTS,
    EXECUTOR_METRICS_PORT,
    SERVICES,
    LocalSuite,
)
from trinity_console.settings import DEFAULT_LISTEN as CONSOLE_LISTEN
from trinity_platform.authz import parse_auth_tokens
from trinity_platform.grpc_server import ListenError, check_listen_address
from trinity_platform.logs import redact_url

REPOSITORY = Path(__file__).resolve().parents[3]
# Demo identities: both may author, run and approve; the suite adds its own service,
# executor and admin tokens (LocalSuite).
DEMO_TOKENS = (
    "reviewer-token=reviewer@example.com:author+operator+viewer+approver,"
    "lead-token=lead@example.com:author+operator+viewer+approver"
)

BANNER = """
Trinity Process Engine is up (data in {data_dir}, logs in {data_dir}/logs).

  definition  127.0.0.1:{definition}    execution  127.0.0.1:{execution}
  approval    127.0.0.1:{approval}    work       127.0.0.1:{work}
  NATS        {nats_url} {nats_state}
  executor    {executor_config}
  metrics     {metrics}
  console     http://127.0.0.1:{console_port}/  (open it in a browser; sign in with a token below)

{examples}
{identities}
In another terminal (the CLI is .venv/bin/trinity-process):
  source .venv/bin/activate
  export TRINITY_TOKEN=reviewer-token
  trinity-process definitions list
  trinity-process run research-review --input topic="durable execution" --watch
  trinity-process approvals list
  trinity-process approvals approve <approval id>
  trinity-process facts tail

File notifications land in {data_dir}/notifications. Ctrl-C stops everything.
"""


def example_files(root: Path) -> list[Path]:
    """``examples/*/process.yaml``, in name order."""
    return sorted((root / "examples").glob("*/process.yaml"))


def default_executor_config(env: Mapping[str, str]) -> Path | None:
    """``TRINITY_EXECUTOR_CONFIG``, else the examples' configuration when it is there."""
    if env.get("TRINITY_EXECUTOR_CONFIG"):
        return Path(env["TRINITY_EXECUTOR_CONFIG"]).resolve()
    for root in (REPOSITORY, Path.cwd()):
        candidate = root / "examples" / "executor.yaml"
        if candidate.is_file():
            return candidate.resolve()
    return None


def publish_examples(files: list[Path], definition_target: str, token: str = "") -> list[str]:
    """Apply and publish each process file; one line per file saying what happened."""
    clients = Clients(targets={"definition": definition_target}, token=token, timeout=30.0)
    ctx = Context(args=argparse.Namespace(), clients=clients, nats_url="")
    lines = []
    try:
        for path in files:
            try:
                action, definition = apply_file(ctx, str(path), publish=True)
            except CliError as error:
                said = error.message.removeprefix(f"{path}: ")
                if "not published" not in said:
                    said = f"not published: {said}"
                lines.append(f"  {path.parent.name}: {said}")
                continue
            state = "already published" if action == "unchanged" else "published"
            lines.append(f"  {definition.name} {definition.version} ({state})")
    finally:
        clients.close()
    return lines


def listen_ports(env: Mapping[str, str]) -> dict[str, int]:
    """The services' ports: from ``TRINITY_<SERVICE>_LISTEN`` when set, else the defaults."""
    ports = dict(DEFAULT_PORTS)
    for service in SERVICES:
        listen = env.get(f"TRINITY_{service.upper()}_LISTEN")
        if listen:
            ports[service] = int(listen.rsplit(":", 1)[1])
    return ports


def metrics_listen_ports(env: Mapping[str, str], executors: int) -> dict[str, int]:
    """Where each process serves /metrics: the defaults, or the port of
    ``TRINITY_<SERVICE>_METRICS_LISTEN`` when set (``off`` turns one off)."""
    ports = dict(DEFAULT_METRICS_PORTS)
    for service in SERVICES:
        listen = env.get(f"TRINITY_{service.upper()}_METRICS_LISTEN")
        if listen == "off":
            del ports[service]
        elif listen:
            ports[service] = int(listen.rsplit(":", 1)[1])
    for index in range(executors):
        ports[f"executor-{index}"] = EXECUTOR_METRICS_PORT + index
    return ports


def _metrics_line(ports: Mapping[str, int]) -> str:
    return " ".join(f"{name} :{port}" for name, port in ports.items()) + " (http://…/metrics)"


def console_listen_port(env: Mapping[str, str]) -> int:
    """The web console's port: from ``TRINITY_CONSOLE_LISTEN`` when set, else 7400."""
    listen = env.get("TRINITY_CONSOLE_LISTEN") or CONSOLE_LISTEN
    return int(listen.rsplit(":", 1)[1])


def _stop_on_sigterm(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make run",
        description=__doc__,
        epilog='Through make, pass options in ARGS: make run ARGS="--executors 2 --no-examples"',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("TRINITY_DATA_DIR", ".data"),
        help="folder of the databases, logs and notifications (default: $TRINITY_DATA_DIR or .data)",
    )
    parser.add_argument("--executors", type=int, default=1, help="how many executors (default 1)")
    parser.add_argument(
        "--no-examples", action="store_true", help="do not apply and publish examples/"
    )
    args = parser.parse_args(argv)
    env = os.environ
    data_dir = Path(args.data_dir).resolve()
    nats_url = env.get("TRINITY_NATS_URL", "nats://127.0.0.1:4222")
    tokens = env.get("TRINITY_AUTH_TOKENS", DEMO_TOKENS)
    executor_config = default_executor_config(env)
    ports = listen_ports(env)
    metrics_ports = metrics_listen_ports(env, args.executors)
    console_port = console_listen_port(env)
    taken = ports_in_use(ports)
    if taken:  # another `make run` (or anything else) holds them: start nothing
        print(f"make run: {taken}", file=sys.stderr, flush=True)
        return 1
    suite = LocalSuite(
        data_dir=data_dir,
        nats_url=nats_url,
        ports=ports,
        executors=args.executors,
        executor_config=executor_config,
        extra_env={"TRINITY_AUTH_TOKENS": tokens},
        metrics_ports=metrics_ports,
        console_port=console_port,
    )
    # Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited ignored (a
    # background job of a script), and SIGTERM does the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        print(f"starting the suite (logs in {data_dir}/logs)…", file=sys.stderr, flush=True)
        started = suite.ensure_nats()
        print(
            f"NATS at {redact_url(nats_url)}: "
            + ("started" if started else "reused (it was running already)"),
            file=sys.stderr,
            flush=True,
        )
        suite.start()
        suite.wait_healthy()
        examples = [] if args.no_examples else example_files(REPOSITORY)
        published = publish_examples(
            examples, f"127.0.0.1:{ports['definition']}", suite.admin_token
        )
        print(
            BANNER.format(
                data_dir=data_dir,
                nats_url=redact_url(nats_url),
                nats_state=nats_state(suite, data_dir),
                executor_config=executor_config or "(none: every agent runs echo)",
                examples="Examples:\n" + "\n".join(published) + "\n" if published else "",
                identities=_identities(tokens),
                metrics=_metrics_line(metrics_ports),
                console_port=console_port,
                **ports,
            ),
            flush=True,
        )
        while True:
            exited = {name: code for name, code in suite.running.items() if code is not None}
            if exited:
                print(f"stopping: {exited} exited; see {data_dir}/logs", file=sys.stderr)
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"trinity: {error}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the stop short
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stopping the suite…", file=sys.stderr, flush=True)
        suite.stop()
        print("stopped.", file=sys.stderr, flush=True)


def ports_in_use(ports: Mapping[str, int]) -> str:
    """Why the services cannot listen (the first port in use), or ""."""
    for service, port in ports.items():
        try:
            check_listen_address(f"127.0.0.1:{port}", f"TRINITY_{service.upper()}_LISTEN")
        except ListenError as error:
            return f"the {service} service's {error}"
    return ""


def nats_state(suite: LocalSuite, data_dir: Path) -> str:
    """Whether `make run` started this NATS or found one already running (and shares it)."""
    if suite.nats_started:
        return f"(started by make run, stored in {data_dir}/nats)"
    return (
        "(reused: it was running already, and facts tail also shows whatever else "
        "publishes there; set TRINITY_NATS_URL to a free port for a private one)"
    )


def _identities(tokens: str) -> str:
    try:
        principals = parse_auth_tokens(tokens)
    except ValueError:
        return ""
    if tokens != DEMO_TOKENS:
        return f"Identities: {len(principals)} bearer token(s) from TRINITY_AUTH_TOKENS.\n"
    pairs = ", ".join(
        f"{token} = {identity.principal} ({'+'.join(sorted(identity.roles))})"
        for token, identity in principals.items()
    )
    return f"Demo identities (bearer tokens; set TRINITY_AUTH_TOKENS for your own): {pairs}\n"


if __name__ == "__main__":
    sys.exit(main())
