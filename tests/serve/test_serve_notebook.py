"""`from ctui.notebook import panel; panel()`: a server started once per kernel, the panel in an
iframe (IPython's display, stood in for here), and on Colab its port proxy or what to do."""

from __future__ import annotations

import sys
import types
import urllib.error
import urllib.request

import pytest

from ctui import notebook


@pytest.fixture(autouse=True)
def no_servers_left():
    yield
    notebook.stop()


def get(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def fake_ipython(monkeypatch) -> list:
    shown = []
    display = types.ModuleType("IPython.display")
    display.IFrame = lambda src, width, height: ("iframe", src, width, height)
    display.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython", types.ModuleType("IPython"))
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return shown


def test_panel_shows_an_iframe_of_a_served_panel_and_reuses_its_server(monkeypatch, tmp_path,
                                                                       capsys):
    shown = fake_ipython(monkeypatch)
    url = notebook.panel(runs_dir=str(tmp_path), port=0, height=500)
    assert shown == [("iframe", url, "100%", 500)] and "?token=" in url
    status, page = get(url, **{"Sec-Fetch-Dest": "iframe"})  # what the iframe loads
    assert status == 200 and "/ws/" in page
    assert get(url.split("?")[0])[0] == 401  # and nothing without the token
    assert notebook.panel(runs_dir=str(tmp_path), port=0) == url  # one server per kernel
    assert len(notebook._servers) == 1
    assert "keep the URL to yourself" in capsys.readouterr().out


def fake_colab(monkeypatch, fails: bool) -> list:
    calls = []
    output = types.ModuleType("google.colab.output")
    output.eval_js = lambda code: "https://8080-m-s-abc.prod.colab.dev/"

    def serve_kernel_port_as_iframe(port, path="/", height=400):
        if fails:
            raise RuntimeError("no frontend")
        calls.append((port, path, height))

    output.serve_kernel_port_as_iframe = serve_kernel_port_as_iframe
    colab = types.ModuleType("google.colab")
    colab.output = output
    google = types.ModuleType("google")
    google.colab = colab
    for name, module in (("google", google), ("google.colab", colab),
                         ("google.colab.output", output)):
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_on_colab_the_port_proxy_shows_it(monkeypatch, tmp_path):
    calls = fake_colab(monkeypatch, fails=False)
    url = notebook.panel(runs_dir=str(tmp_path), port=0)
    port = int(url.split(":")[2].split("/")[0])
    assert calls == [(port, "/?" + url.split("?")[1], 640)]
    # the proxy's origin (and Host) are let in; any other origin is not
    proxy = {"Origin": "https://8080-m-s-abc.prod.colab.dev",
             "Host": "8080-m-s-abc.prod.colab.dev", "Sec-Fetch-Dest": "iframe"}
    assert get(url, **proxy)[0] == 200
    assert get(url, **{**proxy, "Origin": "https://evil.example"})[0] == 403


def test_on_colab_without_a_frontend_it_says_what_to_do(monkeypatch, tmp_path, capsys):
    fake_colab(monkeypatch, fails=True)
    notebook.panel(runs_dir=str(tmp_path), port=0)
    said = capsys.readouterr().out
    assert "serve_kernel_port_as_window(" in said and "?token=" in said


def test_a_taken_port_falls_back_to_a_free_one(monkeypatch, tmp_path, capsys):
    import socket

    fake_ipython(monkeypatch)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        url = notebook.panel(runs_dir=str(tmp_path), port=port)
    assert f":{port}/" not in url and get(url, **{"Sec-Fetch-Dest": "iframe"})[0] == 200
    assert f"port {port} is taken" in capsys.readouterr().out
