"""GPU and host sampling: NVML read through a stand-in module, psutil for real."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import psutil
import pytest

from ctui.engine import telemetry
from ctui.engine.telemetry import GpuSampler, HostSampler, Snapshot, Telemetry, descendant_pids

MIB = 1024 * 1024


class NVMLError(Exception):
    pass


class FakeNvml:
    """The calls ctui makes of pynvml, for two GPUs: an H100 that answers everything and a
    consumer card that supports neither power readings nor per-process memory."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, run_pid: int) -> None:
        self.calls: dict[str, int] = {}
        self.run_pid = run_pid
        self.shut_down = False

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def nvmlInit(self):
        self._count("init")

    def nvmlShutdown(self):
        self.shut_down = True

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, index):
        self._count("handle")
        return f"handle{index}"

    def nvmlDeviceGetName(self, handle):
        return {"handle0": "NVIDIA H100 80GB HBM3", "handle1": b"NVIDIA GeForce GTX 1080"}[handle]

    def nvmlDeviceGetUUID(self, handle):
        return {"handle0": "GPU-aaaa", "handle1": b"GPU-bbbb"}[handle]

    def nvmlDeviceGetMemoryInfo(self, handle):
        return SimpleNamespace(used=12 * 1024 * MIB, total=80 * 1024 * MIB)

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=87, memory=40)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 61

    def nvmlDeviceGetPowerUsage(self, handle):
        if handle == "handle1":
            raise NVMLError("Not Supported")
        return 412_500

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        if handle == "handle1":
            raise NVMLError("Not Supported")
        return 700_000

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        if handle == "handle1":
            return [SimpleNamespace(pid=self.run_pid, usedGpuMemory=None)]
        return [SimpleNamespace(pid=self.run_pid, usedGpuMemory=10 * 1024 * MIB),
                SimpleNamespace(pid=999_999, usedGpuMemory=2 * 1024 * MIB)]  # another user's


def test_one_gpu_is_found_by_uuid_and_read_alone():
    # The advisor's reader: CUDA's device numbering differs from NVML's, so it goes by UUID.
    sampler = GpuSampler(FakeNvml(run_pid=4242))
    assert sampler.index_of("GPU-bbbb") == 1 and sampler.index_of("GPU-none") is None
    assert sampler.utilisation(1) == 0.87 and sampler.utilisation(7) is None


def test_gpu_readings_with_unavailable_values_as_none():
    nvml = FakeNvml(run_pid=4242)
    sampler = GpuSampler(nvml)
    first, second = sampler.sample({4242})
    assert first.name == "NVIDIA H100 80GB HBM3"
    assert (first.utilization_percent, first.temperature_c) == (87.0, 61.0)
    assert (first.power_w, first.power_limit_w) == (412.5, 700.0)
    assert (first.memory_used_mb, first.memory_total_mb) == (12 * 1024, 80 * 1024)
    assert first.run_memory_mb == 10 * 1024  # this run's process only
    assert second.name == "NVIDIA GeForce GTX 1080"
    assert second.power_w is None and second.power_limit_w is None
    assert second.run_memory_mb is None
    assert sampler.sample(None)[0].run_memory_mb is None  # no run attached
    sampler.sample({4242})
    assert nvml.calls == {"init": 1, "handle": 2}  # handles opened once, not per sample
    sampler.close()
    assert nvml.shut_down


def test_no_nvml_gives_one_line_and_no_gpus():
    class Missing:
        def nvmlInit(self):
            raise NVMLError("NVML Shared Library Not Found")

    sampler = GpuSampler(Missing())
    assert not sampler.available
    assert sampler.sample({1}) == ()
    assert sampler.note == "no NVIDIA GPU found (NVML: NVML Shared Library Not Found)"


def test_host_reading_counts_the_runs_worker_processes():
    code = "import time; time.sleep(30)"
    workers = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
    try:
        sampler = HostSampler()
        reading, run_pids = sampler.sample(os.getpid())
        assert reading.workers == 2
        assert run_pids == {os.getpid(), *(worker.pid for worker in workers)}
        assert len(reading.per_core_percent) == os.cpu_count()
        assert 0 < reading.ram_used_mb < reading.ram_total_mb
        reading, _ = sampler.sample(None)
        assert reading.workers is None
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


# A worker that starts a process of its own and waits for it (a DataLoader worker's helper).
PARENT = ("import subprocess, sys, time; "
          "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); time.sleep(30)")


