"""`ctui serve` in a real headless browser (the system's Chromium, driven by Playwright): the
panel loads with the token and shows the run, a key pauses and resumes it for every tab (and
`ctui pause` in a terminal for both), and a browser without the token, or with another
server's cookie, gets only the login form."""

from __future__ import annotations

import re

import pytest
from browsing import Serve, ctui, launch, open_panel, start_run, stop_run, why_no_browser

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(why_no_browser() is not None,
                                 reason=f"browser tests skipped: {why_no_browser()}")]

FIRST_EPOCH_ROW = re.compile(r"^\s+1\s+\d+\.\d+\s+\d+\.\d+\s+[\d,]+", re.MULTILINE)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve")
    # small fake epochs: the table has rows within seconds, even on a busy machine
    run_dir = start_run(folder / "runs", 1000, "--task", "fake", "--fake-size", "256",
                        "--test-batch-size", "256")
    server = Serve(folder / "runs", folder / "serve.log")
    server.run_dir = run_dir
    try:
        yield server
    finally:
        server.close()
        stop_run(run_dir)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser):
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    yield context
    context.close()


def test_the_panel_loads_with_the_token_and_shows_the_run(served, context):
    tab = open_panel(context, served.url)
    assert "token=" not in tab.page.url  # the token left the address bar for a cookie
    screen = tab.wait_for(lambda text: FIRST_EPOCH_ROW.search(text) is not None)
    assert state("running")(screen)
    for shown in ("Training · fake-", "Host", "CPU", "RAM", "Epochs", "samples/s",
                  "p pause"):
        assert shown in screen


def state(word: str):
    """The run's state as the Training block's first line shows it (the log keeps old words)."""
    return lambda text: re.match(rf"\s*{word}\b", text.splitlines()[1]) is not None


def test_a_key_pauses_and_resumes_the_run_for_every_tab(served, context):
    first = open_panel(context, served.url)
    first.wait_for(state("running"))
    first.press("p")
    first.wait_for(state("paused"), timeout=30)
    second = open_panel(context, served.base)  # the cookie is enough for another tab
    second.wait_for(state("paused"), timeout=60)
    second.press("p")
    first.wait_for(state("running"), timeout=30)
    second.wait_for(state("running"), timeout=30)
    # a terminal command is one more client of the same run: both tabs follow it
    assert ctui("pause", str(served.run_dir)).returncode == 0
    first.wait_for(state("paused"), timeout=30)
    second.wait_for(state("paused"), timeout=30)
    assert ctui("resume", str(served.run_dir)).returncode == 0
    first.wait_for(state("running"), timeout=30)


def test_without_the_token_a_browser_gets_only_the_login_form(served, context):
    tab = open_panel(context, served.base)
    assert tab.page.locator("input[name=token]").is_visible()
    wrong = tab.page.goto(served.base + "?token=guess")
    assert wrong.status == 401 and "wrong" in tab.page.content()
    assert tab.page.evaluate("window.__ctui.opened") == 0  # no websocket was even tried
    tab.page.fill("input[name=token]", served.url.split("token=", 1)[1])
    with tab.page.expect_navigation(url=served.base):  # the form's POST, then its redirect
        tab.page.keyboard.press("Enter")
    tab.wait_for("Training · fake-")


def test_a_cookie_from_another_server_opens_nothing(served, context, tmp_path):
    tab = open_panel(context, served.url)
    tab.wait_for("Training · ")
    (cookie,) = [c for c in context.cookies() if c["name"] == f"ctui-{served.port}"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    other = Serve(tmp_path / "runs", tmp_path / "other.log")
    try:
        context.add_cookies([{**cookie, "name": f"ctui-{other.port}"}])
        replay = open_panel(context, other.base)
        assert replay.page.locator("input[name=token]").is_visible()
        assert replay.page.evaluate("window.__ctui.opened") == 0
    finally:
        other.close()
    assert "a cookie this server did not issue" in (tmp_path / "other.log").read_text()


def test_stopping_the_server_ends_its_panels_not_the_run(served, context, tmp_path):
    server = Serve(served.run_dir.parent, tmp_path / "serve.log")
    try:
        tab = open_panel(context, server.url)
        tab.wait_for("Training · fake-")
    finally:
        server.close()
    assert server.process.returncode == 0
    tab.page.wait_for_function("document.body.classList.contains('-closed')", timeout=30_000)
    assert not (served.run_dir / "end.json").exists()
    listing = ctui("ls", "--runs-dir", str(served.run_dir.parent))
    assert served.run_dir.name in listing.stdout and "live" in listing.stdout


def test_a_tab_on_a_folder_with_no_live_run_starts_no_training(context, tmp_path):
    """Opening the URL (or reloading, or a second tab) where nothing is training must not start
    a run on the box: the panel says how to start one, and two tabs leave the folder empty."""
    runs = tmp_path / "runs"
    runs.mkdir()
    server = Serve(runs, tmp_path / "serve.log")
    try:
        first = open_panel(context, server.url)
        first.wait_for("No run is training.", timeout=60)
        second = open_panel(context, server.base)
        second.wait_for("No run is training.", timeout=60)
        assert list(runs.iterdir()) == []
    finally:
        server.close()
