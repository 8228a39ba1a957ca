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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from .batches import (
    default_batch_size,
    input_and_target,
    metric_value,
    split_step_output,
    to_device,
)
from .config import RunConfig
from .device import Placement
from .errors import TaskError
from .events import EpochEnded, Event, Position, StepLogged
from .sampling import ResumableSampler
from .tasks import Task

if TYPE_CHECKING:
    from .distributed.group import RankGroup

Emit = Callable[[Event], None]

# Position events between logged steps: often enough for a progress bar and its time left,
# seldom enough to cost nothing next to a step.
POSITION_SECONDS = 0.25

# The engine warns about more workers than cores itself, once per change, in the run's log.
warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
# A run resumed at its evaluation steps the restored scheduler before this process's first
# optimizer step; the schedule's position comes from the checkpoint, so nothing is skipped.
warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step",
                        category=UserWarning)


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
    train_seconds: float = 0.0  # wall time, less time spent paused and compiling
    compile_seconds: float = 0.0  # torch.compile's first step, kept out of train_seconds
    figures: dict = field(default_factory=dict)  # Task.step's other figures: name -> sum*count


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) before the model is built, so a run's
    initial weights and dropout masks depend only on the seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: RunConfig, task: Task, placement: Placement, emit: Emit,
                 boundary: Callable[[], float] = lambda: 0.0,
                 after_epoch: Callable[[EpochEnded], None] = lambda event: None,
                 group: RankGroup | None = None) -> None:
        self.config = config
        self.group = group  # several ranks: DDP, sharded batches, agreed figures and commands
        self.world_size = group.world_size if group else 1
        self.on_agreed: Callable[[Any], None] = lambda agreed: None  # the engine's, per agreement
        self.task = task
        self.placement = placement
        self.device = placement.device
        self.emit = emit
        self.boundary = boundary
        self.after_epoch = after_epoch
        self.on_oom: Callable[[int, int], None] = lambda failed, now: None
        self.before_eval: Callable[[], None] = lambda: None  # the engine saves a checkpoint
        self._good_batch_size: int | None = None  # the last batch size a step succeeded with
        # Test hook: fail steps larger than this as if the GPU ran out of memory.
        oom_above = os.environ.get("CTUI_TEST_OOM_ABOVE_BATCH")
        self._oom_above = int(oom_above) if oom_above else None
        self.batch_size = config.batch_size
        self.num_workers = config.num_workers
        self.progress = Progress()

        self.model = task.model.to(self.device)
        # What runs the batches: the model itself, or its compiled form (which shares its
        # parameters; checkpoints keep saving self.model, so they load without torch.compile).
        trained = group.wrap(self.model) if group else self.model
        self.forward_model = torch.compile(trained) if config.compile else trained
        # Evaluation (rank 0 alone, with ranks) runs the bare model: DDP would wait for peers.
        self.eval_model = self.forward_model if group is None else self.model
        self._compiling = config.compile  # until the first step has run (and compiled)
        self.loss_fn = task.loss or F.cross_entropy
        self.samples_in = task.batch_size_of or default_batch_size
        params = self.model.parameters()
        self.optimizer = (task.optimizer(params) if task.optimizer
                          else _optimizer(config, params))
        self.scheduler = _scheduler(task, self.optimizer, config)
        self.evaluated = False  # whether the last finished epoch ran the evaluation
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=placement.needs_grad_scaler)
        self.sampler = ResumableSampler(len(task.train_dataset), config.seed) if group is None \
            else _sharded_sampler(len(task.train_dataset), config.seed, group)
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
        self._next_position = 0.0  # time.monotonic() after which a Position event is due

    # ------------------------------------------------------------ loaders

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps per epoch: one per --accumulate batches."""
        return math.ceil(self.sampler.samples_per_epoch / self.samples_per_step)

    @property
    def samples_per_step(self) -> int:
        """Of all ranks together: the checkpoint's position counts the job's samples."""
        return self.batch_size * self.world_size * self.config.accumulate

    def _loader(self, dataset, batch_size: int, sampler=None) -> DataLoader:
        workers = self.num_workers
        if self.group is not None and sampler is not None:  # this rank's batches, ready-made
            sampler.batch_size = batch_size
            return DataLoader(
                dataset, batch_sampler=sampler, num_workers=workers,
                pin_memory=self.placement.is_cuda, persistent_workers=workers > 0,
                generator=self.loader_generator, collate_fn=self.task.collate_fn)
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
            num_workers=workers, pin_memory=self.placement.is_cuda,
            persistent_workers=workers > 0, generator=self.loader_generator,
            collate_fn=self.task.collate_fn,
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

    def _to_device(self, batch: Any) -> Any:
        return to_device(batch, self.device, non_blocking=self.placement.is_cuda)

    def epoch_so_far(self) -> dict | None:
        """The current epoch's figures up to now, for a checkpoint taken inside it, so the
        resumed run records the epoch once with its real figures; None between epochs."""
        meter = self._meter
        if meter is None:
            return None
        figures = dataclasses.asdict(meter)
        figures["train_seconds"] = time.perf_counter() - self._epoch_clock - \
            meter.compile_seconds
        if self._interval is not None:  # steps since the last log: not yet in loss_sum
            figures["loss_sum"] += self._interval.peek_total()
            for name, total in self._interval.peek_figures().items():
                figures["figures"][name] = figures["figures"].get(name, 0.0) + total
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
        carried.figures = {name: float(value) for name, value in carried.figures.items()
                           if isinstance(name, str) and type(value) in (int, float)}
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
        epoch_start = time.perf_counter() - meter.train_seconds - meter.compile_seconds
        self._epoch_clock = epoch_start
        samples_per_epoch = self.sampler.samples_per_epoch
        while progress.position < samples_per_epoch:
            self._loader_stale = False
            self.sampler.set_epoch(progress.epoch, progress.position)
            batches = iter(self.train_loader())
            # One optimizer step is --accumulate batches, weighted by their share of its
            # samples, so it takes the step one batch that many times larger would. Commands
            # and checkpoints wait for its end: a checkpoint never holds half a gradient.
            step = _Step(progress.position, min(self.samples_per_step,
                                                samples_per_epoch - progress.position))
            while not self._loader_stale:
                fetch_start = time.perf_counter()
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                step_start = time.perf_counter()
                meter.data_seconds += step_start - fetch_start
                interval.data_seconds += step_start - fetch_start
                count = min(self.batch_size * self.world_size,  # of all ranks together
                            samples_per_epoch - step.start - step.done)
                compiling = self._compiling
                if gpu_timer is not None and not compiling:
                    gpu_timer.start()
                try:
                    loss, figures = self._micro_step(batch, count, step)
                    if step.done + count >= step.samples:
                        self._optimizer_step()
                except torch.OutOfMemoryError:
                    if self.group is not None:  # a smaller batch on one rank would desync
                        raise
                    del batch
                    if gpu_timer is not None:
                        gpu_timer.cancel()
                    self._recover_from_oom()  # the same samples come again, in smaller batches
                    break
                self._good_batch_size = self.batch_size
                if compiling:  # the first step compiles: its time is the compile's, not a step's
                    if self.placement.is_cuda:
                        torch.cuda.synchronize(self.device)
                    meter.compile_seconds += time.perf_counter() - step_start
                    self._compiling = False
                elif gpu_timer is not None:
                    gpu_timer.stop()
                else:
                    spent = time.perf_counter() - step_start
                    meter.compute_seconds += spent
                    interval.compute_seconds += spent
                weight = self.samples_in(batch) if self.group is None else \
                    self._local_count(count)
                step.add(loss.detach(), figures, weight, count)
                if step.done < step.samples:
                    continue
                progress.position += step.done
                progress.global_step += 1
                meter.samples += step.done
                meter.steps += 1
                step.into(interval)
                step = _Step(progress.position, min(self.samples_per_step,
                                                    samples_per_epoch - progress.position))
                if meter.steps % self.config.log_interval == 0 or \
                        progress.position >= samples_per_epoch:
                    # Reading GPU timings and the loss synchronises: only at the log interval.
                    gpu = gpu_timer.collect() if gpu_timer is not None else 0.0
                    meter.compute_seconds += gpu
                    interval.compute_seconds += gpu
                    if self.group is not None:
                        self._agree(interval)
                    self._fold(meter, interval)
                    self._log_step(meter, interval)
                    interval = self._interval = _Interval()
                elif time.monotonic() >= self._next_position:
                    self._report_position(meter)
                paused = self.boundary()  # a new batch size here restarts the loader
                paused_seconds += paused
                self._epoch_clock += paused
        if gpu_timer is not None:
            torch.cuda.synchronize(self.device)
            meter.compute_seconds += gpu_timer.collect()
        self._fold(meter, interval)
        self._interval = None  # folded: a checkpoint before evaluation must not count it again
        meter.train_seconds = time.perf_counter() - epoch_start - paused_seconds - \
            meter.compile_seconds

    @staticmethod
    def _fold(meter: EpochMeter, interval: _Interval) -> None:
        meter.loss_sum += interval.loss_total()
        for name, total in interval.figure_totals().items():
            meter.figures[name] = meter.figures.get(name, 0.0) + total

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

    def train_step(self, batch: Any) -> torch.Tensor:
        """One whole optimisation step on one batch from the loader (moved to the device here);
        the loss stays on the device. Autotune's trials call it as training does."""
        count = self.samples_in(batch)
        loss, _ = self._micro_step(batch, count, _Step(0, count))
        self._optimizer_step()
        return loss

    def _micro_step(self, batch: Any, count: int, step: _Step
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor | float]]:
        """Forward and backward of one batch into the step's gradient, weighted by its share
        of the step's samples. Returns the batch's (unweighted) loss and other figures."""
        if self._oom_above is not None and count > self._oom_above:
            raise torch.OutOfMemoryError("injected by CTUI_TEST_OOM_ABOVE_BATCH")
        if step.done == 0:
            self.optimizer.zero_grad(set_to_none=True)
        batch = self._to_device(batch)
        # With ranks and --accumulate, DDP all-reduces once, at the step's last batch.
        holding = self.group is not None and step.done + count < step.samples
        with self.forward_model.no_sync() if holding else contextlib.nullcontext():
            with self._autocast():
                if self.task.step is not None:
                    loss, figures = split_step_output(self.task.step(self.forward_model, batch))
                else:
                    data, target = input_and_target(batch)
                    loss, figures = _scalar_loss(self.loss_fn(self.forward_model(data),
                                                              target)), {}
            # DDP averages the ranks' gradients: each rank's piece is weighted so the step is
            # the mean over all its samples, also when the tail's pieces differ in size (an
            # empty piece runs one sample at weight 0).
            share = self._local_count(count) * self.world_size / step.samples
            self.scaler.scale(loss if share == 1.0 else loss * share).backward()
        return loss, figures

    def _local_count(self, count: int) -> int:
        """This rank's samples of a global batch of `count` (all of them on one rank)."""
        if self.group is None:
            return count
        from .distributed.sharding import share_of

        return share_of(count, self.group.rank, self.world_size)[1]

    def _agree(self, interval: _Interval) -> None:
        """With ranks, at each log step: the job's loss and samples, per-rank timings and the
        commands every rank applies at this step's boundary (one all-reduce)."""
        local_samples = interval.samples
        agreed = self.group.agree(interval.loss_total(), local_samples, interval.data_seconds,
                                  interval.compute_seconds)
        interval.set_job_totals(agreed.loss_total, agreed.samples, local_samples, agreed.ranks)
        self.on_agreed(agreed)

    def _optimizer_step(self) -> None:
        if self.config.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _steps_in_epoch(self, meter: EpochMeter) -> int:
        """Steps done plus steps left at the current batch size."""
        return meter.steps + math.ceil(
            (self.sampler.samples_per_epoch - self.progress.position) / self.samples_per_step)

    def _report_position(self, meter: EpochMeter) -> None:
        """Between logged steps, at most every POSITION_SECONDS: where the epoch is, so
        progress and time left follow the real position. Counters only: no device sync."""
        self._next_position = time.monotonic() + POSITION_SECONDS
        self.emit(Position(epoch=self.progress.epoch, step=meter.steps,
                           steps_in_epoch=self._steps_in_epoch(meter),
                           samples_seen=self.progress.position,
                           samples_in_epoch=self.sampler.samples_per_epoch))

    def _log_step(self, meter: EpochMeter, interval: _Interval) -> None:
        spent = interval.data_seconds + interval.compute_seconds
        job = interval.job_rates()  # with ranks: the job's samples/s (sum) and data wait (max)
        self._next_position = time.monotonic() + POSITION_SECONDS
        self.emit(StepLogged(
            epoch=self.progress.epoch, step=meter.steps,
            steps_in_epoch=self._steps_in_epoch(meter),
            global_step=self.progress.global_step, samples_seen=self.progress.position,
            loss=interval.loss_mean(),
            samples_per_second=job[0] if job else interval.samples / spent if spent else 0,
            data_wait_fraction=job[1] if job else interval.data_seconds / spent if spent
            else 0.0, lr=self.lr,
        ))

    def _finish_epoch(self) -> None:
        # The epoch's training is complete (position at the epoch's end): saved now, a crash
        # in evaluation or the scheduler step resumes here instead of training it again.
        self.before_eval()
        meter, epoch = self._meter, self.progress.epoch
        eval_start = time.perf_counter()
        self.evaluated = epoch % self.config.val_every == 0 or epoch == self.config.epochs
        # With ranks, rank 0 alone evaluates (its figures are the ones anybody sees).
        evaluates = self.evaluated and (self.group is None or self.group.is_writer)
        test_loss, test_accuracy, results = self.evaluate() if evaluates else \
            (None, None, {})
        eval_seconds = time.perf_counter() - eval_start
        step_seconds = meter.data_seconds + meter.compute_seconds
        samples = meter.samples
        figures = {f"train_{name}": total / samples if samples else 0.0
                   for name, total in meter.figures.items()}
        figures.update(results)
        event = EpochEnded(
            epoch=epoch, epochs=self.config.epochs,
            train_seconds=meter.train_seconds, eval_seconds=eval_seconds,
            samples_per_second=samples / meter.train_seconds if meter.train_seconds else 0.0,
            data_wait_fraction=meter.data_seconds / step_seconds if step_seconds else 0.0,
            train_loss=meter.loss_sum / samples if samples else 0.0,
            test_loss=test_loss, test_accuracy=test_accuracy, lr=self.lr,
            peak_gpu_memory_mb=(torch.cuda.max_memory_allocated(self.device) / 2**20
                                if self.placement.is_cuda else None),
            batch_size=self.batch_size, num_workers=self.num_workers,
            settings_changed=meter.settings_changed, global_step=self.progress.global_step,
            metrics=tuple(figures.items()), compile_seconds=meter.compile_seconds,
        )
        self.scheduler.step()
        self.progress.history.append(event.to_dict())
        self.progress.epoch += 1
        self.progress.position = 0
        self._meter = self._interval = None
        self.emit(event)
        self.after_epoch(event)

    @torch.no_grad()
    def evaluate(self) -> tuple[float | None, float | None, dict[str, float]]:
        """(test loss, accuracy, other figures) on the test set, in eval mode. Accuracy is
        None when outputs are not class scores; the loss None when the task reports none."""
        self.model.eval()
        try:
            if self.task.evaluate is not None:
                with self._autocast():
                    results = self.task.evaluate(self.eval_model,
                                                 self._on_device(self.test_loader()))
                return _evaluate_results(results)
            if self.task.step is not None:
                return self._evaluate_steps()
            return self._evaluate_pairs()
        finally:
            self.model.train()

    def _on_device(self, batches: Iterable[Any]) -> Iterator[Any]:
        for batch in batches:
            yield self._to_device(batch)

    def _evaluate_steps(self) -> tuple[float | None, None, dict[str, float]]:
        """Without Task.evaluate: the mean of Task.step's outputs over the test set."""
        totals: dict[str, float] = {}
        count = 0
        for batch in self.test_loader():
            samples = self.samples_in(batch)
            with self._autocast():
                loss, figures = split_step_output(self.task.step(self.eval_model,
                                                                 self._to_device(batch)))
            for name, value in (("loss", loss), *figures.items()):
                totals[name] = totals.get(name, 0.0) + metric_value(value, name) * samples
            count += samples
        means = {name: total / max(count, 1) for name, total in totals.items()}
        return means.pop("loss"), None, {f"test_{name}": value for name, value in means.items()}

    def _evaluate_pairs(self) -> tuple[float, float | None, dict[str, float]]:
        """(input, target) batches: mean loss, accuracy and each of Task.metrics."""
        metric_fns = dict(self.task.metrics or {})
        loss_total = torch.zeros((), device=self.device, dtype=torch.float64)
        correct = torch.zeros((), device=self.device, dtype=torch.int64)
        metric_totals = dict.fromkeys(metric_fns, 0.0)
        count, classifies = 0, True
        for batch in self.test_loader():
            data, target = input_and_target(self._to_device(batch))
            with self._autocast():
                output = self.eval_model(data)
                loss = _scalar_loss(self.loss_fn(output, target))
            samples = self.samples_in(batch)
            loss_total += loss.double() * samples
            classifies = classifies and isinstance(output, torch.Tensor) and \
                isinstance(target, torch.Tensor) and output.dim() == 2 and \
                not target.is_floating_point()
            if classifies:
                correct += (output.argmax(dim=1) == target).sum()
            for name, fn in metric_fns.items():
                value = metric_value(fn(output, target), f"Task.metrics[{name!r}]")
                metric_totals[name] += value * samples
            count += samples
        accuracy = correct.item() / count if classifies and count else None
        metrics = {name: total / max(count, 1) for name, total in metric_totals.items()}
        return loss_total.item() / max(count, 1), accuracy, metrics


