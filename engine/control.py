"""The engine: the training loop, driven by commands, reporting events.

    engine = Engine(RunConfig(task="digits", epochs=3))
    engine.start()                  # trains on a thread of its own; a notebook stays live
    for event in engine.events():
        print(event)

`run()` trains on the calling thread instead, for a process with nothing else to do on it (the
headless command, the run host): PyTorch's CPU kernels run measurably faster on the thread that
owns the process's first OpenMP team (see tests/bench/bench_engine.py). Commands go in through
`send()` (thread-safe, and safe in a signal handler); events come out to sinks, callables that
run on the training thread and must be quick. Nothing mutable is shared: both are frozen values.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

from .advisor import Advisor
from .best import BEST_CHECKPOINT, best_in, figure, figures_of, improves, mode_for
from .checkpoint import (
    CheckpointError,
    CheckpointWriter,
    ResumePoint,
    SaveResult,
    checkpoint_name,
    find_resume_point,
    remove_stale_temporaries,
)
from .checkpoint_schedule import CheckpointSchedule
from .config import ConfigError, RunConfig
from .device import Placement, choose_placement
from .errors import TaskError, first_line
from .events import (
    Answer,
    BestCheckpoint,
    CheckpointNow,
    CheckpointSaved,
    Command,
    EpochEnded,
    Event,
    Failed,
    LoggersInfo,
    LogLine,
    Pause,
    Resume,
    SetBatchSize,
    SetNumWorkers,
    Settings,
    Start,
    State,
    StateChanged,
    StepLogged,
    Stop,
    Tune,
)
from .fanout import EventFanout, Sink
from .gpu_utilisation import GpuUtilisation
from .live_settings import LiveSetting, setting_of
from .loop import StopTraining, Trainer, seed_everything
from .run_folder import checkpoints_folder, claim_run_folder, release_lock
from .runs import CONFIG_FILE, write_best, write_config
from .sinks import MetricsFile
from .tasks import Task, load_task


class Engine:
    """One run. Construction validates everything that can fail early (device, task, resume
    checkpoint) and raises; `start()` then trains on a background thread.

    resume: "latest" or True (the newest valid checkpoint in the run folder), a checkpoint
    path, or a ResumePoint already loaded."""

    def __init__(self, config: RunConfig, *, resume: str | bool | ResumePoint | None = None,
                 sinks: list[Sink] | None = None) -> None:
        self.config = config
        self.placement: Placement = choose_placement(config.device, config.amp)
        # The folder is adopted and locked before anything in it is read or written.
        self.run_dir = claim_run_folder(config, resume)
        try:
            self._set_up(config, resume, sinks)
        except BaseException:
            release_lock(self.run_dir)  # a notebook may try again in this process
            raise

    def _set_up(self, config: RunConfig, resume: str | bool | ResumePoint | None,
                sinks: list[Sink] | None) -> None:
        self._ckpt_dir = checkpoints_folder(self.run_dir)
        recorded = (self.run_dir / CONFIG_FILE).exists()
        if not recorded:  # first, so a kill at any later moment leaves the run's own settings
            write_config(self.run_dir, config, {})
        self._warnings: list[str] = []  # logged when the run starts
        self._notes: list[str] = []
        for stale in remove_stale_temporaries(self._ckpt_dir):
            self._warnings.append(f"removed {stale.name}, a checkpoint half-written by a crash")
        self.resume_state, self.resume_path = self._find_resume(resume)
        if resume and self.resume_state is None and not recorded:
            raise ConfigError("resume", f"{self.run_dir} has nothing to resume: no checkpoint "
                              "and no recorded settings; start a new run without --resume")
        seed_everything(config.seed)
        self.task: Task = load_task(config)
        if self.resume_state is not None:
            from .state import check_fits

            check_fits(self.resume_state, self.task, str(self.resume_path))
        progress = self.resume_state["progress"] if self.resume_state else None
        # SimpleQueue: put() is reentrant, so a signal handler may send() on the training thread.
        self._commands: queue.SimpleQueue[Command] = queue.SimpleQueue()
        # Earlier epochs, from the checkpoint, so a subscriber sees the whole run.
        self._fanout = EventFanout(Event.from_dict(record) for record in
                                   (self.resume_state or {}).get("history", []))
        self._lock = threading.Lock()  # guards _thread
        self._thread: threading.Thread | None = None  # the training thread, once started
        self._state = State.IDLE
        self._saves: queue.SimpleQueue[SaveResult] = queue.SimpleQueue()
        self._writer = CheckpointWriter(self._ckpt_dir, config.keep_checkpoints, self._saves.put)
        self._schedule = CheckpointSchedule(config)
        self._epochs_timed = 0
        self._finish_reported = 0.0
        self.trainer: Trainer | None = None
        self._advisor = Advisor()
        self.last_checkpoint: str | None = str(self.resume_path) if self.resume_path else None
        self.save_error = ""  # why the latest save failed, until one succeeds
        # Records past the checkpoint will be trained again: MetricsFile drops them.
        metrics = MetricsFile(
            self.run_dir,
            resume_global_step=progress["global_step"] if progress else 0 if resume else None,
            resume_epochs_done=progress["epoch"] - 1 if progress else 0 if resume else None)
        self._warnings.extend(metrics.notes)
        self._metrics = metrics
        self.add_sink(metrics)
        self.loggers_info = LoggersInfo()
        if config.tensorboard or config.wandb:
            from .sinks.loggers import open_loggers

            saved = self.resume_state.get("loggers", {}) if self.resume_state else {}
            loggers, self.loggers_info, notes = open_loggers(config, self.run_dir, saved,
                                                             self.task.name)
            self._notes.extend(notes)
            for logger in loggers:
                self.add_sink(logger)
        for sink in sinks or []:
            self.add_sink(sink)
        write_config(self.run_dir, config, {"task_name": self.task.name,
                                            "device": str(self.placement.device),
                                            "precision": self.placement.precision})

    def __del__(self) -> None:
        # An engine built but never started (a notebook cell run again) lets go of its run.
        if getattr(self, "_thread", None) is None and hasattr(self, "run_dir"):
            release_lock(self.run_dir)

    # ------------------------------------------------------------ public API

    @property
    def state(self) -> str:
        return self._state

    def add_sink(self, sink: Sink) -> None:
        if self._thread is not None:
            raise RuntimeError("add sinks before start()")
        self._fanout.sinks.append(sink)

    def start(self) -> Engine:
        """Train on a background thread; returns at once."""
        with self._lock:
            if self._thread is not None:
                return self
            self._thread = threading.Thread(target=self._run, name="ctui-engine", daemon=True)
        self._thread.start()
        return self

    def run(self) -> str:
        """Train on the calling thread until the run ends; returns the final state. Commands
        still arrive through send() from other threads or signal handlers."""
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("this run has already been started")
            self._thread = threading.current_thread()
        self._run()
        return self._state

    def send(self, command: Command) -> None:
        """Thread-safe; applied at the next step boundary."""
        if isinstance(command, Start):
            self.start()
        else:
            self._commands.put(command)

    def pause(self) -> None:
        self.send(Pause())

    def resume(self) -> None:
        self.send(Resume())

    def stop(self, reason: str = "stop requested") -> None:
        self.send(Stop(reason))

    def checkpoint(self) -> None:
        self.send(CheckpointNow())

    def set_batch_size(self, batch_size: int) -> None:
        self.send(SetBatchSize(batch_size))

    def set_num_workers(self, num_workers: int) -> None:
        self.send(SetNumWorkers(num_workers))

    def events(self, history: bool = True) -> Iterator[Event]:
        """Every event (the kept past first, when history is true) until the run ends."""
        return self._fanout.events(history)

    def wait(self, timeout: float | None = None) -> str:
        """Block until the run ends (or the timeout passes); returns the state."""
        if self._thread is not None:
            self._fanout.wait(timeout)
        return self._state

    @property
    def history(self) -> list[Event]:
        """The run so far: every epoch, and the most recent of the frequent kinds."""
        return self._fanout.history

    # ------------------------------------------------------------ engine thread

    def _emit(self, event: Event) -> None:
        if isinstance(event, StateChanged):
            self._state = event.state
        self._fanout.emit(event)

    def _log(self, message: str, level: str = "info") -> None:
        self._emit(LogLine(level=level, message=message))

    def _run(self) -> None:
        self._schedule.start()
        try:
            self._emit(StateChanged(state=State.RUNNING, reason="started"))
            for warning in self._warnings:
                self._log(warning, "warning")
            for note in self._notes:
                self._log(note)
            self._gpu = GpuUtilisation(self.placement.device)
            self.trainer = trainer = Trainer(self.config, self.task, self.placement,
                                             self._on_training_event,
                                             boundary=self._boundary,
                                             after_epoch=self._after_epoch)
            trainer.on_oom = self._after_oom
            if self.resume_state is not None:
                from .state import restore

                restore(trainer, self.resume_state, str(self.resume_path))
                progress = trainer.progress
                self._log(f"resumed from {self.resume_path} at epoch {progress.epoch}, "
                          f"sample {progress.position} of the epoch")
                self.resume_state = None  # free the memory
            if self.task.optimizer and not self.task.scheduler:
                self._log("the task brings its own optimizer and no scheduler: its learning "
                          "rate stays as set (--gamma applies only to ctui's default optimizer)")
            self._emit_settings()
            self._emit(self.loggers_info)
            if self.config.time_limit:
                finish = _clock(time.time() + self.config.time_limit)
                self._log(f"time limit {self.config.time_limit:.0f}s: will checkpoint and stop "
                          f"by {finish} if not finished")
            try:
                trainer.fit()
                self._save_checkpoint(trainer)
                final = StateChanged(state=State.FINISHED, reason="all epochs done")
            except StopTraining as stop:
                self._emit(StateChanged(state=State.STOPPING, reason=stop.reason))
                self._save_checkpoint(trainer)
                final = StateChanged(state=State.STOPPED, reason=stop.reason)
            self._writer.wait()
            self._drain_saves()
            self._relay_metrics_messages()
            self._emit(final)
        except Exception as error:
            self._writer.wait()
            self._drain_saves()
            message = first_line(error)
            self._emit(Failed(message=f"{type(error).__name__}: {message}",
                              detail=traceback.format_exc()))
            self._emit(StateChanged(state=State.FAILED, reason=message))
        finally:
            self._fanout.close()
            release_lock(self.run_dir)

    def _on_training_event(self, event: Event) -> None:
        self._emit(event)
        self._relay_metrics_messages()
        if isinstance(event, StepLogged):
            trainer = self.trainer
            advice = self._advisor.observe(event.data_wait_fraction, self._gpu.read(),
                                           batch_size=trainer.batch_size,
                                           num_workers=trainer.num_workers,
                                           device=str(self.placement.device))
            if advice is not None:
                self._emit(advice)
                self._log(advice.message)

    def _relay_metrics_messages(self) -> None:
        """metrics.jsonl's own news (a full disk, records held, written again) into the log."""
        for level, message in self._metrics.take_messages():
            self._log(message, level)

    def _tune(self, command: Tune) -> float:
        """Run the autotuner inside the live run; returns its seconds (left out of timing)."""
        from .tuning import autotune

        budget = command.budget_seconds
        if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0 \
                or budget == float("inf"):
            self._answer(command, f"tune budget {budget!r} refused: use seconds > 0", False)
            return 0.0
        self._answer(command, f"autotune: timing num_workers, then batch size, for up to "
                     f"{budget:.0f}s; training resumes where it was afterwards")
        report = autotune(self.trainer, budget, os.cpu_count() or 1, self._log)
        self._emit(report)
        self._log(f"autotune done in {report.seconds:.0f}s: best batch size "
                  f"{report.best_batch_size} with {report.best_num_workers} workers "
                  "(not applied: set them to use them)")
        return report.seconds

    def tune(self, budget_seconds: float = 60.0) -> None:
        """Run autotune trials at the next step; a TuneReport event carries the results."""
        self.send(Tune(budget_seconds))

    def _emit_settings(self) -> None:
        trainer = self.trainer
        self._emit(Settings(batch_size=trainer.batch_size, num_workers=trainer.num_workers,
                            lr=trainer.lr, device=str(self.placement.device),
                            precision=self.placement.precision, epochs=self.config.epochs,
                            steps_per_epoch=trainer.steps_per_epoch, task=self.task.name,
                            run_dir=str(self.run_dir)))

    def _boundary(self) -> float:
        """Between two steps: apply commands, save when due. Returns seconds spent paused."""
        self._schedule.step()
        self._drain_saves()
        paused = 0.0
        while not self._commands.empty():
            paused += self._apply(self._commands.get())
        if self._schedule.out_of_time():
            raise StopTraining(f"time limit of {self.config.time_limit:.0f}s reached")
        if self._schedule.due():
            self._save_checkpoint(self.trainer)
        return paused

    def _apply(self, command: Command) -> float:
        """Apply one command at a step boundary and answer it; returns seconds paused."""
        setting = setting_of(command)
        if setting is not None:
            self._change(command, setting, getattr(command, setting.name))
        elif isinstance(command, Stop):
            self._answer(command, f"stopping ({command.reason}): a checkpoint at this step, "
                         "then the run ends")
            raise StopTraining(command.reason)
        elif isinstance(command, CheckpointNow):
            self._answer(command, "saving a checkpoint at this step")
            self._save_checkpoint(self.trainer)
        elif isinstance(command, Pause):
            return self._pause("paused by request", command)
        elif isinstance(command, Resume):
            self._answer(command, "the run is not paused: nothing to resume", accepted=False)
        elif isinstance(command, Tune):
            return self._tune(command)
        else:
            self._answer(command, f"{command.kind} is not something a running job can do",
                         accepted=False)
        return 0.0

    def _answer(self, command: Command, message: str, accepted: bool = True,
                setting: str = "", value: int | None = None) -> None:
        self._emit(Answer(command=command.kind, accepted=accepted, message=message,
                          setting=setting, value=value))

    def _change(self, command: Command, setting: LiveSetting, value: object) -> None:
        trainer, name = self.trainer, setting.name
        current = getattr(trainer, name)
        problem = setting.problem(value, len(self.task.train_dataset))
        if problem:
            self._answer(command, problem, False, name, current)
            return
        if value == current:
            self._answer(command, f"{name} is already {value}", True, name, current)
            return
        getattr(trainer, f"set_{name}")(value)
        self._answer(command, f"{name} {current} -> {value} from the next step", True, name,
                     value)
        if name == "num_workers" and value > (os.cpu_count() or 1):
            self._log(f"{value} workers on {os.cpu_count()} CPU cores: they compete with the "
                      "training process for the CPU", "warning")
        self._advisor.reset()
        self._emit_settings()

    def _after_oom(self, failed: int, now: int) -> None:
        self._log(f"out of memory at batch size {failed}: back to {now}, the last size that "
                  "worked; the same step was retried and nothing was lost", "warning")
        self._emit_settings()

    def _pause(self, reason: str, asked: Command | None = None) -> float:
        """Hold the loop until resume or stop; other commands still apply while paused."""
        start = time.monotonic()
        if asked is not None:
            self._answer(asked, "paused at this step")
        self._emit(StateChanged(state=State.PAUSED, reason=reason))
        while True:
            try:  # a timeout, so signal handlers on this thread run promptly
                command = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(command, Resume):
                self._answer(command, "resumed at this step")
                break
            if isinstance(command, Pause):
                self._answer(command, "already paused")
                continue
            self._apply(command)
        self._emit(StateChanged(state=State.RUNNING, reason="resumed"))
        return time.monotonic() - start

    def _after_epoch(self, event: EpochEnded) -> None:
        self._keep_best(event)  # first: a kill between the two saves redoes the epoch
        if event.epoch < self.config.epochs:  # the final save happens when fit() returns
            self._save_checkpoint(self.trainer)
            self._report_finish(event)

    def _keep_best(self, event: EpochEnded) -> None:
        """--monitor: save the epoch as ckpt-best.pt when its figure beats every earlier one."""
        monitor = self.config.monitor
        if not monitor:
            return
        mode = mode_for(monitor, self.config.mode)
        value = figure(event, monitor)
        if value is None:
            if not self.trainer.evaluated:
                return  # --val-every skipped this epoch's test figures
            self._save_checkpoint(self.trainer)
            raise TaskError(f"--monitor {monitor}: the epochs have no figure of that name; they "
                            f"have {', '.join(figures_of(event))}. This epoch's checkpoint is "
                            "saved: resume with --resume --monitor NAME")
        # The epochs before this one, from the history a resumed run restored too
        if not improves(value, best_in(self.trainer.progress.history[:-1], monitor, mode), mode):
            return
        self._save_checkpoint(self.trainer, best=(monitor, mode, value))

    def _report_finish(self, event: EpochEnded) -> None:
        """Expected finish from this run's epoch pace; a time limit that comes first says so."""
        self._epochs_timed += 1
        elapsed = time.monotonic() - self._schedule.started_at
        per_epoch = elapsed / self._epochs_timed
        left = self.config.epochs - event.epoch
        finish = time.time() + left * per_epoch
        if self._epochs_timed > 1 and time.monotonic() - self._finish_reported < 600:
            return  # once at the start, then every ten minutes: not a line per epoch
        self._finish_reported = time.monotonic()
        epochs_left = f"{left} epoch" + ("" if left == 1 else "s")
        message = (f"expected to finish at {_clock(finish)} ({epochs_left} left at "
                   f"~{per_epoch:.0f}s each)")
        if self.config.time_limit:
            deadline = time.time() + self.config.time_limit - elapsed
            if finish > deadline:
                message += (f"; the time limit stops it first, at {_clock(deadline)}, with a "
                            "checkpoint to --resume from")
        self._log(message)

    # ------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, trainer: Trainer,
                         best: tuple[str, str, float] | None = None) -> None:
        """Block only to copy the state to the CPU; the writer thread does the rest. `best`
        (monitor, mode, value) writes ckpt-best.pt, with the same protocol, instead."""
        from .state import capture

        start = time.perf_counter()
        state = self._writer.stage(capture(trainer, self._logger_state()))
        progress = trainer.progress
        # Named for the last epoch trained into it: at an epoch's end that is the one just done.
        epoch = progress.epoch - 1 if progress.position == 0 else progress.epoch
        name = BEST_CHECKPOINT if best else checkpoint_name(epoch, progress.global_step)
        self._writer.submit(state, SaveResult(str(self._ckpt_dir / name), epoch,
                                              progress.global_step,
                                              blocked_seconds=time.perf_counter() - start,
                                              best=best))
        self._schedule.saving()

    def _logger_state(self) -> dict:
        state = {}
        for sink in self._fanout.sinks:
            get = getattr(sink, "checkpoint_state", None)
            if get is not None:
                state.update(get())
        return state

    def _drain_saves(self) -> None:
        while not self._saves.empty():  # polled every step: no exception when empty
            result = self._saves.get()
            self._schedule.finished(result.seconds, failed=bool(result.error))
            if result.error:
                self.save_error = result.error
                self._log(f"checkpoint {result.path} failed: {result.error}; the previous "
                          "checkpoint is intact. Free space, then resume", "error")
                if self._state == State.RUNNING:  # stopping or ended: nothing left to pause
                    self._pause("checkpoint failed")
                continue
            self.save_error = ""
            if result.best:
                monitor, mode, value = result.best
                self._emit(BestCheckpoint(monitor=monitor, mode=mode, value=value,
                                          epoch=result.epoch, path=result.path))
                self._log(f"best {monitor} so far: {value:.4g} at epoch {result.epoch} "
                          f"({mode}), saved as {result.path}")
                write_best(self.run_dir, monitor, mode, value, result.epoch)
                continue
            self.last_checkpoint = result.path
            self._emit(CheckpointSaved(path=result.path, epoch=result.epoch,
                                       step=result.global_step,
                                       blocked_seconds=result.blocked_seconds))

    # ------------------------------------------------------------ resume

    def _find_resume(self, resume: str | bool | ResumePoint | None
                     ) -> tuple[dict | None, Path | None]:
        if not resume:
            return None, None
        if not isinstance(resume, ResumePoint):
            resume = find_resume_point("latest" if resume is True else resume, self.run_dir)
        self._warnings.extend(resume.notes)
        return resume.state, resume.path


def _clock(timestamp: float) -> str:
    return time.strftime("%a %H:%M", time.localtime(timestamp))



__all__ = ["Engine", "CheckpointError"]
