"""`make run`: the whole suite on this machine until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from trinity_cli.local_suite import DEFAULT_PORTS, LocalSuite

NEXT_STEPS = """
Trinity Process Engine is up (data in {data_dir}, logs in {data_dir}/logs).

  definition  127.0.0.1:{definition}    execution  127.0.0.1:{execution}
  approval    127.0.0.1:{approval}    work       127.0.0.1:{work}
  NATS        {nats_url}

Try:
  .venv/bin/grpcurl -plaintext 127.0.0.1:{execution} list
  .venv/bin/grpcurl -plaintext 127.0.0.1:{execution} grpc.health.v1.Health/Check

Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", default=os.environ.get("TRINITY_DATA_DIR", ".data"))
    parser.add_argument("--executors", type=int, default=1)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir).resolve()
    nats_url = os.environ.get("TRINITY_NATS_URL", "nats://127.0.0.1:4222")
    config = os.environ.get("TRINITY_EXECUTOR_CONFIG")
    suite = LocalSuite(
        data_dir=data_dir,
        nats_url=nats_url,
        executors=args.executors,
        executor_config=Path(config) if config else None,
    )
    stop_requested = False

    def request_stop(*_: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        suite.start()
        suite.wait_healthy()
        print(NEXT_STEPS.format(data_dir=data_dir, nats_url=nats_url, **DEFAULT_PORTS), flush=True)
        while not stop_requested:
            exited = {name: code for name, code in suite.running.items() if code is not None}
            if exited:
                print(f"stopping: {exited} exited; see {data_dir}/logs", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except (RuntimeError, TimeoutError) as error:
        print(f"trinity: {error}", file=sys.stderr)
        return 1
    finally:
        print("stopping the suite…", file=sys.stderr)
        suite.stop()


if __name__ == "__main__":
    sys.exit(main())
