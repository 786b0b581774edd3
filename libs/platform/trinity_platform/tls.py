"""TLS settings of gRPC servers and clients, read from the environment in one place.

Servers: ``TRINITY_TLS_CERT_FILE`` + ``TRINITY_TLS_KEY_FILE`` turn TLS on;
``TRINITY_TLS_CLIENT_CA_FILE`` additionally requires a client certificate signed by
that CA (mutual TLS). Clients: ``TRINITY_TLS_CA_FILE`` turns TLS on and is the CA
the server's certificate must chain to; ``TRINITY_TLS_CLIENT_CERT_FILE`` +
``TRINITY_TLS_CLIENT_KEY_FILE`` are presented to servers that require mutual TLS;
``TRINITY_TLS_SERVER_NAME`` overrides the name checked in the server's certificate.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

CERT_FILE = "TRINITY_TLS_CERT_FILE"
KEY_FILE = "TRINITY_TLS_KEY_FILE"
CLIENT_CA_FILE = "TRINITY_TLS_CLIENT_CA_FILE"
CA_FILE = "TRINITY_TLS_CA_FILE"
CLIENT_CERT_FILE = "TRINITY_TLS_CLIENT_CERT_FILE"
CLIENT_KEY_FILE = "TRINITY_TLS_CLIENT_KEY_FILE"
SERVER_NAME = "TRINITY_TLS_SERVER_NAME"


class TlsConfigError(ValueError):
    """A TLS setting is incomplete or names a file that cannot be read."""


@dataclass(frozen=True)
class ServerTls:
    """PEM bytes of the server's certificate chain and key; ``client_ca`` requires
    clients to present a certificate it signed."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ClientTls:
    """PEM bytes of the CA servers are checked against, and the client's own certificate
    and key for servers that require mutual TLS."""

    ca: bytes
    cert: bytes | None = None
    key: bytes | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


def _read(env: Mapping[str, str], name: str) -> bytes | None:
    path = env.get(name)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"{name}={path}: {error.strerror or error}") from None


def _pair(env: Mapping[str, str], cert_name: str, key_name: str) -> tuple[bytes, bytes] | None:
    cert, key = _read(env, cert_name), _read(env, key_name)
    if (cert is None) != (key is None):
        raise TlsConfigError(f"{cert_name} and {key_name} go together: set both or neither")
    return (cert, key) if cert is not None and key is not None else None


def server_tls_from_env(env: Mapping[str, str] | None = None) -> ServerTls | None:
    """None (plaintext) unless a certificate and key are configured."""
    env = os.environ if env is None else env
    pair = _pair(env, CERT_FILE, KEY_FILE)
    client_ca = _read(env, CLIENT_CA_FILE)
    if pair is None:
        if client_ca is not None:
            raise TlsConfigError(f"{CLIENT_CA_FILE} needs {CERT_FILE} and {KEY_FILE}")
        return None
    return ServerTls(cert=pair[0], key=pair[1], client_ca=client_ca)


def client_tls_from_env(env: Mapping[str, str] | None = None) -> ClientTls | None:
    """None (plaintext) unless a CA is configured."""
    env = os.environ if env is None else env
    ca = _read(env, CA_FILE)
    pair = _pair(env, CLIENT_CERT_FILE, CLIENT_KEY_FILE)
    server_name = env.get(SERVER_NAME) or None
    if ca is None:
        if pair is not None:
            raise TlsConfigError(f"{CLIENT_CERT_FILE} needs {CA_FILE}")
        return None
    return ClientTls(
        ca=ca,
        cert=pair[0] if pair else None,
        key=pair[1] if pair else None,
        server_name=server_name,
    )


def tls_settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) of the TLS settings, for the README."""
    return [
        (
            CERT_FILE,
            "(unset: plaintext gRPC)",
            "server: PEM certificate chain; with the key turns TLS on",
        ),
        (KEY_FILE, "(unset)", "server: PEM private key of that certificate"),
        (
            CLIENT_CA_FILE,
            "(unset: no client certificate asked)",
            "server: require client certificates signed by this CA (mutual TLS)",
        ),
        (
            CA_FILE,
            "(unset: plaintext gRPC)",
            "clients: CA that server certificates must chain to; turns TLS on",
        ),
        (
            CLIENT_CERT_FILE,
            "(unset)",
            "clients: PEM certificate presented to servers that require mutual TLS",
        ),
        (CLIENT_KEY_FILE, "(unset)", "clients: PEM private key of that certificate"),
        (SERVER_NAME, "(the target's host)", "clients: name checked in the server's certificate"),
    ]
