"""The training loop: device placement, honest timing, evaluation, and its own state for resume.

Runs on the engine thread only. Between steps it calls `boundary()`, where the engine applies
commands (pause, stop, new batch size...) so every change lands on a step boundary; it returns
the seconds it held the loop (paused), which epoch timing leaves out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .config import RunConfig
from .device import Placement
from .events import EpochEnded, Event, StepLogged
from .sampling import ResumableSampler
from .tasks import Task

Emit = Callable[[Event], None]

# The engine warns about more workers than cores itself, once per change, in the run's log.
warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)


class StopTraining(Exception):
    """Raised at a step boundary to leave the loop; the state is consistent for a checkpoint."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Progress:
    """Where the run is: what a checkpoint must record to continue at the exact next step."""

    epoch: int = 1  # the epoch being trained (1-based)
    position: int = 0  # samples of this epoch already trained
    global_step: int = 0
    history: list[dict] = field(default_factory=list)  # one EpochEnded dict per finished epoch


@dataclass
class EpochMeter:
    """Timing and loss of the current epoch; tensors stay on the device until read."""

    data_seconds: float = 0.0
    compute_seconds: float = 0.0
    samples: int = 0
    steps: int = 0
    loss_sum: float = 0.0
    settings_changed: bool = False
    train_seconds: float = 0.0  # wall time, less time spent paused


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) before the model is built, so a run's
    initial weights and dropout masks depend only on the seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: RunConfig, task: Task, placement: Placement, emit: Emit,
                 boundary: Callable[[], float] = lambda: 0.0,
                 after_epoch: Callable[[EpochEnded], None] = lambda event: None) -> None:
        self.config = config
        self.task = task
        self.placement = placement
        self.device = placement.device
        self.emit = emit
        self.boundary = boundary
        self.after_epoch = after_epoch
        self.on_oom: Callable[[int, int], None] = lambda failed, now: None
        self._good_batch_size: int | None = None  # the last batch size a step succeeded with
        # Test hook: fail steps larger than this as if the GPU ran out of memory.
        oom_above = os.environ.get("CTUI_TEST_OOM_ABOVE_BATCH")
        self._oom_above = int(oom_above) if oom_above else None
        self.batch_size = config.batch_size
        self.num_workers = config.num_workers
        self.progress = Progress()

        self.model = task.model.to(self.device)
        self.loss_fn = task.loss or F.cross_entropy
        params = self.model.parameters()
        self.optimizer = (task.optimizer(params) if task.optimizer
                          else torch.optim.Adadelta(params, lr=config.lr))
        self.scheduler = _scheduler(task, self.optimizer, config.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=placement.needs_grad_scaler)
        self.sampler = ResumableSampler(len(task.train_dataset), config.seed)
        # A private generator keeps DataLoader worker seeding off the global RNG, whose state
        # must depend only on the training steps for a resumed run to match an uninterrupted one.
        self.loader_generator = torch.Generator().manual_seed(config.seed)
        self._train_loader: DataLoader | None = None
        self._test_loader: DataLoader | None = None
        self._loader_stale = False
        self._meter: EpochMeter | None = None
        self._interval: _Interval | None = None
        self._epoch_clock = 0.0  # perf_counter at the epoch's start, less time paused
        self._carried: EpochMeter | None = None  # the resumed epoch's figures before the stop
        self._gpu_timer = _GpuTimer() if placement.is_cuda else None

    # ------------------------------------------------------------ loaders

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.sampler.samples_per_epoch / self.batch_size)

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
            num_workers=workers, pin_memory=self.placement.is_cuda,
            persistent_workers=workers > 0, generator=self.loader_generator,
        )

    def train_loader(self) -> DataLoader:
        if self._train_loader is None:
            self._train_loader = self._loader(self.task.train_dataset, self.batch_size,
                                              self.sampler)
        return self._train_loader

    def test_loader(self) -> DataLoader:
        if self._test_loader is None:
            self._test_loader = self._loader(self.task.test_dataset, self.config.test_batch_size)
        return self._test_loader

    def close_loaders(self) -> None:
        """Drop the loaders so their worker processes exit now, not at garbage collection."""
        for loader in (self._train_loader, self._test_loader):
            iterator = getattr(loader, "_iterator", None) if loader is not None else None
            if iterator is not None and hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()
        self._train_loader = self._test_loader = None

    # ------------------------------------------------------------ live settings

    def set_batch_size(self, batch_size: int) -> None:
        if batch_size == self.batch_size:
            return
        if self.config.scale_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = group["lr"] * batch_size / self.batch_size
        self.batch_size = batch_size
        self._settings_changed()

    def set_num_workers(self, num_workers: int) -> None:
        if num_workers == self.num_workers:
            return
        self.num_workers = num_workers
        self._settings_changed()

    def restart_loader(self) -> None:
        """End the current loader (and its workers); the epoch goes on from the same position
        with a new one at the next step."""
        self.close_loaders()
        self._loader_stale = True

    def _settings_changed(self) -> None:
        self.restart_loader()
        if self._meter is not None:
            self._meter.settings_changed = True

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ------------------------------------------------------------ training

    def fit(self) -> None:
        """Train from the current progress to the last epoch. StopTraining leaves it early."""
        try:
            while self.progress.epoch <= self.config.epochs:
                self._train_epoch()
                self._finish_epoch()
        finally:
            self.close_loaders()

    def _autocast(self):
        if self.placement.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.placement.amp_dtype)

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=self.placement.is_cuda)

    def epoch_so_far(self) -> dict | None:
        """The current epoch's figures up to now, for a checkpoint taken inside it, so the
        resumed run records the epoch once with its real figures; None between epochs."""
        meter = self._meter
        if meter is None:
            return None
        figures = dataclasses.asdict(meter)
        figures["train_seconds"] = time.perf_counter() - self._epoch_clock
        if self._interval is not None:  # steps since the last log: not yet in loss_sum
            figures["loss_sum"] += self._interval.peek_total()
        return figures

    def carry_epoch(self, figures: dict | None) -> None:
        """Continue the resumed epoch's figures (epoch_so_far of the checkpoint)."""
        if not figures:
            return
        carried = EpochMeter()
        for field_ in dataclasses.fields(EpochMeter):  # a crafted file gets no odd types in
            value, default = figures.get(field_.name), getattr(carried, field_.name)
            if type(value) is type(default) or (type(default) is float
                                                and type(value) is int):
                setattr(carried, field_.name, value)
        self._carried = carried

    def _train_epoch(self) -> None:
        progress = self.progress
        meter, self._carried = self._carried or EpochMeter(), None
        self._meter = meter
        self.model.train()
        if self.placement.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        gpu_timer = self._gpu_timer
        interval = self._interval = _Interval()
        paused_seconds = 0.0
        epoch_start = time.perf_counter() - meter.train_seconds
        self._epoch_clock = epoch_start
        while progress.position < self.sampler.samples_per_epoch:
            self._loader_stale = False
            self.sampler.set_epoch(progress.epoch, progress.position)
            batches = iter(self.train_loader())
            while not self._loader_stale:
                fetch_start = time.perf_counter()
                try:
                    data, target = next(batches)
                except StopIteration:
                    break
                step_start = time.perf_counter()
                meter.data_seconds += step_start - fetch_start
                interval.data_seconds += step_start - fetch_start
                if gpu_timer is not None:
                    gpu_timer.start()
                try:
                    loss = self.train_step(data, target)
                except torch.OutOfMemoryError:
                    del data, target
                    if gpu_timer is not None:
                        gpu_timer.cancel()
                    self._recover_from_oom()  # the same samples come again, in smaller batches
                    break
                self._good_batch_size = self.batch_size
                if gpu_timer is not None:
                    gpu_timer.stop()
                else:
                    spent = time.perf_counter() - step_start
                    meter.compute_seconds += spent
                    interval.compute_seconds += spent
                count = len(target)
                progress.position += count
                progress.global_step += 1
                meter.samples += count
                meter.steps += 1
                interval.add(loss.detach(), count)
                if meter.steps % self.config.log_interval == 0 or \
                        progress.position >= self.sampler.samples_per_epoch:
                    # Reading GPU timings and the loss synchronises: only at the log interval.
                    gpu = gpu_timer.collect() if gpu_timer is not None else 0.0
                    meter.compute_seconds += gpu
                    interval.compute_seconds += gpu
                    meter.loss_sum += interval.loss_total()
                    self._log_step(meter, interval)
                    interval = self._interval = _Interval()
                paused = self.boundary()
                paused_seconds += paused
                self._epoch_clock += paused
        if gpu_timer is not None:
            torch.cuda.synchronize(self.device)
            meter.compute_seconds += gpu_timer.collect()
        meter.loss_sum += interval.loss_total()
        meter.train_seconds = time.perf_counter() - epoch_start - paused_seconds

    def _recover_from_oom(self) -> None:
        """Free what the failed step held, go back to the last batch size that worked, and let
        the caller retry the same step from the same position in the epoch."""
        failed = self.batch_size
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.placement.is_cuda:
            torch.cuda.empty_cache()
        if self._good_batch_size is None or self._good_batch_size >= failed:
            raise torch.OutOfMemoryError(
                f"out of memory at batch size {failed} with no smaller batch size that worked "
                "before; restart with a smaller --batch-size or --amp")
        self.set_batch_size(self._good_batch_size)
        self.on_oom(failed, self.batch_size)

    def train_step(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One optimisation step on a batch from the loader (moved to the device here); the
        loss stays on the device. Autotune's trials call it as training does."""
        return self._step(self._to_device(data), self._to_device(target))

    def _step(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self._oom_above is not None and len(target) > self._oom_above:
            raise torch.OutOfMemoryError("injected by CTUI_TEST_OOM_ABOVE_BATCH")
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            output = self.model(data)
            loss = self.loss_fn(output, target)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss

    def _log_step(self, meter: EpochMeter, interval: _Interval) -> None:
        spent = interval.data_seconds + interval.compute_seconds
        self.emit(StepLogged(
            epoch=self.progress.epoch, step=meter.steps,
            steps_in_epoch=meter.steps + math.ceil(
                (self.sampler.samples_per_epoch - self.progress.position) / self.batch_size),
            global_step=self.progress.global_step, samples_seen=self.progress.position,
            loss=interval.loss_mean(), samples_per_second=interval.samples / spent if spent else 0,
            data_wait_fraction=interval.data_seconds / spent if spent else 0.0, lr=self.lr,
        ))

    def _finish_epoch(self) -> None:
        meter = self._meter
        eval_start = time.perf_counter()
        test_loss, test_accuracy = self.evaluate()
        eval_seconds = time.perf_counter() - eval_start
        step_seconds = meter.data_seconds + meter.compute_seconds
        event = EpochEnded(
            epoch=self.progress.epoch, epochs=self.config.epochs,
            train_seconds=meter.train_seconds, eval_seconds=eval_seconds,
            samples_per_second=meter.samples / meter.train_seconds if meter.train_seconds else 0.0,
            data_wait_fraction=meter.data_seconds / step_seconds if step_seconds else 0.0,
            train_loss=meter.loss_sum / meter.samples if meter.samples else 0.0,
            test_loss=test_loss, test_accuracy=test_accuracy, lr=self.lr,
            peak_gpu_memory_mb=(torch.cuda.max_memory_allocated(self.device) / 2**20
                                if self.placement.is_cuda else None),
            batch_size=self.batch_size, num_workers=self.num_workers,
            settings_changed=meter.settings_changed, global_step=self.progress.global_step,
        )
        self.scheduler.step()
        self.progress.history.append(event.to_dict())
        self.progress.epoch += 1
        self.progress.position = 0
        self._meter = self._interval = None
        self.emit(event)
        self.after_epoch(event)

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float | None]:
        """Mean test loss and accuracy (None when outputs are not class scores)."""
        self.model.eval()
        loss_total = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        count, classifies = 0, True
        for data, target in self.test_loader():
            data, target = self._to_device(data), self._to_device(target)
            with self._autocast():
                output = self.model(data)
                loss = self.loss_fn(output, target)
            loss_total += loss.double() * len(target)
            classifies = classifies and output.dim() == 2 and not target.is_floating_point()
            if classifies:
                correct += (output.argmax(dim=1) == target).sum()
            count += len(target)
        self.model.train()
        accuracy = correct.item() / count if classifies and count else None
        return loss_total.item() / max(count, 1), accuracy


def _scheduler(task: Task, optimizer: torch.optim.Optimizer, gamma: float):
    """The task's own; else StepLR(gamma) for ctui's default optimizer. A task that brings its
    own optimizer but no scheduler keeps its learning rate: decaying a rate ctui did not choose
    by --gamma every epoch would be a silent surprise."""
    if task.scheduler:
        return task.scheduler(optimizer)
    if task.optimizer:
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=gamma)


