"""GPU (NVML) and host (psutil) sampling on its own thread, reported as immutable snapshots.

    telemetry = Telemetry(emit=print, interval=1.0, pid=host_pid).start()
    ...
    telemetry.close()

NVML handles are opened once, at start. A value a GPU cannot give (a consumer card without power
readings, a container that hides processes) comes back as None, never as an exception. With no
NVIDIA GPU or no NVML library every snapshot has no GPU readings and `gpu_note` says why.
Nothing here imports torch or Textual.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import first_line

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuReading:
    """One GPU at one moment. None means the GPU could not give that value."""

    index: int
    name: str
    utilization_percent: float | None = None
    memory_used_mb: float | None = None
    memory_total_mb: float | None = None
    temperature_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    run_memory_mb: float | None = None  # this run's processes (the host and its children)


@dataclass(frozen=True)
class HostReading:
    cpu_percent: float
    per_core_percent: tuple[float, ...]
    ram_used_mb: float
    ram_total_mb: float
    load_average: tuple[float, float, float] | None  # None where the OS has none (Windows)
    workers: int | None = None  # DataLoader worker processes of the run; None: no run to watch
    workers_cpu_percent: float | None = None  # summed over workers, 100 = one full core


@dataclass(frozen=True)
class Snapshot:
    """Everything one tick measured."""

    time: float
    gpus: tuple[GpuReading, ...] = ()
    gpu_note: str = ""  # why there are no GPU readings; "" when NVML works
    host: HostReading | None = None

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Snapshot:
        host = data.get("host")
        if host is not None:
            load = host.get("load_average")
            host = HostReading(**{**host, "per_core_percent": tuple(host["per_core_percent"]),
                                  "load_average": tuple(load) if load is not None else None})
        gpus = tuple(GpuReading(**gpu) for gpu in data.get("gpus", ()))
        return cls(time=data["time"], gpus=gpus, gpu_note=data.get("gpu_note", ""), host=host)


# ---------------------------------------------------------------- GPUs


class GpuSampler:
    """Reads every NVIDIA GPU through NVML. `nvml` is the pynvml module (injectable for tests)."""

    def __init__(self, nvml: Any = None) -> None:
        self.note = ""
        self._nvml = None
        self._handles: list[tuple[int, Any, str]] = []
        try:
            if nvml is None:
                import pynvml as nvml  # nvidia-ml-py
            nvml.nvmlInit()
        except ImportError:
            self.note = "nvidia-ml-py is not installed, so GPUs cannot be read"
            return
        except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self.note = f"no NVIDIA GPU found (NVML: {first_line(error)})"
            return
        self._nvml = nvml
        try:
            count = nvml.nvmlDeviceGetCount()
            for index in range(count):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                name = self._read(nvml.nvmlDeviceGetName, handle) or f"GPU {index}"
                if isinstance(name, bytes):
                    name = name.decode(errors="replace")
                self._handles.append((index, handle, name))
        except Exception as error:
            self.note = f"NVML could not list the GPUs: {first_line(error)}"
            self._handles = []
        if not self._handles and not self.note:
            self.note = "no NVIDIA GPU found (NVML sees none)"

    @property
    def available(self) -> bool:
        return bool(self._handles)

    def sample(self, run_pids: Iterable[int] | None = None) -> tuple[GpuReading, ...]:
        """One reading per GPU. run_pids: the run's processes, whose GPU memory is summed."""
        nvml = self._nvml
        if nvml is None:
            return ()
        pids = set(run_pids) if run_pids is not None else None
        readings = []
        for index, handle, name in self._handles:
            memory = self._read(nvml.nvmlDeviceGetMemoryInfo, handle)
            rates = self._read(nvml.nvmlDeviceGetUtilizationRates, handle)
            power = self._read(nvml.nvmlDeviceGetPowerUsage, handle)
            limit = self._read(nvml.nvmlDeviceGetEnforcedPowerLimit, handle)
            readings.append(GpuReading(
                index=index,
                name=name,
                utilization_percent=_number(getattr(rates, "gpu", None)),
                memory_used_mb=_scaled(getattr(memory, "used", None), MIB),
                memory_total_mb=_scaled(getattr(memory, "total", None), MIB),
                temperature_c=_number(self._read(nvml.nvmlDeviceGetTemperature, handle,
                                                 getattr(nvml, "NVML_TEMPERATURE_GPU", 0))),
                power_w=_scaled(power, 1000),
                power_limit_w=_scaled(limit, 1000),
                run_memory_mb=self._run_memory(handle, pids),
            ))
        return tuple(readings)

    def index_of(self, uuid: str) -> int | None:
        """The NVML index of the GPU with this UUID ("GPU-..."): CUDA numbers GPUs differently
        from NVML under CUDA_VISIBLE_DEVICES, so the training GPU is found by UUID."""
        for index, handle, _ in self._handles:
            found = self._read(self._nvml.nvmlDeviceGetUUID, handle)
            if isinstance(found, bytes):
                found = found.decode(errors="replace")
            if found == uuid:
                return index
        return None

    def utilisation(self, index: int) -> float | None:
        """One GPU's utilisation as a fraction (0..1), or None when NVML cannot say."""
        for known, handle, _ in self._handles:
            if known == index:
                rates = self._read(self._nvml.nvmlDeviceGetUtilizationRates, handle)
                percent = _number(getattr(rates, "gpu", None))
                return None if percent is None else percent / 100.0
        return None

    def _run_memory(self, handle: Any, pids: set[int] | None) -> float | None:
        if pids is None:
            return None
        processes = self._read(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        if processes is None:
            return None
        total = 0.0
        for process in processes:
            if getattr(process, "pid", None) in pids:
                used = getattr(process, "usedGpuMemory", None)
                if used is None:  # NVML hides per-process memory here (some containers, WDDM)
                    return None
                total += used / MIB
        return total

    def _read(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except Exception:  # NVMLError_NotSupported, NoPermission, GpuIsLost...: not available
            return None

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._nvml = None
            self._handles = []


# ---------------------------------------------------------------- host


WORKER_NAME = "pt_data_worker"  # torch.utils.data's worker processes, as Linux names them


class HostSampler:
    """CPU, memory, load and the run's DataLoader workers, through psutil."""

    # Children of the run that are not DataLoader workers.
    HELPERS = ("resource_tracker", "wandb", "tensorboard")

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(percpu=True)  # the first call only starts the measuring interval
        self._watched: dict[int, Any] = {}  # pid -> psutil.Process, kept so cpu_percent works

    def sample(self, pid: int | None) -> tuple[HostReading, set[int] | None]:
        """The reading, and the pids of the run (host and descendants) for per-process GPU
        memory; None when there is no run or it is gone."""
        psutil = self._psutil
        per_core = tuple(float(p) for p in psutil.cpu_percent(percpu=True))
        memory = psutil.virtual_memory()
        try:
            load = tuple(round(value, 2) for value in os.getloadavg())
        except (AttributeError, OSError):
            load = None
        workers = workers_cpu = None
        run_pids = None
        if pid is not None:
            workers, workers_cpu, run_pids = self._workers(pid)
        reading = HostReading(
            cpu_percent=sum(per_core) / len(per_core) if per_core else 0.0,
            per_core_percent=per_core,
            ram_used_mb=(memory.total - memory.available) / MIB,
            ram_total_mb=memory.total / MIB,
            load_average=load,
            workers=workers,
            workers_cpu_percent=workers_cpu,
        )
        return reading, run_pids

    def _workers(self, pid: int) -> tuple[int | None, float | None, set[int] | None]:
        psutil = self._psutil
        try:
            children = self._descendants(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None, None, None
        run_pids = {pid} | {child.pid for child in children}
        count, cpu = 0, 0.0
        alive = {}
        named = self._named_workers(children)
        for child in children:
            process = self._watched.get(child.pid, child)
            alive[child.pid] = process
            try:
                if (child.pid not in named) if named is not None else \
                        self._is_helper(process, pid):
                    continue
                percent = process.cpu_percent(None)  # 0.0 the first time a process is seen
                if child.pid not in self._watched:
                    percent = lifetime_percent(process)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            count += 1
            cpu += percent
        self._watched = alive
        return count, cpu, run_pids

    def _descendants(self, pid: int) -> list:
        return descendant_processes(pid, self._watched)

    def _named_workers(self, children: list) -> set[int] | None:
        """The pids of the DataLoader workers by their name (PyTorch names each worker
        process pt_data_worker on Linux), so compile workers, a forkserver or a logger's
        process never count; None where no child carries the name (other systems)."""
        named = set()
        for child in children:
            try:
                if child.name() == WORKER_NAME:
                    named.add(child.pid)
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied,
                    self._psutil.ZombieProcess):
                continue
        return named or None

    def _is_helper(self, process: Any, host_pid: int) -> bool:
        command = " ".join(process.cmdline())
        if any(name in command for name in self.HELPERS):
            return True
        # With the forkserver start method, the server is the host's child and the workers
        # are the server's children (and share its command line).
        return "forkserver" in command and process.ppid() == host_pid


def descendant_processes(pid: int, known: dict[int, Any]) -> list:
    """The processes below `pid` as psutil.Process; those in `known` (pid -> Process, from the
    last sample) are reused, so their cpu_percent measures since then."""
    import psutil

    pids = descendant_pids(pid)
    if pids is None:  # no children lists: psutil reads every process's parent
        return psutil.Process(pid).children(recursive=True)
    children = []
    for child in pids:
        process = known.get(child)
        if process is None:
            try:
                process = psutil.Process(child)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue  # gone since the list was read
        children.append(process)
    return children


def lifetime_percent(process: Any) -> float:
    """A process's CPU since it started, in % of one core. For a worker seen for the first time:
    a DataLoader without persistent_workers (PyTorch's default) starts new workers every epoch,
    and with epochs shorter than a sample each would otherwise always show 0%."""
    times = process.cpu_times()
    age = time.time() - process.create_time()
    return 100.0 * (times.user + times.system) / age if age > 0.01 else 0.0


def descendant_pids(pid: int, proc: str = "/proc") -> set[int] | None:
    """The pids below `pid`, from the children list Linux keeps for each thread; None where
    the kernel keeps none (or `pid` is gone). psutil's children() reads the parent of every
    process on the machine instead: 1 ms a sample with 65 processes, more on a crowded server,
    every second, on the training's cores; this reads only the run's own threads."""
    if not os.path.isfile(f"{proc}/{pid}/task/{pid}/children"):
        return None
    found: set[int] = set()
    parents = [pid]
    while parents:
        parent = parents.pop()
        try:
            threads = os.listdir(f"{proc}/{parent}/task")
        except OSError:  # exited since its parent listed it
            continue
        for thread in threads:
            try:
                with open(f"{proc}/{parent}/task/{thread}/children", "rb") as listing:
                    children = listing.read(1 << 20).split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    parents.append(child)
    return found


# ---------------------------------------------------------------- the thread


@dataclass
class Telemetry:
    """Samples every `interval` seconds on its own thread and calls `emit(snapshot)` there.

    `pid` is the run host's process id (set it when the panel attaches; None: no run).
    The samplers are injectable so tests and screenshots can use recorded readings.
    """

    emit: Callable[[Snapshot], None]
    interval: float = 1.0
    pid: int | None = None
    gpu: GpuSampler | None = None
    host: HostSampler | None = None
    _exit: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> Telemetry:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ctui-telemetry", daemon=True)
            self._thread.start()
        return self

    def sample(self) -> Snapshot:
        if self.gpu is None:
            self.gpu = GpuSampler()
        if self.host is None:
            self.host = HostSampler()
        host, run_pids = self.host.sample(self.pid)
        return Snapshot(time=time.time(), gpus=self.gpu.sample(run_pids), gpu_note=self.gpu.note,
                        host=host)

    def _run(self) -> None:
        while not self._exit.is_set():
            try:
                snapshot = self.sample()
            except Exception as error:  # never take the panel down over a gauge
                snapshot = Snapshot(time=time.time(), gpu_note=f"sampling failed: {error}")
            self.emit(snapshot)
            self._exit.wait(self.interval)

    def close(self) -> None:
        self._exit.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.gpu is not None:
            self.gpu.close()


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _scaled(value: Any, divisor: float) -> float | None:
    return None if value is None else float(value) / divisor
