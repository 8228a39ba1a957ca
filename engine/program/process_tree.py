"""The supervised program's processes: CPU, RAM and GPU memory of each, for the process panel.

psutil for CPU and RSS (each process object kept between samples, so cpu_percent measures the
interval; a process seen for the first time shows its CPU since it started); the tree from
Linux's per-thread children lists, not a scan of every process on the machine; NVML for GPU
memory per process, where the driver tells (a container may hide other processes' memory: then
None, never an error). Torch-free.
"""

from __future__ import annotations

import contextlib
from typing import Any

import psutil

from ..telemetry import MIB, descendant_processes, lifetime_percent

MAX_ROWS = 64  # a program with more processes shows its 64 largest


class ProcessSampler:
    """`sample(root_pid)` -> rows (pid, name, cpu_percent, rss_mb, gpu_memory_mb or None) of
    the program and its descendants, the program first, then by RSS."""

    def __init__(self, nvml: Any = None) -> None:
        self._processes: dict[int, psutil.Process] = {}
        self._nvml = None
        self._handles: list[Any] = []
        try:
            if nvml is None:
                import pynvml as nvml
            nvml.nvmlInit()
            self._handles = [nvml.nvmlDeviceGetHandleByIndex(index)
                             for index in range(nvml.nvmlDeviceGetCount())]
            self._nvml = nvml
        except Exception:  # no library, no driver, no GPU: GPU memory is "not available"
            self._handles = []

    def sample(self, root_pid: int) -> tuple[tuple[int, str, float, float, float | None], ...]:
        try:
            root = self._processes.get(root_pid) or psutil.Process(root_pid)
            tree = [root, *descendant_processes(root_pid, self._processes)]
        except psutil.Error:
            self._processes = {}
            return ()
        gpu = self._gpu_memory()
        rows, alive = [], {}
        for found in tree:
            process = self._processes.get(found.pid, found)
            try:
                with process.oneshot():
                    cpu = process.cpu_percent(None)  # 0.0 the first time a process is seen
                    if process.pid not in self._processes:  # a worker of one short epoch
                        cpu = lifetime_percent(process)
                    rss = process.memory_info().rss / MIB
                    name = process.name()
            except psutil.Error:
                continue
            alive[process.pid] = process
            memory = gpu.get(process.pid) if gpu is not None else None
            if gpu is not None and memory is None and gpu.get(-1) is None:
                memory = 0.0  # NVML lists every process using a GPU: this one uses none
            rows.append((process.pid, name[:40], round(cpu, 1), round(rss, 1), memory))
        self._processes = alive
        first, rest = rows[:1], sorted(rows[1:], key=lambda row: -row[3])
        return tuple(first + rest[: MAX_ROWS - 1])

    def _gpu_memory(self) -> dict[int, float | None] | None:
        """pid -> MiB on all GPUs; None without NVML. Key -1 present (None) when some process's
        memory is hidden: then an unlisted process is unknown, not zero."""
        nvml = self._nvml
        if nvml is None:
            return None
        used: dict[int, float | None] = {}
        for handle in self._handles:
            on_this: dict[int, float | None] = {}  # a process may be listed as both kinds
            for query in ("nvmlDeviceGetComputeRunningProcesses",
                          "nvmlDeviceGetGraphicsRunningProcesses"):
                try:
                    processes = getattr(nvml, query)(handle)
                except Exception:
                    used[-1] = None
                    continue
                for entry in processes:
                    pid, memory = getattr(entry, "pid", None), getattr(entry, "usedGpuMemory", None)
                    if isinstance(pid, int) and on_this.get(pid, 0.0) is not None:
                        on_this[pid] = None if memory is None else max(on_this.get(pid) or 0.0,
                                                                        memory / MIB)
            for pid, memory in on_this.items():
                if memory is None or used.get(pid, 0.0) is None:
                    used[pid] = used[-1] = None
                else:
                    used[pid] = (used.get(pid) or 0.0) + memory
        return used

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
            self._nvml = None
