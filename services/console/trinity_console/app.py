"""The console's aiohttp application: routes, templates, sign-in, errors.

``create_app(settings)`` is the composition root; ``python -m trinity_console``
serves it. Pages are rendered on the server (Jinja2, autoescaped); a little script
draws the graphs and follows a running execution.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from trinity_console import auth, live, pages
from trinity_console.backend import Backend, ServiceError
from trinity_console.rendering import (
    BACK,
    BACKEND,
    DOING,
    PACKAGE,
    SETTINGS,
    STREAMS,
    TEMPLATES,
    render,
    templates,
)
from trinity_console.settings import ConsoleSettings
from trinity_platform.logs import get_logger

_log = get_logger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """A service's refusal becomes a page that says who refused what, and why."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ServiceError as error:
        doing = request.get(DOING, "load this page")
        back = request.get(BACK, "/")
        return render(
            request,
            "error.html",
            http_status=error.http_status,
            error=error,
            doing=doing,
            back=back,
        )


async def signin_page(request: web.Request) -> web.Response:
    return render(request, "signin.html", next=auth.safe_next(request.query.get("next")), failed="")


async def signin(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    form = await request.post()
    target = auth.safe_next(str(form.get("next") or "/"))
    token = str(form.get("token") or "").strip()
    if not token and form.get("anonymous") and not settings.authentication:
        token = auth.anonymous_token()
    session = auth.resolve(settings, token)
    if session is None:
        failed = "That token is not known here." if token else "Enter your token."
        return render(request, "signin.html", http_status=401, next=target, failed=failed)
    response = web.HTTPSeeOther(target)
    auth.sign_in(response, settings, session)
    _log.info("console sign-in", principal=session.principal)
    raise response


async def signout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/signin")
    auth.sign_out(response)
    raise response


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def home(_request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/executions")


async def _close_backend(app: web.Application) -> None:
    await app[BACKEND].close()


async def _end_streams(app: web.Application) -> None:
    """Live timelines last as long as their executions: end them at shutdown."""
    running = app[STREAMS]
    streams = list(running)
    for task in streams:
        task.cancel()
    await asyncio.gather(*streams, return_exceptions=True)


def create_app(settings: ConsoleSettings, backend: Backend | None = None) -> web.Application:
    app = web.Application(
        middlewares=[auth.make_auth_middleware(settings), error_middleware],
        client_max_size=256 * 1024,
    )
    app[SETTINGS] = settings
    app[BACKEND] = backend or Backend(settings.targets, settings.call_timeout, settings.tls)
    app[TEMPLATES] = templates()
    app[STREAMS] = set()
    app.on_response_prepare.append(auth.add_security_headers)
    app.on_shutdown.append(_end_streams)
    app.on_cleanup.append(_close_backend)
    app.router.add_get("/", home)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    pages.add_routes(app.router)
    app.router.add_get("/executions/{id}/events", live.execution_events)
    app.router.add_static("/static", PACKAGE / "static")
    return app
