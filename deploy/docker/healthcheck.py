"""Container health check: ``grpc.health.v1.Health/Check`` against the local server.

    python healthcheck.py [HOST:PORT] [SERVICE]

Exit 0 when the server answers SERVING, 1 otherwise (NOT_SERVING while it starts or
drains, or no answer). It speaks TLS, with the client certificate for mutual TLS, when
the TLS settings are in the environment (``TRINITY_TLS_CA_FILE``…). It is the image's
own HEALTHCHECK for plain Docker and Compose, and Kubernetes' probe when TLS is on
(the kubelet's native gRPC probe speaks plaintext only).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from trinity_platform.channels import PROBE_OPTIONS, open_blocking_channel
from trinity_platform.tls import client_tls_from_env


def check(target: str, service: str = "", timeout: float = 3.0) -> tuple[bool, str]:
    """(serving, what it answered) for one Check call."""
    try:
        tls = client_tls_from_env()
        with open_blocking_channel(target, tls=tls, options=PROBE_OPTIONS) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as error:
        return False, error.code().name
    serving = reply.status == health_pb2.HealthCheckResponse.SERVING
    return serving, health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else "127.0.0.1:7401"
    service = argv[2] if len(argv) > 2 else ""
    serving, answer = check(target, service)
    print(f"{target}: {answer}", file=sys.stdout if serving else sys.stderr)
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
