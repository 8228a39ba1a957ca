"""The CUDA paths: mixed precision, pinned memory, GPU timing, real out-of-memory recovery,
NVML readings and resume on the GPU. Skipped where there is no CUDA GPU (CI has none); run them
on a GPU box with `python -m pytest tests/test_cuda.py -v`."""

from __future__ import annotations

import os

import pytest
import torch

from ctui.engine import Engine, State
from ctui.engine.events import EpochEnded, LogLine, SetBatchSize, Settings, StepLogged

from helpers import run_ctui, tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def finished_run(config, **engine_args) -> Engine:
    engine = Engine(config, **engine_args)
    engine.start().wait()
    failures = [e.message for e in engine.history if e.kind == "error"]
    assert engine.state == State.FINISHED, failures
    return engine


def epochs_of(engine: Engine) -> list[EpochEnded]:
    return [e for e in engine.history if isinstance(e, EpochEnded)]


def test_bf16_autocast_trains_and_reports_gpu_figures():
    engine = finished_run(tiny(device="cuda", amp=True, epochs=3, batch_size=64))
    assert engine.placement.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    epochs = epochs_of(engine)
    assert epochs[-1].test_accuracy >= 0.9
    for epoch in epochs:
        assert epoch.peak_gpu_memory_mb > 0
        assert epoch.train_seconds > 0 and epoch.samples_per_second > 0
        assert 0.0 <= epoch.data_wait_fraction < 1.0


def test_fp16_with_a_grad_scaler_when_bf16_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    engine = finished_run(tiny(device="cuda", amp=True, epochs=3, batch_size=64))
    assert engine.placement.precision == "fp16"
    assert engine.trainer.scaler.is_enabled()
    assert engine.trainer.scaler.get_scale() > 0
    losses = [e.loss for e in engine.history if isinstance(e, StepLogged)]
    assert all(loss == loss and abs(loss) != float("inf") for loss in losses)
    assert epochs_of(engine)[-1].test_accuracy >= 0.9


@pytest.mark.parametrize("workers", [0, 2])
def test_batches_come_pinned_and_train_on_the_gpu(workers):
    engine = finished_run(tiny(device="cuda", num_workers=workers))
    trainer = engine.trainer
    loader = trainer.train_loader()
    assert loader.pin_memory
    data, _ = next(iter(loader))
    assert data.is_pinned()
    assert next(trainer.model.parameters()).device.type == "cuda"
    trainer.close_loaders()


def test_the_gpu_timing_covers_the_epoch():
    """Compute time comes from CUDA events read at the log interval, data wait from the host
    clock: summed over the epoch they must account for most of its wall time, never more."""
    engine = finished_run(tiny(device="cuda", epochs=1, batch_size=32, log_interval=5))
    steps = [e for e in engine.history if isinstance(e, StepLogged)]
    seen, timed = 0, 0.0
    for step in steps:
        timed += (step.samples_seen - seen) / step.samples_per_second
        seen = step.samples_seen
    epoch = epochs_of(engine)[0]
    assert seen == 1437
    assert 0.5 * epoch.train_seconds <= timed <= 1.02 * epoch.train_seconds


@pytest.fixture
def small_gpu():
    """This process may use only ~1 GiB of the GPU, so a large batch truly runs out of memory."""
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2**30 / total))
    yield
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def test_a_real_out_of_memory_rolls_back_and_loses_nothing(small_gpu):
    # 3x128x128 FakeData: batch 8 fits in 1 GiB; batch 1024 needs ~2 GiB for one activation.
    config = tiny(task="fake", fake_size=2048, fake_image_shape=(3, 128, 128), device="cuda",
                  batch_size=8, test_batch_size=8, log_interval=1)
    engine = Engine(config)
    engine.start()
    sent = False
    for event in engine.events():
        if isinstance(event, StepLogged) and not sent:
            engine.send(SetBatchSize(1024))
            sent = True
    assert engine.wait() == State.FINISHED
    warnings = [e.message for e in engine.history if isinstance(e, LogLine)
                and e.level == "warning"]
    assert any("out of memory at batch size 1024: back to 8" in w for w in warnings), warnings
    assert [e for e in engine.history if isinstance(e, Settings)][-1].batch_size == 8
    steps = [e for e in engine.history if isinstance(e, StepLogged)]
    assert steps[-1].samples_seen == 2048  # every sample of the epoch trained, none twice
    assert steps[-1].global_step == 2048 // 8


