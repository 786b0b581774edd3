"""``python -m trinity_approval`` starts, serves health and reflection, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from trinity_platform.testing import free_port


def _serving(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1.0
            )
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def test_python_m_trinity_approval_serves_health_and_reflection(
    tmp_path: Path, nats_url: str
) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    env = dict(os.environ)
    env.update(
        TRINITY_NATS_URL=nats_url,
        TRINITY_DATA_DIR=str(tmp_path),
        TRINITY_APPROVAL_LISTEN=target,
        TRINITY_WORK_TARGET=f"127.0.0.1:{free_port()}",
    )
    log = (tmp_path / "approval.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "trinity_approval"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 30
        while not _serving(target):
            assert process.poll() is None, (tmp_path / "approval.log").read_text()
            assert time.monotonic() < deadline, "not SERVING in time"
            time.sleep(0.1)
        with grpc.insecure_channel(target) as channel:
            services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert "trinity.process.approval.v1.ApprovalService" in services
        assert "grpc.health.v1.Health" in services
        assert (tmp_path / "approval.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(15)
        log.close()
    assert code == 0, (tmp_path / "approval.log").read_text()
