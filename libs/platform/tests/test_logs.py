"""Log lines never carry credentials: URL passwords and registered secrets are masked."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from trinity_platform import logs
from trinity_platform.logs import (
    configure_logging,
    get_logger,
    redact_url,
    secrets_of_environment,
)


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("nats://user:s3cret@nats:4222", "nats://user:***@nats:4222"),
        ("nats://tok3n@nats:4222", "nats://***@nats:4222"),
        (
            "nats://a:p1@n1:4222,nats://b:p2@n2:4222",
            "nats://a:***@n1:4222,nats://b:***@n2:4222",
        ),
        ("postgresql+asyncpg://pg:pw@db:5432/x", "postgresql+asyncpg://pg:***@db:5432/x"),
        ("error connecting to 'tls://u:p@h'", "error connecting to 'tls://u:***@h'"),
        ("http://host/path@not-userinfo", "http://host/path@not-userinfo"),
        ("postgresql://postgres@db:5432/x", "postgresql://postgres@db:5432/x"),
        ("no url here: a@b", "no url here: a@b"),
    ],
)
def test_url_credentials_are_masked(text: str, masked: str) -> None:
    assert redact_url(text) == masked


def test_the_environments_secrets_are_found() -> None:
    env = {
        "TRINITY_AUTH_TOKENS": "tok-alice=alice:admin,tok-bob=bob",
        "TRINITY_NATS_URL": "nats://u:natspw@h:4222",
        "TRINITY_EXECUTION_DATABASE_URL": "postgresql://u:dbpass@h/db",
        "TRINITY_WORK_DATABASE_URL": "postgresql://postgres@h/db",
        "TRINITY_NATS_URL_2": "nats://natstoken@h:4222",
        "TRINITY_PAGE_TOKEN_KEY": "key-new,key-old",
        "TRINITY_WORK_TOKEN": "svc-work-token",
        "TRINITY_NATS_PASSWORD": "nats,pass2",
        "TRINITY_NATS_KEY_FILE": "/etc/nats/client.key",
        "TRINITY_LOG_LEVEL": "INFO",
        "HOME": "/root",
    }
    assert sorted(secrets_of_environment(env)) == sorted(
        [
            "tok-alice=alice:admin,tok-bob=bob",
            "key-new,key-old",
            "tok-alice",
            "tok-bob",
            "natspw",
            "natstoken",
            "dbpass",
            "key-new",
            "key-old",
            "svc-work-token",
            "nats,pass2",  # a password is one secret, commas and all
        ]
    )


def test_logged_lines_mask_urls_and_secrets_everywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(logs, "_secrets", set())
    monkeypatch.setenv("TRINITY_AUTH_TOKENS", "tok-very-secret=alice")
    configure_logging("DEBUG", json=True)
    try:
        log = get_logger("test")
        log.info("nats ready", url="nats://user:hunter22@nats:4222", extra={"t": "tok-very-secret"})
        try:
            raise RuntimeError("cannot connect to postgresql://pg:dbpw9@db/x as tok-very-secret")
        except RuntimeError:
            log.exception("database failed")
        logging.getLogger("stdlib").warning("plain logging: %s", "nats://u:stdlibpw@h")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        logging.getLogger().handlers[:] = []
        structlog.reset_defaults()  # later tests read structlog's default output
    text = json.dumps(lines)
    for secret in ("hunter22", "tok-very-secret", "dbpw9", "stdlibpw"):
        assert secret not in text
    assert lines[0]["url"] == "nats://user:***@nats:4222"
    assert lines[0]["extra"] == {"t": "***"}
    assert "postgresql://pg:***@db/x as ***" in lines[1]["exception"]
    assert lines[2]["event"] == "plain logging: nats://u:***@h"
