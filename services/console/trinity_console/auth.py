"""Signing in, the session cookie, CSRF and the headers every page carries.

The session is the person's bearer token itself, in an HttpOnly, SameSite=Strict
cookie: the console keeps no session state and no secret of its own, and page
scripts cannot read the token. Every POST other than signing in must carry a CSRF
token, an HMAC of a fixed text keyed by the session's bearer token, so only pages
rendered for that session can post; a POST whose Origin is another site is refused
before anything else. With authentication on (``TRINITY_AUTH_TOKENS`` set, the same
table the services read) only a token of that table signs in, and nothing but the
sign-in page, the static files and the health probe answers without one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from aiohttp import web

from trinity_console.settings import ConsoleSettings

COOKIE = "trinity_console"
CSRF_FIELD = "csrf"
ANONYMOUS_PREFIX = "anonymous:"
SESSION_SECONDS = 12 * 3600
MAX_TOKEN_LENGTH = 4096
PUBLIC_PATHS = ("/signin", "/healthz")
PUBLIC_PREFIXES = ("/static/",)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make browsers send Origin: null
    "Cache-Control": "no-store",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Session:
    """Who is signed in: the token forwarded to the services, and their name."""

    token: str
    principal: str

    @property
    def anonymous(self) -> bool:
        return self.token.startswith(ANONYMOUS_PREFIX)

    @property
    def bearer(self) -> str:
        """What the services get: nothing for an anonymous session."""
        return "" if self.anonymous else self.token

    @property
    def csrf(self) -> str:
        return hmac.new(self.token.encode(), b"trinity-console-csrf", hashlib.sha256).hexdigest()


SESSION: web.RequestKey[Session | None] = web.RequestKey("session")


def session_of(request: web.Request) -> Session | None:
    return request.get(SESSION)


def current_session(request: web.Request) -> Session:
    """The session of a request that passed :func:`auth_middleware`."""
    session = session_of(request)
    if session is None:  # pragma: no cover - the middleware lets no such request through
        raise web.HTTPUnauthorized(text="sign in first")
    return session


def resolve(settings: ConsoleSettings, token: str) -> Session | None:
    """The session a token opens, or None when it opens none."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return None
    if token.startswith(ANONYMOUS_PREFIX):
        return None if settings.authentication else Session(token, "anonymous")
    if not settings.authentication:
        return Session(token, "anonymous (authentication is off)")
    # Compare against every known token in constant time, not a dict lookup.
    principal = None
    for known, name in settings.principals.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            principal = name
    return Session(token, principal) if principal else None


def encode_cookie(token: str) -> str:
    return base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")


def decode_cookie(value: str) -> str:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return ""


def sign_in(response: web.StreamResponse, settings: ConsoleSettings, session: Session) -> None:
    response.set_cookie(
        COOKIE,
        encode_cookie(session.token),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=settings.secure_cookie,
    )


def sign_out(response: web.StreamResponse) -> None:
    response.del_cookie(COOKIE, path="/")


def anonymous_token() -> str:
    return ANONYMOUS_PREFIX + secrets.token_urlsafe(24)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: only a path of this site (no //host, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def _public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser's cross-site form (and SameSite keeps the cookie home)
    # The host only: behind a TLS-terminating proxy the scheme seen here differs.
    return urlsplit(origin).netloc == request.host


def make_auth_middleware(settings: ConsoleSettings) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "POST" and not _same_origin(request):
            raise web.HTTPForbidden(text="cross-site request refused")
        session = resolve(settings, decode_cookie(request.cookies.get(COOKIE, "")))
        request[SESSION] = session
        if _public(request.path):
            return await handler(request)
        if session is None:
            if request.method == "GET" and "text/event-stream" not in request.headers.get(
                "Accept", ""
            ):
                raise web.HTTPSeeOther(f"/signin?next={quote(request.path_qs, safe='')}")
            raise web.HTTPUnauthorized(text="sign in first")
        if request.method == "POST":
            form = await request.post()
            sent = form.get(CSRF_FIELD)
            if not isinstance(sent, str) or not hmac.compare_digest(
                sent.encode(), session.csrf.encode()
            ):
                raise web.HTTPForbidden(text="the form expired or came from elsewhere; reload it")
        return await handler(request)

    return auth_middleware


async def add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """Every response, pages, errors and event streams alike (an on_response_prepare hook)."""
    response.headers.update(SECURITY_HEADERS)
