"""The panel's GPU gauges from the real NVML on a real GPU. Skipped without CUDA (CI has none)."""

from __future__ import annotations

import asyncio

import pytest
import torch
from conftest import make_app, shown, until

from ctui.engine.telemetry import Telemetry
from ctui.tui.gpu_panel import GpuPanel

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_gauges_show_the_real_gpu_and_its_memory():
    name = torch.cuda.get_device_name(0)
    block = torch.empty(2**30, dtype=torch.uint8, device="cuda")  # 1 GiB this process holds
    app, _ = make_app(telemetry=lambda emit: Telemetry(emit=emit, interval=0.2))

    async def test():
        async with app.run_test(size=(100, 30)) as pilot:
            await until(pilot, lambda: app.model.telemetry is not None
                        and bool(app.model.telemetry.gpus), timeout=10)
            app.redraw(force=True)
            await pilot.pause()
            reading = app.model.telemetry.gpus[0]
            text = shown(app.query_one(GpuPanel))
            assert reading.memory_used_mb >= 1024 and reading.utilization_percent is not None
            assert name[:10] in text, text
            assert "GiB" in text or "MiB" in text, text

    asyncio.run(test())
    del block
