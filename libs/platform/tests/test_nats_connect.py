"""The platform's NATS connection: TLS (with a client certificate) and credentials from
settings, against a real nats-server that requires them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trinity_platform.nats_connect import (
    NatsConfigError,
    NatsSecurity,
    connect_nats,
    nats_security_from_env,
)
from trinity_platform.testing.nats_server import NatsServer
from trinity_platform.testing.tls import write_certificates


@pytest.fixture
def tls_files(tmp_path: Path) -> dict[str, str]:
    return write_certificates(tmp_path / "tls")


@pytest.fixture
def tls_nats(tmp_path: Path, tls_files: dict[str, str]) -> Iterator[NatsServer]:
    """A server that speaks only TLS, verifies client certificates and wants a user."""
    config = tmp_path / "nats.conf"
    config.write_text(
        f"""
tls {{
  cert_file: "{tls_files["TRINITY_TLS_CERT_FILE"]}"
  key_file: "{tls_files["TRINITY_TLS_KEY_FILE"]}"
  ca_file: "{tls_files["TRINITY_TLS_CA_FILE"]}"
  verify: true
}}
authorization {{ users = [ {{user: work, password: $WORK_PASSWORD}} ] }}
"""
    )
    server = NatsServer(tmp_path / "store", config=config, env={"WORK_PASSWORD": "s3cret"})
    server.start()
    yield server
    server.stop()


async def test_tls_with_a_client_certificate_and_a_user(
    tls_nats: NatsServer, tls_files: dict[str, str]
) -> None:
    security = nats_security_from_env(
        {
            "TRINITY_NATS_CA_FILE": tls_files["TRINITY_TLS_CA_FILE"],
            "TRINITY_NATS_CERT_FILE": tls_files["TRINITY_TLS_CLIENT_CERT_FILE"],
            "TRINITY_NATS_KEY_FILE": tls_files["TRINITY_TLS_CLIENT_KEY_FILE"],
            "TRINITY_NATS_USER": "work",
            "TRINITY_NATS_PASSWORD": "s3cret",
        }
    )
    nc = await connect_nats(tls_nats.url, name="t", security=security, retry=False)
    try:
        sub = await nc.subscribe("hello")
        await nc.publish("hello", b"over tls")
        assert (await sub.next_msg(timeout=5)).data == b"over tls"
    finally:
        await nc.close()
    # Without the client certificate, without TLS, or with a wrong password: refused.
    refused = (
        NatsSecurity(user="work", password="s3cret", ca_file=security.ca_file),
        NatsSecurity(user="work", password="s3cret"),
        NatsSecurity(
            user="work",
            password="guess",
            ca_file=security.ca_file,
            cert_file=security.cert_file,
            key_file=security.key_file,
        ),
    )
    for wrong in refused:
        with pytest.raises(Exception):  # noqa: B017 - TLS or authorization errors
            await connect_nats(tls_nats.url, name="t", security=wrong, retry=False)


def test_incomplete_settings_are_refused(tmp_path: Path, tls_files: dict[str, str]) -> None:
    assert nats_security_from_env({}) == NatsSecurity()
    for env in (
        {"TRINITY_NATS_PASSWORD": "x"},
        {"TRINITY_NATS_CERT_FILE": tls_files["TRINITY_TLS_CERT_FILE"]},
        {
            "TRINITY_NATS_CERT_FILE": tls_files["TRINITY_TLS_CERT_FILE"],
            "TRINITY_NATS_KEY_FILE": tls_files["TRINITY_TLS_KEY_FILE"],
        },  # a client certificate without a CA
        {"TRINITY_NATS_CA_FILE": str(tmp_path / "missing.pem")},
    ):
        with pytest.raises(NatsConfigError):
            nats_security_from_env(env)