def test_nvml_reads_the_gpu_this_process_uses():
    from ctui.engine.gpu_utilisation import GpuUtilisation
    from ctui.engine.telemetry import GpuSampler

    sampler = GpuSampler()
    assert sampler.available, sampler.note
    before = sampler.sample([os.getpid()])[0]
    block = torch.empty(2**30, dtype=torch.uint8, device="cuda")  # 1 GiB
    torch.cuda.synchronize()
    after = sampler.sample([os.getpid()])[0]
    del block
    sampler.close()
    assert after.memory_total_mb > 0 and after.utilization_percent is not None
    assert after.memory_used_mb - before.memory_used_mb >= 1000
    # Some containers hide per-process memory (None); where NVML gives it, it must count ours.
    assert after.run_memory_mb is None or after.run_memory_mb >= 1024
    busy = GpuUtilisation(torch.device("cuda", 0)).read()
    assert busy is not None and 0.0 <= busy <= 1.0


def test_gpu_utilisation_finds_the_cuda_device_by_uuid():
    import pynvml

    from ctui.engine.gpu_utilisation import GpuUtilisation

    index = GpuUtilisation(torch.device("cuda", 0)).index
    pynvml.nvmlInit()
    nvml_uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
    nvml_uuid = nvml_uuid.decode() if isinstance(nvml_uuid, bytes) else nvml_uuid
    assert nvml_uuid.removeprefix("GPU-") == str(torch.cuda.get_device_properties(0).uuid)


def test_stop_then_resume_on_the_gpu_continues_where_it_stopped(tmp_path):
    config = tiny(device="cuda", epochs=2, batch_size=64, log_interval=1,
                  run_dir=str(tmp_path / "run"))
    engine = Engine(config)
    engine.start()
    for event in engine.events():
        if isinstance(event, StepLogged) and event.global_step == 30:
            engine.stop()
    assert engine.wait() == State.STOPPED
    stopped_at = [e for e in engine.history if isinstance(e, StepLogged)][-1].global_step
    resumed = finished_run(config, resume=True)
    steps = [e for e in resumed.history if isinstance(e, StepLogged)]
    assert 30 <= stopped_at < 46
    assert steps[0].global_step == stopped_at + 1 and steps[-1].global_step == 46
    assert next(resumed.trainer.model.parameters()).device.type == "cuda"
    assert epochs_of(resumed)[-1].test_accuracy >= 0.85


def test_headless_command_on_cuda_prints_peak_gpu_memory(tmp_path):
    result = run_ctui("train", "--headless", "--device", "cuda", "--amp", "--epochs", "1",
                      "--run-dir", str(tmp_path / "run"), "--no-tensorboard")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "peak GPU" in result.stdout and "MiB" in result.stdout


# -- data parallel on GPUs (NCCL): the paths the gloo tests in tests/distributed cannot reach --

def _ddp_job(tmp_path, ranks: str, batch_size: int):
    run_dir = tmp_path / f"ddp-{ranks}"
    result = run_ctui("train", "--headless", "--device", "cuda", "--nproc-per-node", ranks,
                      "--max-restarts", "1", "--epochs", "2", "--batch-size", str(batch_size),
                      "--no-tensorboard", "--run-dir", str(run_dir), timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return run_dir, result.stdout


def test_one_rank_under_the_launcher_trains_with_nccl(tmp_path):
    run_dir, out = _ddp_job(tmp_path, "1", 64)
    assert "(nccl" in out, out
    assert _last_accuracy(run_dir) >= 0.8


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_one_rank_per_gpu_reaches_the_accuracy_of_one_gpu(tmp_path):
    run_dir, out = _ddp_job(tmp_path, "gpu", 32)
    assert f"{torch.cuda.device_count()} ranks (nccl" in out, out
    assert _last_accuracy(run_dir) >= 0.8


def _last_accuracy(run_dir) -> float:
    import json

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["type"] == "epoch"][-1]["test_accuracy"]


# -- `ctui run`: a supervised program's GPU memory per process, from NVML --

def test_the_process_panel_reads_a_programs_gpu_memory_from_nvml():
    import subprocess
    import sys
    import time

    from ctui.engine.program.process_tree import ProcessSampler

    holder = subprocess.Popen(
        [sys.executable, "-c", "import torch, time; x = torch.empty(256 << 20, dtype=torch.uint8,"
         " device='cuda'); torch.cuda.synchronize(); print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        sampler = ProcessSampler()
        rows = sampler.sample(holder.pid)
        time.sleep(0.5)
        rows = sampler.sample(holder.pid)
        (row,) = [row for row in rows if row[0] == holder.pid]
        if row[4] is None:
            pytest.skip("this driver or container does not tell per-process GPU memory")
        assert row[4] >= 256, rows  # MiB: the tensor, plus the CUDA context
    finally:
        holder.kill()
        holder.wait()
