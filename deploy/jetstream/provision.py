"""Create or update the project's JetStream streams, as the Kubernetes Job does.

The streams are defined once, in ``trinity_platform.streams.stream_configs``. The
services apply that definition at every start; this script applies the same one
ahead of them (the ``trinity-streams`` Job, with ``TRINITY_STREAM_REPLICAS=3`` on
the three-server cluster) and checks the result on the server.

    python provision.py [--expect DIR] [--timeout SECONDS]

``--expect DIR`` holds the rendered stream configurations (``<STREAM>.json``, the
JetStream API's own JSON, also usable with ``nats stream add --config``). They are
rendered from the same code by ``deploy/render.py``; when the mounted files differ
from what this image's code defines, the manifests and the image come from different
versions and the script refuses (exit 3) before touching the server.

Environment: ``TRINITY_NATS_URL`` (comma-separated servers), ``TRINITY_STREAM_REPLICAS``,
and the NATS credentials and TLS settings every process reads (``TRINITY_NATS_USER`` +
``TRINITY_NATS_PASSWORD``: the Job connects as ``provisioner``, a user that may only
create, update and inspect streams; ``TRINITY_NATS_CA_FILE`` …).
Exit codes: 0 streams in place with the expected replicas, 1 server check failed,
2 NATS unreachable or the credentials refused, 3 rendered configurations differ from
the code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import nats

from trinity_platform.config import DEFAULT_NATS_URL
from trinity_platform.nats_connect import NatsConfigError, NatsSecurity, nats_security_from_env
from trinity_platform.streams import ensure_streams, stream_configs, stream_limits_from_env


def rendered(replicas: int) -> dict[str, str]:
    """``{"<STREAM>.json": text}`` for every stream the code defines."""
    files = {}
    for config in stream_configs(replicas):
        files[f"{config.name}.json"] = json.dumps(config.as_dict(), indent=2, sort_keys=True) + "\n"
    return files


def differences(expected_dir: Path, replicas: int) -> list[str]:
    """What differs between the files in ``expected_dir`` and the code's rendering."""
    code = rendered(replicas)
    found = {p.name: p.read_text() for p in sorted(expected_dir.glob("*.json"))}
    problems = [
        f"{name}: defined in code, missing from {expected_dir}"
        for name in code.keys() - found.keys()
    ]
    problems += [
        f"{name}: in {expected_dir}, not defined in code" for name in found.keys() - code.keys()
    ]
    problems += [
        f"{name}: differs from the code's definition"
        for name in sorted(code.keys() & found.keys())
        if json.loads(code[name]) != json.loads(found[name])
    ]
    return sorted(problems)


async def connect(servers: list[str], security: NatsSecurity, wait_seconds: float) -> Any:
    """Wait for the servers to be reachable; a refused authorization will not heal by
    waiting (the Secret is what it is), so it fails at once."""
    deadline = time.monotonic() + wait_seconds
    errors: list[Exception] = []  # of the current attempt

    async def on_error(error: Exception) -> None:
        errors.append(error)

    while True:
        errors.clear()
        try:
            # max_reconnect_attempts=0 would retry forever inside nats.connect: two
            # attempts per server, then this loop decides.
            return await nats.connect(
                servers=servers,
                connect_timeout=2,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.5,
                error_cb=on_error,
                **security.connect_options(),
            )
        except Exception as error:
            errors.append(error)
            if any("authorization" in str(e).lower() for e in errors):
                who = f"user {security.user!r}" if security.user else "an anonymous client"
                raise ConnectionError(
                    f"NATS at {','.join(servers)} refused {who} (Authorization Violation): "
                    "check TRINITY_NATS_USER and TRINITY_NATS_PASSWORD (the Secret "
                    "trinity-nats-users)"
                ) from None
            if time.monotonic() > deadline:
                raise ConnectionError(
                    f"NATS at {','.join(servers)} unreachable: {errors[0]!r}"
                ) from None
            await asyncio.sleep(1.0)


async def provision(
    servers: list[str], security: NatsSecurity, replicas: int, wait_seconds: float
) -> list[dict[str, Any]]:
    """Apply the streams; return what the server reports for each."""
    nc = await connect(servers, security, wait_seconds)
    try:
        js = nc.jetstream()
        deadline = time.monotonic() + wait_seconds
        while True:  # a fresh cluster needs a moment to elect its meta leader
            try:
                # The limits of trinity-config, as the services apply them at start.
                names = await ensure_streams(js, replicas, stream_limits_from_env())
                break
            except Exception as error:
                if time.monotonic() > deadline:
                    raise
                print(f"waiting for JetStream: {error!r}", file=sys.stderr)
                await asyncio.sleep(1.0)
        report = []
        for name in names:
            info = await js.stream_info(name)
            cluster = info.cluster
            report.append(
                {
                    "stream": name,
                    "replicas": info.config.num_replicas,
                    "subjects": info.config.subjects,
                    "retention": getattr(info.config.retention, "value", info.config.retention),
                    "leader": cluster.leader if cluster else None,
                    "peers": len(cluster.replicas or []) + 1 if cluster and cluster.leader else 1,
                }
            )
        return report
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--expect", type=Path, help="folder of rendered <STREAM>.json files to verify first"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for NATS")
    args = parser.parse_args(argv)
    replicas = int(os.environ.get("TRINITY_STREAM_REPLICAS") or "1")
    servers = [
        s.strip()
        for s in (os.environ.get("TRINITY_NATS_URL") or DEFAULT_NATS_URL).split(",")
        if s.strip()
    ]

    if args.expect is not None:
        problems = differences(args.expect, replicas)
        if problems:
            print("rendered stream configurations differ from this image's code:", file=sys.stderr)
            for problem in problems:
                print(f"  {problem}", file=sys.stderr)
            return 3

    try:
        security = nats_security_from_env()
    except NatsConfigError as error:
        print(f"NATS settings: {error}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(provision(servers, security, replicas, args.timeout))
    except ConnectionError as error:
        print(error, file=sys.stderr)
        return 2
    short = [r for r in report if r["replicas"] != replicas or r["peers"] != replicas]
    for line in report:
        print(json.dumps(line, sort_keys=True))
    if short:
        print(
            f"streams without {replicas} replicas: {[r['stream'] for r in short]}", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