class _Interval:
    """Loss and timing since the last logged step. The losses stay on the device, unsummed, until
    read: adding them up as they come would launch kernels every step."""

    def __init__(self) -> None:
        self.data_seconds = 0.0
        self.compute_seconds = 0.0
        self.samples = 0
        self._losses: list[torch.Tensor] = []
        self._counts: list[int] = []
        self._total: float | None = None

    def add(self, loss: torch.Tensor, count: int) -> None:
        self._losses.append(loss)
        self._counts.append(count)
        self.samples += count

    def loss_total(self) -> float:
        """The count-weighted sum of the losses: one device sync, then cached."""
        if self._total is None:
            # One device-to-host copy; the weighting is a few multiplications on the host.
            values = (torch.stack(self._losses).tolist() if len(self._losses) > 1
                      else [loss.item() for loss in self._losses])
            self._total = math.fsum(value * count for value, count in zip(values, self._counts,
                                                                             strict=True))
            self._losses.clear()
        return self._total

    def loss_mean(self) -> float:
        return self.loss_total() / self.samples if self.samples else 0.0

    def peek_total(self) -> float:
        """loss_total() without consuming it (for a checkpoint between two log steps)."""
        if self._total is not None:
            return self._total
        return math.fsum(loss.item() * count for loss, count in zip(self._losses, self._counts,
                                                                     strict=True))


class _GpuTimer:
    """GPU time of steps, from CUDA events read only when collected (reading synchronises).
    Events are reused: making two per step costs host time a small model's step cannot spare."""

    def __init__(self) -> None:
        self._free: list[torch.cuda.Event] = []
        self._spans: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._open: torch.cuda.Event | None = None

    def _event(self) -> torch.cuda.Event:
        event = self._free.pop() if self._free else torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self._open = self._event()

    def stop(self) -> None:
        self._spans.append((self._open, self._event()))
        self._open = None

    def cancel(self) -> None:
        """The step failed: its start event goes back unused."""
        if self._open is not None:
            self._free.append(self._open)
            self._open = None

    def collect(self) -> float:
        """Seconds of GPU time since the last collect."""
        if not self._spans:
            return 0.0
        self._spans[-1][1].synchronize()
        seconds = sum(start.elapsed_time(end) for start, end in self._spans) / 1000.0
        for pair in self._spans:
            self._free.extend(pair)
        self._spans.clear()
        return seconds
