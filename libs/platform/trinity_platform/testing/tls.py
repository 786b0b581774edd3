"""Certificates for tests, made at run time (trustme): one CA and one certificate that
every process uses as server and as client (trustme issues both usages)."""

from __future__ import annotations

from pathlib import Path


def write_certificates(
    folder: Path, names: tuple[str, ...] = ("127.0.0.1", "localhost")
) -> dict[str, str]:
    """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` to ``folder``; return the settings
    that turn mutual TLS on for every server and client (``TRINITY_TLS_*``)."""
    import trustme  # a test dependency only

    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(*names)
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    (folder / "cert.pem").write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return {
        "TRINITY_TLS_CERT_FILE": str(folder / "cert.pem"),
        "TRINITY_TLS_KEY_FILE": str(folder / "key.pem"),
        "TRINITY_TLS_CLIENT_CA_FILE": str(folder / "ca.pem"),
        "TRINITY_TLS_CA_FILE": str(folder / "ca.pem"),
        "TRINITY_TLS_CLIENT_CERT_FILE": str(folder / "cert.pem"),
        "TRINITY_TLS_CLIENT_KEY_FILE": str(folder / "key.pem"),
    }
