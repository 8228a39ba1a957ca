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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

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
from .distributed.spec import ranks_line, restarts_so_far, wants_ranks
from .errors import TaskError, first_line, user_error_line
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
    RankStats,
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
from .loop import StopTraining, Trainer, optimizer_settings, seed_everything
from .run_folder import checkpoints_folder, claim_run_folder, discard_unstarted, release_lock
from .runs import CONFIG_FILE, checkpoint_dir, write_best, write_config
from .sinks import MetricsFile
from .tasks import Task, load_task

if TYPE_CHECKING:
    from .distributed.group import RankGroup

_TIMED_SAVE = CheckpointNow()  # with ranks: rank 0's schedule asks for a save, nobody to answer


class Engine:
    """One run. Construction validates everything that can fail early (device, task, resume
    checkpoint) and raises; `start()` then trains on a background thread.

    resume: "latest" or True (the newest valid checkpoint in the run folder), a checkpoint
    path, or a ResumePoint already loaded."""

    def __init__(self, config: RunConfig, *, resume: str | bool | ResumePoint | None = None,
                 sinks: list[Sink] | None = None, group: RankGroup | None = None) -> None:
        self.config = config
        # One rank of a data-parallel job (engine/distributed): rank 0 alone touches the run
        # folder, which the launcher made and keeps locked for the whole job.
        self.group = group
        self.is_writer = group is None or group.is_writer
        # With ranks, the rank's reading of an error at its batch size (distributed/rank.py:
        # out of memory): (True, "") it leaves quietly, as the launcher relaunches the job or
        # rank 0 says why it ends; (False, line) the job ends with this line, not restarted;
        # (False, "") an error like any other.
        self.job_error: Callable[[Exception, int], tuple[bool, str]] = \
            lambda error, batch_size: (False, "")
        self.placement: Placement = choose_placement(group.device if group else config.device,
                                                     config.amp)
        # The folder is adopted and locked before anything in it is read or written.
        self.run_dir = claim_run_folder(config, resume) if group is None else \
            Path(config.run_dir)
        try:
            self._set_up(config, resume, sinks)
        except BaseException:
            if group is None:
                discard_unstarted(self.run_dir)  # a folder made for a run that never started
                release_lock(self.run_dir)  # a notebook may try again in this process
            raise

    def _set_up(self, config: RunConfig, resume: str | bool | ResumePoint | None,
                sinks: list[Sink] | None) -> None:
        writer = self.is_writer
        self._ckpt_dir = checkpoints_folder(self.run_dir) if writer else \
            checkpoint_dir(self.run_dir)
        recorded = (self.run_dir / CONFIG_FILE).exists() if writer else True
        if not recorded:  # first, so a kill at any later moment leaves the run's own settings
            write_config(self.run_dir, config, {})
        self._warnings: list[str] = []  # logged when the run starts
        self._notes: list[str] = []
        for stale in remove_stale_temporaries(self._ckpt_dir) if writer else ():
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
        self._agreed: tuple[Command, ...] = ()  # with ranks: commands agreed at this step
        self._save_queued = False  # with ranks: rank 0 asked the others for a timed save
        self._stop_queued = False
        if not writer:  # the other ranks write nothing: no metrics, loggers or config
            self._metrics = None
            self.loggers_info = LoggersInfo()
            for sink in sinks or []:
                self.add_sink(sink)
            return
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

    def note(self, message: str, level: str = "info") -> None:
        """A line for the run's log when it starts (what a job's launcher has to say)."""
        (self._warnings if level == "warning" else self._notes).append(message)

    def events(self, history: bool = True, *, keep_running: bool = False) -> Iterator[Event]:
        """Every event (the kept past first, when history is true) until the run ends.

        A loop over it that is left before the run ends (Ctrl-C or another exception inside
        it, or a break) stops the run with a checkpoint, as the loop was what watched it;
        keep_running=True leaves it training."""
        return self._watched_events(history, keep_running)

    def _watched_events(self, history: bool, keep_running: bool) -> Iterator[Event]:
        ended = False
        try:
            yield from self._fanout.events(history)
            ended = True
        finally:  # also when the consumer's exception drops the iterator (GeneratorExit)
            if not ended and not keep_running and self._thread is not None and \
                    self._state not in (State.FINISHED, State.STOPPED, State.FAILED):
                self.stop("the loop over engine.events() was left (an exception or a break); "
                          "events(keep_running=True) keeps a run training")

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
                                             after_epoch=self._after_epoch, group=self.group)
            trainer.on_oom = self._after_oom
            trainer.on_agreed = self._on_agreed
            if self.group is not None and self.is_writer:
                self._log(ranks_line(self.group, trainer.batch_size))
            elif self.group is None and wants_ranks(self.config):
                self._log("--nproc-per-node, --nnodes and --max-restarts apply to `ctui "
                          "train`, which launches the ranks; this engine trains in one "
                          "process", "warning")
            # The epoch's training is saved before evaluation: a crash there resumes at it.
            trainer.before_eval = lambda: self._save_checkpoint(trainer)
            self._emit_optimizer_settings(trainer)
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
            # ctui's own advice stands alone; anything else says where the user's code failed
            line = f"TaskError: {message}" if isinstance(error, TaskError) else \
                user_error_line(error)
            quiet, said = (False, "") if self.group is None else self.job_error(
                error, self.trainer.batch_size if self.trainer else self.config.batch_size)
            if quiet:  # not the run's end, or not this rank's to tell
                return
            if said:
                line = message = said
            elif self.group is not None and restarts_so_far() < self.config.max_restarts:
                # The launcher starts the ranks again: not the run's end, for the panel and ls
                self._log(f"{line}; the launcher restarts the ranks from the newest checkpoint "
                          f"(restart {restarts_so_far() + 1} of {self.config.max_restarts})",
                          "warning")
                return
            self._emit(Failed(message=line, detail=traceback.format_exc()))
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
        if self._metrics is None:
            return
        for level, message in self._metrics.take_messages():
            self._log(message, level)

    def _tune(self, command: Tune) -> float:
        """Run the autotuner inside the live run; returns its seconds (left out of timing)."""
        from .bottleneck import INPUT_BOUND, judge
        from .tuning import autotune

        budget = command.budget_seconds
        if not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0 \
                or budget == float("inf"):
            self._answer(command, f"tune budget {budget!r} refused: use seconds > 0", False)
            return 0.0
        self._answer(command, f"autotune: timing num_workers, then batch size, for up to "
                     f"{budget:.0f}s; training resumes where it was afterwards")
        # The advisor's verdict, when it has one, decides which worker counts are tried; else
        # the first trial's. The advisor then adopts it, and what the trials found about more
        # workers: the two never disagree.
        known = self._advisor.judgement()
        trainer = self.trainer
        report = autotune(trainer, budget, self._advisor.cores, self._log, known)
        self._emit(report)
        self._log(f"autotune done in {report.seconds:.0f}s: {report.summary}; best batch size "
                  f"{report.best_batch_size} with {report.best_num_workers} workers "
                  "(not applied: set them to use them)")
        workers = trainer.num_workers
        no_faster = report.verdict == INPUT_BOUND and report.best_num_workers == workers and \
            any(row[1] > workers for row in report.rows)
        advice = self._advisor.adopt(known or judge(report.data_wait_fraction),
                                     more_workers_timed_no_faster=no_faster,
                                     batch_size=trainer.batch_size, num_workers=workers,
                                     device=str(self.placement.device))
        if advice is not None:
            self._emit(advice)
            self._log(advice.message)
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

    def _emit_optimizer_settings(self, trainer: Trainer) -> None:
        """Loggers that record the run's settings (wandb) get the optimizer's real ones, read
        from its param_groups: with a task's own optimizer, --lr and --optimizer say nothing."""
        settings = optimizer_settings(trainer.optimizer)
        settings["scheduler"] = (type(trainer.scheduler).__name__ if self.task.scheduler else
                                 "none" if self.task.optimizer else self.config.scheduler)
        for sink in list(self._fanout.sinks):
            record = getattr(sink, "record_settings", None)
            if record is not None:
                try:
                    record(settings)
                except Exception as error:  # a logger's trouble never stops training
                    self._log(f"{getattr(sink, 'name', 'a logger')} could not record the "
                              f"optimizer's settings: {first_line(error)}", "warning")

    def _boundary(self) -> float:
        """Between two steps: apply commands, save when due. Returns seconds spent paused."""
        self._schedule.step()
        self._drain_saves()
        if self.group is not None:
            return self._boundary_with_ranks()
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

    # ------------------------------------------------------------ with ranks

    def _pass_on_commands(self, wait: float = 0.0) -> None:
        """This rank's queue into the next agreement: rank 0 shares every command; another
        rank only passes on a stop (a signal it got), which stops the whole job."""
        group = self.group
        while True:
            try:
                command = self._commands.get(timeout=wait) if wait else \
                    self._commands.get_nowait()
            except queue.Empty:
                return
            wait = 0.0
            if isinstance(command, Stop):
                group.stop_asked = group.stop_asked or command.reason
            if not group.is_writer:
                continue
            if isinstance(command, Tune):
                self._answer(command, "autotune times one process: start the run with "
                             "--nproc-per-node 1 to tune it", accepted=False)
            elif not isinstance(command, Stop) or not any(
                    isinstance(queued, Stop) for queued in group.outbox):
                group.outbox.append(command)

    def _boundary_with_ranks(self) -> float:
        """Commands wait for the next agreement (the log step) and then apply on every rank at
        the same step; rank 0 alone decides timed saves and the time limit."""
        group = self.group
        self._pass_on_commands()
        if group.is_writer and not self._stop_queued and self._schedule.out_of_time():
            self._stop_queued = True
            group.outbox.append(Stop(f"time limit of {self.config.time_limit:.0f}s reached"))
        if group.is_writer and not self._save_queued and self._schedule.due():
            self._save_queued = True
            group.outbox.append(_TIMED_SAVE)
        pending, self._agreed = list(self._agreed), ()
        paused = 0.0
        while pending:
            command = pending.pop(0)
            if isinstance(command, Pause):
                paused += self._pause_with_ranks(command, pending)
            elif command is _TIMED_SAVE:
                self._save_checkpoint(self.trainer)
            else:
                paused += self._apply(command)
        return paused

    def _pause_with_ranks(self, asked: Command, pending: list[Command]) -> float:
        """Every rank holds here, agreeing twice a second (off the training path) until the
        job resumes; other commands apply meanwhile."""
        start = time.monotonic()
        self._answer(asked, "paused at this step")
        self._emit(StateChanged(state=State.PAUSED, reason="paused by request"))
        while True:
            if not pending:
                self._pass_on_commands(wait=0.5)
                self._drain_saves()  # a save asked for while paused is reported now
                pending.extend(self.group.agree().commands)
                continue
            if self._resumes(pending.pop(0)):
                break
        self._emit(StateChanged(state=State.RUNNING, reason="resumed"))
        return time.monotonic() - start

    def _on_agreed(self, agreed) -> None:
        """At each log step: the commands for this step's boundary, and the ranks' figures."""
        self._agreed = agreed.commands
        if not self.is_writer or any(samples == 0 for _, samples, _, _ in agreed.ranks):
            return  # the epoch's tail, where a rank had no samples, says nothing of its pace
        rows = tuple((rank, samples / (data + compute) if data + compute else 0.0,
                      data / (data + compute) if data + compute else 0.0)
                     for rank, samples, data, compute in agreed.ranks)
        self._emit(RankStats(world_size=self.group.world_size,
                             global_batch_size=self.trainer.batch_size * self.group.world_size,
                             rows=rows, restarts=restarts_so_far()))

    def _pause(self, reason: str, asked: Command | None = None) -> float:
        """Hold the loop until resume or stop; other commands still apply while paused."""
        if self.group is not None:  # a failed save: the whole job pauses, at the next agreement
            self.group.outbox.append(Pause())
            return 0.0
        start = time.monotonic()
        if asked is not None:
            self._answer(asked, "paused at this step")
        self._emit(StateChanged(state=State.PAUSED, reason=reason))
        while True:
            try:  # a timeout, so signal handlers on this thread run promptly
                command = self._commands.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._resumes(command):
                break
        self._emit(StateChanged(state=State.RUNNING, reason="resumed"))
        return time.monotonic() - start

    def _resumes(self, command: Command) -> bool:
        """A command that came while paused: answered or applied; True when it resumes."""
        if isinstance(command, Resume):
            self._answer(command, "resumed at this step")
            return True
        if isinstance(command, Pause):
            self._answer(command, "already paused")
        else:
            self._apply(command)
        return False

    def _after_epoch(self, event: EpochEnded) -> None:
        if self.is_writer:  # with ranks, rank 0 alone evaluates
            self._keep_best(event)  # first: a kill between the two saves redoes the epoch
        if event.epoch < self.config.epochs:  # the final save happens when fit() returns
            self._save_checkpoint(self.trainer)
            self._report_finish(event)
            self._emit_settings()  # the scheduler has set the next epoch's learning rate

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

        self._save_queued = False
        if not self.is_writer:  # with ranks, rank 0 writes the job's checkpoints
            self._schedule.saving()
            return
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
            if result.note:
                self._log(result.note, "warning")
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
        if self.group is not None:  # rank 0 reads the folder; every rank gets what it found
            return self._share_resume(resume)
        if not resume:
            return None, None
        if not isinstance(resume, ResumePoint):
            resume = find_resume_point("latest" if resume is True else resume, self.run_dir)
        self._warnings.extend(resume.notes)
        return resume.state, resume.path

    def _share_resume(self, resume: str | bool | ResumePoint | None
                      ) -> tuple[dict | None, Path | None]:
        found = None
        if self.is_writer:
            if not resume:
                resume = ResumePoint(None, None)
            elif not isinstance(resume, ResumePoint):
                resume = find_resume_point("latest" if resume is True else resume,
                                           self.run_dir)
            found = (str(resume.path) if resume.path else None, resume.state, resume.notes)
        path, state, notes = self.group.share_resume(found)
        self._warnings.extend(notes if self.is_writer else ())
        return state, Path(path) if path else None


def _clock(timestamp: float) -> str:
    return time.strftime("%a %H:%M", time.localtime(timestamp))



__all__ = ["Engine", "CheckpointError"]
