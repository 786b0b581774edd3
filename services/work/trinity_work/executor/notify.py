"""Notification channels: webhook (JSON + HMAC signature), email (SMTP), Slack (incoming
webhook), file (JSON lines under a configured directory).

Where a notification may go is decided by the executor's configuration, never by the
work request alone: webhook and Slack targets are configured names (or URLs under an
allowed prefix), file targets must stay under the configured directory.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import smtplib
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formataddr, parseaddr
from pathlib import Path
from typing import Any

import httpx

from trinity_work.domain.model import Channel, FailureCode, Notification, WorkResult
from trinity_work.executor.config import ExecutorConfig, MissingVariable, expand, parse_duration
from trinity_work.executor.jobs import Job, JobFailed

SIGNATURE_HEADER = "X-Trinity-Signature"
TIMESTAMP_HEADER = "X-Trinity-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, ``<timestamp>.<body>``)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + digest.hexdigest()


def _secret(value: str, channel: str) -> str:
    try:
        return expand(value)
    except MissingVariable as exc:
        raise JobFailed(
            FailureCode.CREDENTIALS_MISSING.value,
            f"the {channel} channel needs the environment variable {exc.name}, "
            "which is not set on this executor",
            {"variable": exc.name},
        ) from None


def _body(note: Notification, job: Job) -> dict[str, Any]:
    return {
        "work_id": job.work_id,
        "channel": note.channel.value,
        "target": note.target,
        "subject": note.subject,
        "message": note.message,
        "correlation": {
            "execution_id": job.correlation.execution_id,
            "step_id": job.correlation.step_id,
            "iteration": job.correlation.iteration,
            "attempt": job.correlation.attempt,
        },
        "time": datetime.now(UTC).isoformat(),
    }


def _not_configured(channel: str) -> JobFailed:
    return JobFailed(
        FailureCode.CHANNEL_NOT_CONFIGURED.value,
        f"this executor has no {channel} channel configured",
        {"channel": channel},
    )


class Notifier:
    def __init__(self, config: ExecutorConfig) -> None:
        self._config = config
        self._channels = config.notifications
        self._http: httpx.AsyncClient | None = None
        self._file_lock = asyncio.Lock()

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        return self._http

    async def send(self, note: Notification, job: Job) -> WorkResult:
        configured = self._channels.get(note.channel.value)
        if configured is None:
            raise _not_configured(note.channel.value)
        options = dict(configured)
        if note.channel is Channel.WEBHOOK:
            return await self._webhook(note, job, options)
        if note.channel is Channel.EMAIL:
            return await self._email(note, job, options)
        if note.channel is Channel.SLACK:
            return await self._slack(note, options)
        return await self._file(note, job, options)

    # ------------------------------------------------------------------ http channels

    async def _post(
        self, url: str, body: bytes, headers: dict[str, str], what: str, seconds: float
    ) -> int:
        try:
            response = await self._client().post(
                url, content=body, headers=headers, timeout=seconds
            )
        except httpx.HTTPError as exc:
            raise JobFailed(
                FailureCode.DELIVERY_FAILED.value, f"{what} could not be delivered: {exc!r}"
            ) from None
        if not 200 <= response.status_code < 300:
            raise JobFailed(
                FailureCode.DELIVERY_FAILED.value,
                f"{what} was refused with HTTP {response.status_code}",
                {"status": str(response.status_code)},
            )
        return response.status_code

    def _url(self, target: str, options: dict[str, Any], channel: str) -> tuple[str, str]:
        """(url, name) of a configured target name, or of a URL under an allowed prefix."""
        targets = options.get("targets") or {}
        if target in targets:
            return _secret(str(targets[target]), channel), target
        if not target and options.get("default") in targets:
            name = str(options["default"])
            return _secret(str(targets[name]), channel), name
        prefixes = [str(p) for p in options.get("allow_url_prefixes") or ()]
        if target and any(target.startswith(p) for p in prefixes):
            return target, target
        raise JobFailed(
            FailureCode.TARGET_NOT_ALLOWED.value,
            f"{channel} target {target!r} is neither a configured target nor an allowed URL",
            {"target": target},
        )

    async def _webhook(self, note: Notification, job: Job, options: dict[str, Any]) -> WorkResult:
        url, name = self._url(note.target, options, "webhook")
        if not options.get("secret"):
            raise JobFailed(
                FailureCode.CHANNEL_NOT_CONFIGURED.value,
                "the webhook channel needs a 'secret' (for example \"${TRINITY_WEBHOOK_SECRET}\")",
            )
        secret = _secret(str(options["secret"]), "webhook")
        body = json.dumps(_body(note, job), separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
            "X-Trinity-Work-Id": job.work_id,
        }
        timeout = parse_duration(options.get("timeout", 30), "notifications.webhook.timeout")
        status = await self._post(url, body, headers, f"webhook {name!r}", timeout)
        return WorkResult(output=f"webhook {name} accepted the notification (HTTP {status})")

    async def _slack(self, note: Notification, options: dict[str, Any]) -> WorkResult:
        url, name = self._url(note.target, options, "slack")
        text = f"*{note.subject}*\n{note.message}" if note.subject else note.message
        body = json.dumps({"text": text}).encode()
        timeout = parse_duration(options.get("timeout", 30), "notifications.slack.timeout")
        status = await self._post(
            url, body, {"content-type": "application/json"}, f"slack webhook {name!r}", timeout
        )
        return WorkResult(output=f"slack {name} accepted the message (HTTP {status})")

    # ------------------------------------------------------------------ email

    async def _email(self, note: Notification, job: Job, options: dict[str, Any]) -> WorkResult:
        if not options.get("host") or not options.get("sender"):
            raise JobFailed(
                FailureCode.CHANNEL_NOT_CONFIGURED.value,
                "the email channel needs 'host' and 'sender'",
            )
        recipients = [a.strip() for a in note.target.split(",") if a.strip()]
        domains = [str(d).lower() for d in options.get("allowed_domains") or ()]
        for address in recipients:
            _, parsed = parseaddr(address)
            if "@" not in parsed or any(c in address for c in "\r\n"):
                raise JobFailed(
                    FailureCode.TARGET_NOT_ALLOWED.value, f"{address!r} is not an email address"
                )
            if domains and parsed.rsplit("@", 1)[1].lower() not in domains:
                raise JobFailed(
                    FailureCode.TARGET_NOT_ALLOWED.value,
                    f"{address} is outside the allowed domains",
                    {"target": address},
                )
        if not recipients:
            raise JobFailed(FailureCode.TARGET_NOT_ALLOWED.value, "no email recipient")
        message = EmailMessage()
        message["From"] = formataddr(parseaddr(str(options["sender"])))
        message["To"] = ", ".join(recipients)
        message["Subject"] = " ".join(note.subject.splitlines()) or "Trinity notification"
        message["X-Trinity-Work-Id"] = job.work_id
        message.set_content(note.message)
        username = _secret(str(options["username"]), "email") if options.get("username") else None
        password = _secret(str(options["password"]), "email") if options.get("password") else None
        host, port = str(options["host"]), int(options.get("port", 25))
        timeout = parse_duration(options.get("timeout", 30), "notifications.email.timeout")

        def deliver() -> None:
            smtp_class = smtplib.SMTP_SSL if options.get("ssl") else smtplib.SMTP
            with smtp_class(host, port, timeout=timeout) as smtp:
                if options.get("starttls"):
                    smtp.starttls()
                if username is not None and password is not None:
                    smtp.login(username, password)
                smtp.send_message(message)

        try:
            await asyncio.to_thread(deliver)
        except (OSError, smtplib.SMTPException) as exc:
            raise JobFailed(
                FailureCode.DELIVERY_FAILED.value,
                f"mail to {', '.join(recipients)} failed: {exc!r}",
            ) from None
        return WorkResult(output=f"mail sent to {', '.join(recipients)}")

    # ------------------------------------------------------------------ file

    async def _file(self, note: Notification, job: Job, options: dict[str, Any]) -> WorkResult:
        if not options.get("directory"):
            raise JobFailed(
                FailureCode.CHANNEL_NOT_CONFIGURED.value, "the file channel needs 'directory'"
            )
        root = self._config.path(str(options["directory"])).resolve()
        target = note.target or "notifications.jsonl"
        path = (root / target).resolve()
        if Path(target).is_absolute() or not path.is_relative_to(root) or path == root:
            raise JobFailed(
                FailureCode.TARGET_NOT_ALLOWED.value,
                f"file target {target!r} is outside the notification directory",
                {"target": target},
            )
        line = json.dumps(_body(note, job), ensure_ascii=False) + "\n"

        def append() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as handle:
                handle.write(line)

        async with self._file_lock:
            await asyncio.to_thread(append)
        return WorkResult(output=f"appended to {path}")

    async def close(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
