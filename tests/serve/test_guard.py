"""`ctui serve`'s door, through aiohttp's test client: token, cookie, tickets, Origin, Host,
rate limiting. The panel command behind it is a stand-in (`true`); what matters is who gets in."""

from __future__ import annotations

import asyncio
import logging
import re

from aiohttp.test_utils import TestClient, TestServer

from ctui.tui.serve.guard import FailureLimiter, Guard
from ctui.tui.serve.server import PanelServer

SECRET = "s3cret-token-for-tests"


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_guard(**overrides) -> Guard:
    overrides.setdefault("secret", SECRET)
    overrides.setdefault("cookie_name", "ctui-test")
    return Guard(**overrides)


def serve(scenario, *guards: Guard) -> None:
    """Run `scenario(client, ...)` against one test server per guard."""
    async def main() -> None:
        clients = []
        for guard in guards or (make_guard(),):
            app = await PanelServer("true", guard).make_app()
            client = TestClient(TestServer(app))
            await client.start_server()
            clients.append(client)
        try:
            await scenario(*clients)
        finally:
            for client in clients:
                await client.close()

    asyncio.run(main())


async def sign_in(client: TestClient) -> str:
    """The cookie the right token earns, after checking how it is set."""
    response = await client.get("/", params={"token": SECRET}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/"
    set_cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    return response.cookies["ctui-test"].value


async def panel_paths(client: TestClient) -> tuple[str, str]:
    """(websocket path, asset prefix) written into the panel page."""
    response = await client.get("/")
    assert response.status == 200
    page = await response.text()
    websocket = re.search(r'"(/ws/[A-Za-z0-9_-]+)"', page).group(1)
    assets = re.search(r'href="(/assets/[0-9a-f]+)/css/xterm.css"', page).group(1)
    return websocket, assets


def test_no_token_gets_the_login_form_not_the_panel():
    async def scenario(client):
        response = await client.get("/")
        assert response.status == 401
        page = await response.text()
        assert 'name="token"' in page and "textual.js" not in page and "/ws/" not in page
        assert (await client.get("/static/js/textual.js")).status == 401  # upstream's path

    serve(scenario)


def test_wrong_token_is_refused_and_logged(caplog):
    async def scenario(client):
        response = await client.get("/", params={"token": SECRET + "x"})
        assert response.status == 401 and "wrong" in await response.text()
        assert "Set-Cookie" not in response.headers

    with caplog.at_level(logging.WARNING, logger="ctui.serve"):
        serve(scenario)
    assert "refused GET / from 127.0.0.1: wrong token" in caplog.text
    assert SECRET not in caplog.text  # neither the guess nor the secret is logged


def test_the_token_gives_a_cookie_and_leaves_the_address_bar():
    async def scenario(client):
        await sign_in(client)
        websocket, assets = await panel_paths(client)  # the cookie alone now opens the panel
        assert (await client.get(assets + "/js/textual.js")).status == 200

    serve(scenario)


def test_an_iframe_gets_the_panel_at_once():
    async def scenario(client):
        response = await client.get("/", params={"token": SECRET},
                                    headers={"Sec-Fetch-Dest": "iframe"}, allow_redirects=False)
        assert response.status == 200 and "/ws/" in await response.text()
        assert "SameSite=Strict" in response.headers["Set-Cookie"]

    serve(scenario)


def test_behind_an_https_proxy_the_cookie_is_secure():
    async def scenario(client):
        response = await client.get("/", params={"token": SECRET}, allow_redirects=False,
                                    headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in response.headers["Set-Cookie"]
        plain = await client.get("/", params={"token": SECRET}, allow_redirects=False)
        assert "Secure" not in plain.headers["Set-Cookie"]

    serve(scenario)


def test_static_files_need_the_pages_key():
    async def scenario(client):
        assert (await client.get("/assets/" + "0" * 32 + "/js/textual.js")).status == 404
        await sign_in(client)
        assert (await client.get("/assets/" + "0" * 32 + "/js/textual.js")).status == 404

    serve(scenario)


def test_the_websocket_needs_a_fresh_ticket_from_an_authorised_page():
    async def scenario(client):
        assert (await client.get("/ws/made-up-ticket")).status == 403
        await sign_in(client)
        websocket, _ = await panel_paths(client)
        socket = await client.ws_connect(websocket)  # the upgrade succeeds
        await socket.close()
        replay = await client.get(websocket)  # a ticket is good once
        assert replay.status == 403

    serve(scenario)


def test_a_foreign_origin_is_refused_even_with_a_valid_cookie_and_ticket():
    async def scenario(client):
        await sign_in(client)
        evil = {"Origin": "http://evil.example"}
        assert (await client.get("/", headers=evil)).status == 403
        websocket, _ = await panel_paths(client)
        assert (await client.get(websocket, headers=evil)).status == 403
        same = {"Origin": f"http://{client.host}:{client.port}"}
        socket = await client.ws_connect(websocket, headers=same)  # ticket kept for this
        await socket.close()
        assert (await client.post("/login", data={"token": SECRET}, headers=evil)).status == 403

    serve(scenario)


def test_malformed_host_and_origin_headers_are_refused_not_crashed_on():
    async def scenario(client):
        await sign_in(client)
        assert (await client.get("/", headers={"Origin": "http://[::1"})).status == 403
        assert (await client.get("/", headers={"Host": "[::1"})).status == 403
        assert (await client.get("/", headers={"Origin": "null"})).status == 403

    serve(scenario)


def test_an_allowed_proxy_origin_gets_in():
    async def scenario(client):
        await sign_in(client)
        proxy = {"Origin": "https://8080-proxy.example"}
        assert (await client.get("/", headers=proxy)).status == 200

    serve(scenario, make_guard(extra_origins=frozenset({"https://8080-proxy.example"})))


def test_a_loopback_server_refuses_other_host_names():
    async def scenario(client):
        response = await client.get("/", params={"token": SECRET},
                                    headers={"Host": "rebound.evil.example"})
        assert response.status == 403

    serve(scenario)


def test_a_cookie_from_another_server_opens_nothing():
    async def scenario(first, second):
        cookie = await sign_in(first)
        second.session.cookie_jar.clear()
        response = await second.get("/", cookies={"ctui-test": cookie})
        assert response.status == 401
        assert "ctui-test=\"\"" in response.headers["Set-Cookie"]  # and is cleared

    serve(scenario, make_guard(), make_guard())


def test_a_cookie_expires_after_a_week():
    clock = Clock()

    async def scenario(client):
        await sign_in(client)
        clock.now += 6 * 24 * 3600
        assert (await client.get("/")).status == 200
        clock.now += 2 * 24 * 3600
        assert (await client.get("/")).status == 401

    serve(scenario, make_guard(clock=clock))


def test_the_login_form():
    async def scenario(client):
        wrong = await client.post("/login", data={"token": "guess"}, allow_redirects=False)
        assert wrong.status == 401 and 'name="token"' in await wrong.text()
        right = await client.post("/login", data={"token": SECRET}, allow_redirects=False)
        assert right.status == 303 and "ctui-test" in right.cookies
        assert (await client.get("/")).status == 200

    serve(scenario)


def test_failed_attempts_are_rate_limited_per_address(caplog):
    clock = Clock(1000.0)

    async def scenario(client):
        for _ in range(5):
            assert (await client.get("/", params={"token": "guess"})).status == 401
        blocked = await client.get("/", params={"token": SECRET}, allow_redirects=False)
        assert blocked.status == 429  # even the right token, while blocked
        clock.now += 61
        assert (await client.get("/", params={"token": SECRET},
                                 allow_redirects=False)).status == 303

    with caplog.at_level(logging.WARNING, logger="ctui.serve"):
        serve(scenario, make_guard(limiter=FailureLimiter(5, 60.0, clock=clock)))
    assert "5 failed attempts within 60 s" in caplog.text


def test_the_limiter_forgets_old_failures_and_caps_its_memory():
    clock = Clock(0.0)
    limiter = FailureLimiter(2, 10.0, clock=clock)
    assert not limiter.failed("a") and limiter.failed("a") and limiter.blocked("a")
    assert not limiter.blocked("b")
    clock.now = 11
    assert not limiter.blocked("a")
    limiter.MAX_CLIENTS = 3
    for client in "wxyz":
        limiter.failed(client)
    assert len(limiter._failures) == 3
