"""What every page handler shares: the app's keys, the templates, rendering."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from trinity_console.auth import current_session, session_of
from trinity_console.backend import Backend
from trinity_console.settings import ConsoleSettings

PACKAGE = Path(__file__).resolve().parent
SETTINGS = web.AppKey("settings", ConsoleSettings)
BACKEND = web.AppKey("backend", Backend)
TEMPLATES = web.AppKey("templates", jinja2.Environment)
# What a failing action was doing, and where its error page links back to.
DOING = web.RequestKey("doing", str)
BACK = web.RequestKey("back", str)
STREAMS: web.AppKey[set[asyncio.Task[Any]]] = web.AppKey("streams")


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PACKAGE / "templates"),
        autoescape=True,  # every template, whatever its name: step outputs are hostile text
        undefined=jinja2.StrictUndefined,
    )


def render(
    request: web.Request, template: str, *, http_status: int = 200, **context: Any
) -> web.Response:
    session = session_of(request)
    settings = request.app[SETTINGS]
    html = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            session=session,
            csrf=session.csrf if session else "",
            authentication=settings.authentication,
            path=request.path,
            new_key=lambda: str(uuid.uuid4()),  # one idempotency key per form
            **context,
        )
    )
    return web.Response(text=html, status=http_status, content_type="text/html", charset="utf-8")


def context(request: web.Request) -> tuple[Backend, str]:
    """The backend and the bearer token to call it with, for the request's person."""
    return request.app[BACKEND], current_session(request).bearer
