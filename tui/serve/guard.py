"""Who may use `ctui serve`: every request passes here before textual-serve sees it.

A panel on a port can stop or ruin someone's week-long run, so: the secret (a token or a
password) is compared in constant time; the browser then holds a cookie signed with a key only
this server instance has (a cookie of another server, or of this one before a restart, opens
nothing); the websocket and the static files are reached only through single-use tickets and a
key written into a page that was itself authorised; another Origin (and, on a loopback bind,
another Host: DNS rebinding) is refused; failures are logged and rate limited per address.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from .page import login_page

LOG = logging.getLogger("ctui.serve")
ASSETS = "/assets/"  # + asset key + file: textual-serve's static files
WEBSOCKET = "/ws/"  # + ticket
LOGIN = "/login"
COOKIE_MAX_AGE = 7 * 24 * 3600
TICKET_SECONDS = 60.0
MAX_TICKETS = 10_000
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FailureLimiter:
    """At most `max_failures` failed attempts per client address in any `window` seconds;
    past that the address is refused, even with the right secret, until old failures age out."""

    MAX_CLIENTS = 10_000  # addresses remembered; the oldest is forgotten first

    def __init__(self, max_failures: int = 5, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.window = window
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str) -> int:
        times = self._failures.get(client)
        if times is None:
            return 0
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            del self._failures[client]
        return len(times)

    def blocked(self, client: str) -> bool:
        return self._recent(client) >= self.max_failures

    def failed(self, client: str) -> bool:
        """Record a failure; True when it is the one that blocks the address."""
        count = self._recent(client)
        if client not in self._failures and len(self._failures) >= self.MAX_CLIENTS:
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(client, deque()).append(self.clock())
        return count + 1 == self.max_failures


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).digest()


@dataclass
class Guard:
    """The checks, and the aiohttp middleware that applies them to every request."""

    secret: str  # the token printed in the URL, or the password file's contents
    cookie_name: str = "ctui-serve"  # one per port: browsers share cookies across ports
    loopback: bool = True  # bound to 127.0.0.1: only loopback Host names are served
    extra_origins: frozenset[str] = frozenset()  # e.g. a notebook proxy's origin
    limiter: FailureLimiter = field(default_factory=FailureLimiter)
    clock: Callable[[], float] = time.time
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _tickets: dict[bytes, float] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ secrets

    def secret_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(_digest(candidate), _digest(self.secret))

    def _mac(self, text: str) -> str:
        return hmac.new(self.key, text.encode(), hashlib.sha256).hexdigest()

    def make_cookie(self) -> str:
        payload = f"{int(self.clock())}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._mac(payload)}"

    def cookie_ok(self, value: str | None) -> bool:
        if not value or value.count(".") != 2:
            return False
        payload, _, mac = value.rpartition(".")
        if not hmac.compare_digest(mac.encode(), self._mac(payload).encode()):
            return False
        issued = payload.split(".", 1)[0]
        return issued.isdigit() and 0 <= self.clock() - int(issued) <= COOKIE_MAX_AGE

    @property
    def asset_key(self) -> str:
        return self._mac("assets")[:32]

    def new_ticket(self) -> str:
        """A websocket ticket for one authorised page: single use, valid TICKET_SECONDS."""
        now = self.clock()
        for digest, expires in list(self._tickets.items()):
            if expires <= now:
                del self._tickets[digest]
        while len(self._tickets) >= MAX_TICKETS:
            del self._tickets[next(iter(self._tickets))]
        ticket = secrets.token_urlsafe(32)
        self._tickets[_digest(ticket)] = now + TICKET_SECONDS
        return ticket

    def take_ticket(self, ticket: str) -> bool:
        expires = self._tickets.pop(_digest(ticket), None)  # looked up by hash: no timing leak
        return expires is not None and self.clock() < expires

    # ------------------------------------------------------------ where a request comes from

    def host_ok(self, request: web.Request) -> bool:
        if not self.loopback:
            return True
        try:
            name = urlsplit("//" + (request.host or "")).hostname
        except ValueError:  # e.g. an unbalanced "[::1"
            return False
        proxies = {urlsplit(origin).hostname for origin in self.extra_origins}
        return name in LOOPBACK_NAMES or name in proxies  # a proxy may pass its own Host on

    def origin_ok(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a cross-origin browser request (curl, a top-level visit)
            return True
        if origin in self.extra_origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()

    # ------------------------------------------------------------ the middleware

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        client = request.remote or "unknown"
        if self.limiter.blocked(client):
            return web.Response(status=429, text="too many failed attempts: wait a minute\n")
        if not self.host_ok(request):
            return self._refuse(request, 403, f"Host {request.host!r} on a loopback-only server "
                                "(DNS rebinding?)", count=False)
        if not self.origin_ok(request):
            return self._refuse(request, 403, f"foreign Origin {request.headers['Origin']!r}",
                                count=False)
        path = request.path
        if path == "/favicon.ico":  # asked by every browser; nothing to give, nothing to log
            return web.Response(status=204)
        if path.startswith(ASSETS):
            key = path[len(ASSETS):].split("/", 1)[0]
            if hmac.compare_digest(key.encode(), self.asset_key.encode()):
                return await handler(request)
            return self._refuse(request, 404, "wrong asset key")
        if path.startswith(WEBSOCKET):
            if self.take_ticket(path[len(WEBSOCKET):]):
                return await handler(request)
            return self._refuse(request, 403, "websocket without a valid ticket")
        cookie = request.cookies.get(self.cookie_name)
        if self.cookie_ok(cookie):
            return await handler(request)
        if path == LOGIN and request.method == "POST":
            return await self.login(request)
        token = request.query.get("token")
        if token is not None:
            if not self.secret_ok(token):
                return self._refuse(request, 401, "wrong token")
            return await self._admit(request, handler)
        reason = "no token" if cookie is None else "a cookie this server did not issue"
        return self._refuse(request, 401, reason, count=False)

    async def _admit(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The right token in the URL: a cookie, and the token out of the address bar (except
        in an iframe, where a SameSite=Strict cookie may not stick: the page is served as is)."""
        if request.headers.get("Sec-Fetch-Dest") == "iframe":
            response = await handler(request)
        else:
            query = {k: v for k, v in request.query.items() if k != "token"}
            response = _see_other(request.path + (f"?{urlencode(query)}" if query else ""))
        self.grant(request, response)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        """The login form's POST: the token or password typed in."""
        form = await request.post()
        candidate = form.get("token")
        if not isinstance(candidate, str) or not self.secret_ok(candidate.strip()):
            return self._refuse(request, 401, "wrong token or password at the login form")
        response = _see_other("/")
        self.grant(request, response)
        return response

    def grant(self, request: web.Request, response: web.StreamResponse) -> None:
        secure = request.secure or request.headers.get("X-Forwarded-Proto") == "https"
        response.set_cookie(self.cookie_name, self.make_cookie(), max_age=COOKIE_MAX_AGE,
                            path="/", httponly=True, samesite="Strict", secure=secure)

    def _refuse(self, request: web.Request, status: int, reason: str,
                count: bool = True) -> web.Response:
        client = request.remote or "unknown"
        LOG.warning("refused %s %s from %s: %s", request.method, request.path[:80], client,
                    reason)
        if count and self.limiter.failed(client):
            LOG.warning("%s: %d failed attempts within %.0f s; refusing it for a while", client,
                        self.limiter.max_failures, self.limiter.window)
        if status == 401 and request.path in ("/", LOGIN):
            wrong = reason.startswith("wrong")
            response = web.Response(status=401, content_type="text/html", text=login_page(
                "That token or password is wrong." if wrong else ""))
        else:
            response = web.Response(status=status, text=f"refused: {reason}\n")
        if status == 401 and request.cookies.get(self.cookie_name) is not None:
            response.del_cookie(self.cookie_name, path="/")
        return response