def _sharded_sampler(num_samples: int, seed: int, group: RankGroup):
    from .distributed.sharding import ShardedBatchSampler

    return ShardedBatchSampler(num_samples, seed, group.rank, group.world_size)


def _scalar_loss(loss: Any) -> torch.Tensor:
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shown = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else \
            f"a {type(loss).__name__}"
        raise TaskError(f"Task.loss returned {shown}: return the batch's mean loss, one number "
                        "in a tensor")
    return loss.reshape(())


def _evaluate_results(results: Any) -> tuple[float | None, float | None, dict[str, float]]:
    if not isinstance(results, Mapping):
        raise TaskError(f"Task.evaluate returned a {type(results).__name__}: return a dict of "
                        "name -> number, e.g. {'loss': 0.3, 'f1': 0.8}")
    figures = {str(name): metric_value(value, f"Task.evaluate's {name!r}")
               for name, value in results.items()}
    return figures.pop("loss", None), figures.pop("accuracy", None), figures


def optimizer_settings(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's class and its first parameter group's settings (lr, momentum, betas,
    weight decay...) as plain values, for the loggers' record of what the run really used."""
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return value.item()
        if isinstance(value, (list, tuple)):
            items = [plain(item) for item in value]
            return items if all(item is not _SKIP for item in items) else _SKIP
        return value if value is None or isinstance(value, (bool, int, float, str)) else _SKIP

    group = optimizer.param_groups[0]
    settings = {key: plain(value) for key, value in group.items() if key != "params"}
    return {"optimizer": type(optimizer).__name__, "lr": plain(group["lr"]),
            "optimizer_settings": {key: value for key, value in settings.items()
                                   if value is not _SKIP}}


_SKIP = object()  # a setting that is no plain value (a callable, a device): not recorded


def _optimizer(config: RunConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=0.9)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=0.01)
    return torch.optim.Adadelta(params, lr=config.lr)


