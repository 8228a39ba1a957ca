"""Make assets/browser.png, the README's picture of the panel in a browser: a digits run a few
epochs in, served by `ctui serve`, shot by the system's headless Chromium.

    python tests/serve/make_browser_screenshot.py [--epochs-shown 5]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from browsing import REPO, Serve, launch, open_panel, start_run, stop_run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs-shown", type=int, default=5)
    parser.add_argument("--out", default=str(REPO / "assets" / "browser.png"))
    options = parser.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    row = re.compile(rf"^\s+{options.epochs_shown}\s+\d+\.\d+", re.MULTILINE)
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        runs = Path(folder) / "runs"
        run_dir = start_run(runs, 60)
        server = Serve(runs, Path(folder) / "serve.log")
        try:
            browser = launch(playwright)
            context = browser.new_context(viewport={"width": 1100, "height": 620})
            tab = open_panel(context, server.url)
            tab.wait_for(lambda text: row.search(text) is not None, timeout=900)
            tab.page.wait_for_timeout(1500)  # a redraw with the newest gauges
            shot = Path(folder) / "shot.png"
            tab.page.screenshot(path=str(shot))
            browser.close()
        finally:
            server.close()
            stop_run(run_dir)
        image = Image.open(shot).convert("RGB").quantize(colors=64)  # a small file
        image.save(options.out, optimize=True)
    print(f"wrote {options.out} ({Path(options.out).stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