def started_tree(count: int) -> tuple[list[subprocess.Popen], set[int]]:
    """`count` children of this process, each with a child of its own; all their pids."""
    parents = [subprocess.Popen([sys.executable, "-c", PARENT]) for _ in range(count)]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pids = {child.pid for child in psutil.Process().children(recursive=True)}
        if len(pids) >= 2 * count:
            return parents, pids
        time.sleep(0.05)
    raise AssertionError("the grandchildren did not start")


def stop(parents: list[subprocess.Popen]) -> None:
    for parent in parents:
        for child in psutil.Process(parent.pid).children():
            child.kill()
        parent.kill()
        parent.wait()


@pytest.mark.parametrize("children_lists", [True, False], ids=["proc children", "psutil scan"])
def test_the_run_is_the_host_and_all_its_descendants(monkeypatch, children_lists):
    """Grandchildren count as the run's (a worker's own helper process holds GPU memory too),
    whether Linux's per-thread children lists are read or psutil scans every process."""
    if not children_lists:
        monkeypatch.setattr(telemetry, "descendant_pids", lambda pid: None)
    parents, pids = started_tree(2)
    try:
        reading, run_pids = HostSampler().sample(os.getpid())
        assert run_pids == {os.getpid(), *pids}
        assert reading.workers == 4
    finally:
        stop(parents)


WORKED = ("import sys, time\nstart = time.process_time()\n"
          "while time.process_time() - start < 0.2: pass\n"
          "print('worked', flush=True); time.sleep(30)")


def test_a_worker_seen_for_the_first_time_shows_the_cpu_it_has_used():
    """Workers of a DataLoader without persistent_workers live one epoch: each sample may see
    only new ones, so a first sight must not read 0% for a worker that has been working."""
    worker = subprocess.Popen([sys.executable, "-c", WORKED], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "worked"
        reading, _ = HostSampler().sample(os.getpid())
        assert reading.workers == 1 and reading.workers_cpu_percent > 0
    finally:
        worker.kill()
        worker.wait()


def test_a_programs_process_panel_shows_every_descendant_and_new_ones_cpu():
    """`ctui run`'s process panel: the program's grandchildren are rows too, and a process seen
    for the first time shows the CPU it has used, not 0%."""
    from ctui.engine.program.process_tree import ProcessSampler

    parents, pids = started_tree(1)
    worker = subprocess.Popen([sys.executable, "-c", WORKED], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "worked"
        rows = ProcessSampler(nvml=object()).sample(os.getpid())  # a stand-in: no NVML
        cpu = {pid: percent for pid, _, percent, _, _ in rows}
        assert set(cpu) == {os.getpid(), worker.pid, *pids}
        assert cpu[worker.pid] > 0
    finally:
        worker.kill()
        worker.wait()
        stop(parents)


def test_descendants_are_read_from_the_kernels_children_lists():
    if not os.path.isfile(f"/proc/{os.getpid()}/task/{os.getpid()}/children"):
        pytest.skip("this kernel keeps no per-thread children lists")
    parents, pids = started_tree(3)
    try:
        assert descendant_pids(os.getpid()) == pids
        (grandchild,) = psutil.Process(parents[0].pid).children()
        assert descendant_pids(parents[0].pid) == {grandchild.pid}
    finally:
        stop(parents)


def test_without_children_lists_the_descendants_are_unknown(tmp_path):
    """A kernel without them (or a pid that is gone): None, so the sampler asks psutil."""
    assert descendant_pids(os.getpid(), proc=str(tmp_path)) is None
    assert descendant_pids(2**22 + 1) is None


def test_telemetry_reports_from_its_own_thread_until_closed():
    snapshots, threads = [], set()

    def emit(snapshot):
        snapshots.append(snapshot)
        threads.add(threading.current_thread().name)

    nvml = FakeNvml(run_pid=os.getpid())
    telemetry = Telemetry(emit=emit, interval=0.05, pid=os.getpid(), gpu=GpuSampler(nvml))
    telemetry.start()
    deadline = time.monotonic() + 5
    while len(snapshots) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    telemetry.close()
    count = len(snapshots)
    time.sleep(0.15)
    assert count >= 3 and len(snapshots) == count  # nothing after close()
    assert threads == {"ctui-telemetry"}
    assert len(snapshots[-1].gpus) == 2 and snapshots[-1].host.workers == 0
    assert nvml.shut_down


def test_snapshot_round_trips_through_json():
    import json

    nvml = FakeNvml(run_pid=os.getpid())
    snapshot = Telemetry(emit=print, gpu=GpuSampler(nvml), pid=os.getpid()).sample()
    assert Snapshot.from_dict(json.loads(json.dumps(snapshot.to_dict()))) == snapshot