def _scheduler(task: Task, optimizer: torch.optim.Optimizer, config: RunConfig):
    """The task's own; else --scheduler for ctui's own optimizer. A task that brings its own
    optimizer but no scheduler keeps its learning rate: decaying a rate ctui did not choose
    by --gamma every epoch would be a silent surprise."""
    if task.scheduler:
        return task.scheduler(optimizer)
    if task.optimizer or config.scheduler == "none":
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=config.gamma)


class _Step:
    """One optimizer step in the making: its batches' losses and figures wait here until the
    step is whole, so an out-of-memory retry of the step counts none of them twice."""

    def __init__(self, start: int, samples: int) -> None:
        self.start = start  # the epoch position of its first sample
        self.samples = samples  # how many it takes: --accumulate batches, fewer at the end
        self.done = 0
        self._parts: list[tuple[torch.Tensor, dict, int]] = []

    def add(self, loss: torch.Tensor, figures: dict, weight: int, count: int) -> None:
        self._parts.append((loss, figures, weight))
        self.done += count

    def into(self, interval: _Interval) -> None:
        for loss, figures, weight in self._parts:
            interval.add(loss, weight, figures)


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
        self._figures: dict[str, list[tuple[torch.Tensor | float, int]]] = {}
        self._figure_scale = 1.0  # with ranks: Task.step's other figures are rank 0's, scaled
        self._ranks: tuple[tuple[int, float, float, float], ...] = ()

    def set_job_totals(self, loss_total: float, samples: int, local_samples: int,
                       ranks: tuple[tuple[int, float, float, float], ...]) -> None:
        """With ranks: the job's summed loss and samples replace this rank's own."""
        self._losses.clear()
        self._total = loss_total
        self._figure_scale = samples / local_samples if local_samples else 0.0
        self.samples = samples
        self._ranks = ranks

    def job_rates(self) -> tuple[float, float] | None:
        """(samples/s summed over ranks, the largest rank's data-wait share); None on one."""
        if not self._ranks:
            return None
        rates = [(samples / (data + compute) if data + compute else 0.0,
                  data / (data + compute) if data + compute else 0.0)
                 for _, samples, data, compute in self._ranks]
        return sum(rate for rate, _ in rates), max(wait for _, wait in rates)

    def add(self, loss: torch.Tensor, count: int, figures: dict | None = None) -> None:
        self._losses.append(loss)
        self._counts.append(count)
        self.samples += count
        for name, value in (figures or {}).items():
            self._figures.setdefault(name, []).append((value, count))

    def figure_totals(self) -> dict[str, float]:
        """Task.step's other figures, count-weighted sums; read once (it synchronises)."""
        totals = self.peek_figures()
        self._figures.clear()
        return totals

    def peek_figures(self) -> dict[str, float]:
        return {name: self._figure_scale * math.fsum(
                    metric_value(value, f"Task.step's {name!r}") * count
                    for value, count in values)
                for name, values in self._figures.items()}

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
