"""The host panel: per-core CPU bars, total CPU, RAM, load and the DataLoader workers."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text

from .fitted import FittedStatic
from .format import bar, core_bars, used_of
from .model import RunModel
from .process_panel import program_workers


class HostPanel(FittedStatic):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.border_title = "Host"

    def show(self, model: RunModel) -> None:
        # drawn from (gpu_history follows the telemetry): the same between samples
        self.show_drawn_from((model.telemetry, model.settings, model.program_run, self.size.width),
                             lambda: self._render_model(model))

    def _render_model(self, model: RunModel) -> Group | Text:
        host = model.telemetry.host if model.telemetry else None
        if host is None:
            return Text("reading the host…", style="dim")
        cpu = Text(f"CPU {host.cpu_percent:3.0f}% ")
        cpu.append_text(core_bars(host.per_core_percent))
        cpu.append(f" {len(host.per_core_percent)} cores", style="dim")
        cpu.no_wrap, cpu.overflow = True, "ellipsis"
        ram = Text("RAM ")
        ram.append_text(bar(host.ram_used_mb / host.ram_total_mb if host.ram_total_mb else None,
                            8))
        ram.append(f" {used_of(host.ram_used_mb, host.ram_total_mb)}")
        load = "n/a" if host.load_average is None else " ".join(
            f"{value:.2f}" for value in host.load_average)
        if model.program_run:  # its processes are not all workers: count those named so
            workers = program_workers(model)
        elif host.workers is None:
            workers = Text("workers: n/a", style="dim")
        else:
            workers = Text(worker_count(host.workers, model))
            if host.workers_cpu_percent is not None:
                workers.append(f" using {host.workers_cpu_percent:.0f}% CPU")
        return Group(cpu, ram, Text(f"load {load}"), workers)


def worker_count(processes: int, model: RunModel) -> str:
    """'workers 2', or 'workers 2 + 2 eval' when the test loader's workers (kept alive between
    evaluations) are there too, so the count matches the num_workers setting."""
    settings = model.settings
    if settings is not None and settings.num_workers and \
            processes == 2 * settings.num_workers and not model.program_run:
        return f"workers {settings.num_workers} + {settings.num_workers} eval"
    return f"workers {processes}"

