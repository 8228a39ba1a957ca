"""The GPU panel: one block per GPU, or one line saying why there is none."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from ctui.engine.telemetry import GpuReading

from .fitted import FittedStatic
from .format import bar, na, size, sparkline, used_of
from .model import RunModel

BAR = 10


class GpuPanel(FittedStatic):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "GPU"

    def show(self, model: RunModel) -> None:
        # drawn from (gpu_history follows the telemetry): the same between samples
        self.show_drawn_from((model.telemetry, model.settings, model.program_run, self.size.width),
                             lambda: self._render_model(model))

    def _render_model(self, model: RunModel) -> Group | Text:
        snapshot = model.telemetry
        if snapshot is None:
            return Text("reading GPUs…", style="dim")
        if not snapshot.gpus:
            device = model.settings.device if model.settings else None
            trains = f"training on {device.upper() if device in ('cpu', 'mps') else device}" \
                if device else "training on the CPU or MPS"
            return Text(f"{snapshot.gpu_note or 'No NVIDIA GPU'}; {trains}.", style="yellow")
        compact = len(snapshot.gpus) > 2
        lines = []
        for gpu in snapshot.gpus:
            history = model.gpu_history.get(gpu.index, ())
            lines.extend(self._compact(gpu, history) if compact else self._block(gpu, history))
        return Group(*lines)

    def _block(self, gpu: GpuReading, history) -> list[Text]:
        head = Text(f"{gpu.index} {gpu.name}", style="bold", overflow="ellipsis", no_wrap=True)
        util = Text("util ")
        util.append_text(bar(_fraction(gpu.utilization_percent, 100), BAR))
        util.append(f" {na(gpu.utilization_percent, '{:3.0f}%')} ")
        util.append_text(sparkline(history, max(self.size.width - 24, 4)))
        memory = Text("mem  ")
        memory.append_text(bar(_fraction(gpu.memory_used_mb, gpu.memory_total_mb), BAR))
        memory.append(f" {used_of(gpu.memory_used_mb, gpu.memory_total_mb)}")
        sensors = Text(f"{na(gpu.temperature_c, '{:.0f}°C')}  "
                       f"{na(gpu.power_w)}/{na(gpu.power_limit_w, '{:.0f} W')}  ")
        sensors.append(f"this run {size(gpu.run_memory_mb)}", style="cyan")
        return [head, util, memory, sensors]

    def _compact(self, gpu: GpuReading, history) -> list[Text]:
        line = Text(f"{gpu.index} ", style="bold")
        line.append_text(bar(_fraction(gpu.utilization_percent, 100), 6))
        line.append(f"{na(gpu.utilization_percent, '{:3.0f}%')} "
                    f"{used_of(gpu.memory_used_mb, gpu.memory_total_mb)} "
                    f"run {size(gpu.run_memory_mb)} {na(gpu.temperature_c, '{:.0f}°C')} "
                    f"{na(gpu.power_w, '{:.0f}W')} ")
        line.append_text(sparkline(history, 8))
        line.no_wrap = True
        line.overflow = "ellipsis"
        return [line]


def _fraction(value: float | None, total: float | None) -> float | None:
    if value is None or not total:
        return None
    return value / total
