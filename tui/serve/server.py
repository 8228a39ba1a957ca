"""textual-serve's Server with ctui's guard in front: each browser session is a panel process
of its own (an ordinary panel attached to the run host), so tabs and terminals share a run."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web
from textual_serve.server import Server, to_int

from .guard import ASSETS, LOGIN, WEBSOCKET, Guard
from .page import panel_page

MAX_REQUEST_BYTES = 64 * 1024  # the login form is the only body a client sends


class PanelServer(Server):
    def __init__(self, command: str, guard: Guard, title: str = "ctui") -> None:
        super().__init__(command, title=title)
        self.guard = guard
        self._sessions: set[asyncio.Task] = set()

    async def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard.middleware],
                              client_max_size=MAX_REQUEST_BYTES)
        app.add_routes([
            web.get("/", self.handle_index),
            web.post(LOGIN, self.guard.login),
            web.get(WEBSOCKET + "{ticket}", self.handle_session),
            web.static(ASSETS + self.guard.asset_key, self.statics_path),
        ])
        app.on_response_prepare.append(_private_headers)
        app.on_shutdown.append(self._end_sessions)
        return app

    async def handle_session(self, request: web.Request) -> web.StreamResponse:
        """textual-serve's websocket handler, remembered so a shutdown can end it at once."""
        task = asyncio.current_task()
        self._sessions.add(task)
        try:
            return await self.handle_websocket(request)
        finally:
            self._sessions.discard(task)

    async def _end_sessions(self, app: web.Application) -> None:
        # cancelled, textual-serve closes the browser's socket and tells the panel to quit
        for task in list(self._sessions):
            task.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    async def handle_index(self, request: web.Request) -> web.Response:  # type: ignore[override]
        page = panel_page(self.title, ASSETS + self.guard.asset_key,
                          WEBSOCKET + self.guard.new_ticket(),
                          to_int(request.query.get("fontsize", "16"), 16))
        return web.Response(text=page, content_type="text/html")

    def run(self, sock: socket.socket) -> None:
        """Serve on an already bound socket until SIGINT or SIGTERM."""
        web.run_app(self.make_app(), sock=sock, print=None, access_log=None,
                    shutdown_timeout=5)


async def _private_headers(request: web.Request, response: web.StreamResponse) -> None:
    # the page carries a ticket; the token may be in an iframe's URL: neither may leak on
    cache = "private, max-age=3600" if request.path.startswith(ASSETS) else "no-store"
    response.headers.setdefault("Cache-Control", cache)
    # same-origin, not no-referrer: with no-referrer Chrome sends `Origin: null` on the login form
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
