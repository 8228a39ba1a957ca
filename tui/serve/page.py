"""The two pages `ctui serve` writes: the panel (textual-serve's page, trimmed: no web fonts
fetched from elsewhere, and a websocket address the browser builds from its own, so an SSH
forward to another port or an https proxy in front works) and the login form."""

from __future__ import annotations

import html
from string import Template

PANEL = Template("""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<link rel="stylesheet" href="$assets/css/xterm.css">
<script src="$assets/js/textual.js"></script>
<style>
body { background: #0c181f; margin: 0; }
.dialog { position: absolute; width: 100vw; height: 100vh; display: flex; align-items: center;
  justify-content: center; z-index: 10; color: #eee; font-family: monospace; }
.closed { display: none; }
body.-first-byte .intro { display: none; }
body.-closed .closed { display: flex; flex-direction: column; }
body .textual-terminal { opacity: 0; }
body.-first-byte .textual-terminal { opacity: 1; }
button { padding: 12px 24px; margin: 12px; background: #5e0ba7; color: #fff; border: none; }
#start { display: none; }
</style>
</head>
<body>
<div class="dialog intro">$title: connecting...</div>
<div class="dialog closed"><div>Session ended: training goes on.</div>
<button type="button" onclick="window.location.reload()">Open the panel again</button></div>
<div id="start"></div>
<div id="terminal" class="textual-terminal" data-font-size="$font_size"></div>
<script>
(function () {
  var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  document.getElementById("terminal").dataset.sessionWebsocketUrl =
    scheme + "//" + window.location.host + "$websocket";
})();
</script>
</body>
</html>
""")

LOGIN = Template("""<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>ctui: sign in</title></head>
<body style="font-family: monospace; background: #0c181f; color: #eee; padding: 2em">
<p>This ctui panel needs the token that <code>ctui serve</code> printed (the part after
<code>?token=</code>), or the password of its <code>--password-file</code>.</p>
<p style="color: #f88">$message</p>
<form method="post" action="/login">
<input type="password" name="token" autofocus autocomplete="current-password" size="40">
<button type="submit">Open the panel</button>
</form>
</body>
</html>
""")


def panel_page(title: str, assets: str, websocket: str, font_size: int) -> str:
    """`assets` and `websocket` are paths this server made (URL-safe characters only)."""
    return PANEL.substitute(title=html.escape(title), assets=assets, websocket=websocket,
                            font_size=font_size)


def login_page(message: str = "") -> str:
    return LOGIN.substitute(message=html.escape(message))
