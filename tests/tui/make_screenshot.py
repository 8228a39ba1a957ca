"""Save the README's screenshot, assets/panel.svg: the panel on the recorded digits run with a
fixed H100 reading, through Textual's save_screenshot.

    python tests/tui/make_screenshot.py
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import attached, make_app  # noqa: E402

ASSETS = Path(__file__).resolve().parents[2] / "assets"


async def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    app, _ = make_app(sample="gpu_h100")
    async with app.run_test(size=(120, 36)) as pilot:
        await attached(pilot, app)
        await pilot.pause(0.2)
        app.save_screenshot(filename="panel.svg", path=str(ASSETS))
    print(ASSETS / "panel.svg")


if __name__ == "__main__":
    asyncio.run(main())
