"""The supervisor of `ctui run -- CMD`: it plays the engine's part for a program ctui did not
write. Commands in (`send`, from any thread), events out (`add_sink`), `run()` on the host's
main thread until the program has ended for good.

Each attempt runs the program in a terminal of its own (terminal.py). Stop (a command, the
host's SIGTERM or the time limit) escalates over `grace` seconds: the stop signal (SIGINT by
default), SIGTERM at half the grace, SIGKILL at its end, each to the whole process group. A
program that dies without being asked (non-zero exit, a signal) is restarted up to
`restart_on_failure` times, from the newest loadable checkpoint when the run names a glob.
"""

from __future__ import annotations

import codecs
import os
import shlex
import signal
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..events import (
    Answer,
    Command,
    Event,
    LogLine,
    ProcessTree,
    ProgramExited,
    ProgramOutput,
    ProgramStarted,
    ResizeTerminal,
    SetBatchSize,
    SetNumWorkers,
    Settings,
    State,
    StateChanged,
    Stop,
    TypeInput,
)
from .checkpoints import newest_loadable
from .loaders import LoaderBridge
from .output_log import OutputLog, plain_line
from .script_logs import ScriptLogWatcher
from .spec import ProgramSpec, signal_number
from .terminal import EXIT_CANNOT_RUN, EXIT_NOT_FOUND, MAX_INPUT_PENDING, Terminal

# Output to clients. Everything goes to output.log; the terminal view gets it in order, in
# events of at most PUBLISH_EVERY seconds' output, as fast as OUTPUT_RATE allows with bursts
# of OUTPUT_BURST. Past that (a flood) the oldest unsent output is skipped, with a note.
PUBLISH_EVERY = 0.05
OUTPUT_RATE = 256 * 1024  # characters a second, sustained
OUTPUT_BURST = 1 << 20
MAX_UNSENT = 1 << 20  # characters held for clients; older ones are skipped
SAMPLE_EVERY = 2.0  # seconds between process-tree samples
WAIT_AT_MOST = 0.25  # seconds the supervisor sleeps at most: how soon a stop request acts
POLL_EVERY = 0.5  # seconds between looks at the DataLoader observer's records
RESTART_DELAY = 1.0  # seconds before a restart: a crash loop stays cheap
QUICK_EXIT = 3.0  # an attempt ending sooner than this "exited at once"
LEFTOVER_GRACE = 2.0  # seconds the program's other processes get after it exits


class Supervisor:
    def __init__(self, spec: ProgramSpec, run_dir: Path, *, env: Mapping[str, str] | None = None,
                 first_attempt: int = 1, resume_checkpoint: bool = False,
                 loaders: LoaderBridge | None = None, sampler=None,
                 clock: Callable[[], float] = time.monotonic, script_logs: bool = True) -> None:
        self.spec = spec
        self.run_dir = Path(run_dir)
        self.env = dict(os.environ if env is None else env)
        self.attempt = first_attempt - 1
        self.resume_checkpoint = resume_checkpoint  # look for one before the first attempt
        self.loaders = loaders or LoaderBridge(None)
        self.sampler = sampler
        self.clock = clock
        self.script_logs = script_logs  # read the program's own TensorBoard files
        self._script_files: set[tuple[int, int]] = set()  # those read by earlier attempts
        self.exit_code: int | None = None  # of the last attempt
        self.signal_name = ""
        self._sinks: list[Callable[[Event], None]] = []
        self._emit_lock = threading.Lock()
        self._started = clock()
        self._stop_requested: float | None = None  # when the stop began (monotonic)
        self._stop_reason = ""
        self._signals_sent: set[str] = set()
        self._terminal: Terminal | None = None
        self._ended = threading.Event()
        self._size = (spec.columns, spec.rows)
        self._restarts_left = spec.restart_on_failure
        self._early_input = bytearray()
        # Output on its way to clients (the terminal thread's, guarded by its lock).
        self._output_lock = threading.Lock()
        self._unsent: list[str] = []
        self._unsent_chars = 0
        self._skipped = 0
        self._tokens = float(OUTPUT_BURST)
        self._last_publish = clock()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.output_log = OutputLog(self.run_dir)
        self._last_lines: list[str] = []  # the last plain lines, for an exit message

    # ------------------------------------------------------------ engine-like surface

    def add_sink(self, sink: Callable[[Event], None]) -> None:
        self._sinks.append(sink)

    def emit(self, event: Event) -> None:
        with self._emit_lock:
            for sink in self._sinks:
                try:
                    sink(event)
                except Exception as error:  # a sink must never stop the supervision
                    print(f"host: a sink failed on {event.kind}: {error}", flush=True)

    def send(self, command: Command) -> None:
        """A client's command (any thread). Every command gets an Answer."""
        if isinstance(command, Stop):
            self.stop(command.reason or "stop requested")
        elif isinstance(command, TypeInput):
            self._type(command)
        elif isinstance(command, ResizeTerminal):
            self._resize(command)
        elif isinstance(command, (SetNumWorkers, SetBatchSize)):
            self.emit(self.loaders.change(command))
        else:
            self._answer(command.kind, False, f"{command.kind} is not available for a program "
                         "run: ctui can stop it (x, `ctui stop`), type into it, and change "
                         "its DataLoaders' num_workers and batch_size")

    def stop(self, reason: str) -> None:
        """Begin stopping (idempotent): the escalation runs on the main thread."""
        if self._ended.is_set():
            self._answer("stop", False, "the program has already ended")
            return
        if self._stop_requested is not None:
            self._answer("stop", True, f"already stopping ({self._stop_reason})")
            return
        self._stop_reason = reason
        self._stop_requested = self.clock()
        grace = self.spec.grace
        self._answer("stop", True, f"stopping: {self.spec.stop_signal} to the program's "
                     f"processes now, SIGTERM after {grace / 2:g}s, SIGKILL after {grace:g}s")
        self.emit(StateChanged(state=State.STOPPING, reason=reason))

    # ------------------------------------------------------------ the main loop

    def run(self) -> str:
        """Supervise until the program has ended for good; the final state."""
        self.emit(StateChanged(state=State.RUNNING, reason=f"running {self.spec.title}"))
        self.emit(Settings(task="program", run_dir=str(self.run_dir),
                           **self.loaders.settings()))
        checkpoint = self._find_checkpoint() if self.resume_checkpoint else None
        while True:
            self.attempt += 1
            code, sig = self._run_attempt(self._argv(checkpoint))
            self.exit_code, self.signal_name = code, sig
            if self._stop_requested is not None:
                state, reason = State.STOPPED, self._stop_reason
            elif code == 0:
                state, reason = State.FINISHED, "the program exited with code 0"
            elif self._will_restart(code):
                self._restarts_left -= 1
                self._restart_note(self._restarts_left)
                if self._sleep(RESTART_DELAY):
                    checkpoint = self._find_checkpoint()
                    continue
                state, reason = State.STOPPED, self._stop_reason
            else:
                state, reason = State.FAILED, self._exit_words(code, sig)
            break
        self._ended.set()
        self.output_log.close()
        self.emit(StateChanged(state=state, reason=reason))
        return state

    def _run_attempt(self, argv: list[str]) -> tuple[int | None, str]:
        """One start of the program, to its end: (exit code or None, signal name or "")."""
        self._signals_sent = set()
        self._last_lines = []
        self.loaders.new_attempt()
        started, wall_started = self.clock(), time.time()
        env = self.loaders.child_environment(self.env)
        env.setdefault("TERM", "xterm-256color")
        self.output_log.note(f"attempt {self.attempt}: {shlex.join(argv)} (in {self.spec.cwd})")
        terminal = Terminal(argv, self.spec.cwd, env, self._on_output, *self._size,
                            on_idle=self._publish_due, idle_pending=self._output_pending)
        try:
            pid = terminal.start()
        except OSError as error:
            code = EXIT_NOT_FOUND if isinstance(error, FileNotFoundError) else EXIT_CANNOT_RUN
            message = f"could not start {shlex.join(argv[:1])} in {self.spec.cwd}: " \
                      f"{error.strerror or error}"
            self.output_log.note(message)
            self.emit(ProgramExited(attempt=self.attempt, exit_code=code, message=message))
            return code, ""
        self._terminal = terminal
        with self._output_lock:
            early, self._early_input = bytes(self._early_input), bytearray()
        if early:
            terminal.write(early)
        self.emit(ProgramStarted(argv=tuple(argv), cwd=self.spec.cwd, pid=pid,
                                 attempt=self.attempt))
        watcher = None
        if self.script_logs:
            watcher = ScriptLogWatcher(Path(self.spec.cwd), wall_started, self.emit,
                                       exclude=(self.run_dir,), seen=self._script_files)
            watcher.start()
        next_sample = next_poll = self.clock()
        returncode = None
        while returncode is None:
            # asleep until the program ends or the next due look (a stop: within WAIT_AT_MOST)
            returncode = terminal.wait(max(0.0, min(WAIT_AT_MOST, next_poll - self.clock(),
                                                    next_sample - self.clock())))
            now = self.clock()
            self._escalate(terminal, now)
            if now >= next_poll:
                next_poll = now + POLL_EVERY
                for event in self.loaders.poll():
                    self.emit(event)
            if now >= next_sample and returncode is None:
                next_sample = now + SAMPLE_EVERY
                self._sample(pid)
        self._finish_attempt(terminal)
        if watcher is not None:
            watcher.close()  # after the program's end: its last scalars count
        code, sig = (returncode, "") if returncode >= 0 else (None, _signal_name(-returncode))
        if code == EXIT_NOT_FOUND and self.clock() - started < QUICK_EXIT and any(
                "command not found" in line for line in self._last_lines):
            message = f"{argv[0]}: command not found (exit code 127)"
        else:
            message = self._exit_words(code, sig, self.clock() - started)
        self.output_log.note(f"attempt {self.attempt} ended: {message}")
        for event in self.loaders.poll(final=True):  # the last epoch's row, its eval included
            self.emit(event)
        self.emit(ProgramExited(attempt=self.attempt, exit_code=code, signal=sig,
                                restarting=self._will_restart(code), message=message))
        return code, sig

    def _finish_attempt(self, terminal: Terminal) -> None:
        """After the program's main process exits: give the rest of its group a moment, then
        end it; read the last of the output; release the terminal."""
        if terminal.group_alive():
            terminal.wait_for_eof(LEFTOVER_GRACE / 2)
            if terminal.signal_group(signal.SIGTERM):
                deadline = self.clock() + LEFTOVER_GRACE
                while terminal.group_alive() and self.clock() < deadline:
                    time.sleep(0.05)
                terminal.signal_group(signal.SIGKILL)
        terminal.wait_for_eof(LEFTOVER_GRACE)
        terminal.close()
        self._terminal = None
        self._publish_due(force=True)
        self.output_log.flush_line()

    def _escalate(self, terminal: Terminal, now: float) -> None:
        if self._stop_requested is None and self._out_of_time(ahead=self.spec.grace):
            limit = self.spec.time_limit or 0
            self.stop(f"time limit reached ({limit:g}s); stopping the program within its "
                      f"grace of {self.spec.grace:g}s")
        if self._stop_requested is None:
            return
        waited = now - self._stop_requested
        grace = self.spec.grace
        for name, due in ((self.spec.stop_signal, 0.0), ("SIGTERM", grace / 2),
                          ("SIGKILL", grace)):
            if waited >= due and name not in self._signals_sent:
                self._signals_sent.add(name)
                if terminal.signal_group(signal_number(name)):
                    self.emit(LogLine(message=f"sent {name} to the program's processes"))
                break  # one step per tick: the program gets to react to each

    def _out_of_time(self, ahead: float = 0.0) -> bool:
        limit = self.spec.time_limit
        return limit is not None and self.clock() - self._started >= limit - ahead

    def _will_restart(self, code: int | None) -> bool:
        return (self._stop_requested is None and code != 0 and self._restarts_left > 0
                and not self._out_of_time())

    def _sleep(self, seconds: float) -> bool:
        """Wait before a restart; False when a stop came meanwhile."""
        deadline = self.clock() + seconds
        while self.clock() < deadline:
            if self._stop_requested is not None:
                return False
            time.sleep(0.05)
        return self._stop_requested is None

    def _restart_note(self, left: int) -> None:
        self.emit(LogLine(level="warning", message=f"restarting the program in "
                          f"{RESTART_DELAY:g}s (attempt {self.attempt + 1}; {left} more "
                          "restarts allowed after it)"))

    def _find_checkpoint(self) -> Path | None:
        if not self.spec.checkpoint_glob:
            return None
        path, warnings = newest_loadable(self.spec.cwd, self.spec.checkpoint_glob)
        for warning in warnings:
            self.emit(LogLine(level="warning", message=warning))
        if path is not None:
            self.emit(LogLine(message=f"resuming from {path}"))
        return path

    def _argv(self, checkpoint: Path | None) -> list[str]:
        argv = list(self.spec.argv)
        if checkpoint is not None:
            argv += shlex.split(self.spec.resume_args.format(checkpoint=shlex.quote(
                str(checkpoint))))
        return argv

    def _exit_words(self, code: int | None, sig: str, seconds: float | None = None) -> str:
        if code is None:
            words = f"killed by {sig or 'a signal'}"
        else:
            words = f"exited with code {code}"
        if seconds is not None and seconds < QUICK_EXIT and code != 0:
            words += f" {seconds:.1f}s after it started"
        last = next((line for line in reversed(self._last_lines) if line.strip()), "")
        if code not in (0, None) and last:
            words += f"; its last line: {last.strip()[:160]}"
        return words

    # ------------------------------------------------------------ commands

    def _answer(self, command: str, accepted: bool, message: str) -> None:
        self.emit(Answer(command=command, accepted=accepted, message=message))

    def _type(self, command: TypeInput) -> None:
        terminal = self._terminal
        data = str(command.data).encode(errors="replace")
        if terminal is None and not self._ended.is_set():
            with self._output_lock:  # typed before the program (re)starts: held until then
                room = len(self._early_input) + len(data) <= MAX_INPUT_PENDING
                if room:
                    self._early_input += data
            if room:
                self._answer("input", True, f"holding {len(data)} typed bytes until the "
                             "program starts")
            else:
                self._answer("input", False, "the program has not started yet and "
                             f"{MAX_INPUT_PENDING} typed bytes are waiting for it")
        elif terminal is None:
            self._answer("input", False, "the program has ended: nothing to type into")
        elif not terminal.write(data):
            self._answer("input", False, "the program has not read what was typed before; "
                         "try again once it reads its input")
        else:
            self._answer("input", True, f"typed {len(data)} bytes")

    def _resize(self, command: ResizeTerminal) -> None:
        columns, rows = command.columns, command.rows
        if not all(isinstance(value, int) and not isinstance(value, bool)
                   for value in (columns, rows)) or not (
                10 <= columns <= 1000 and 2 <= rows <= 1000):
            self._answer("resize", False, f"{columns!r}x{rows!r} is not a terminal size: use "
                         "10 to 1000 columns and 2 to 1000 rows")
            return
        self._size = (columns, rows)
        if self._terminal is not None:
            self._terminal.resize(columns, rows)
        self._answer("resize", True, f"terminal is {columns}x{rows}")

    # ------------------------------------------------------------ output (terminal thread)

    def _on_output(self, data: bytes) -> None:
        text = self._decoder.decode(data)
        if not text:
            return
        self.output_log.feed(text)
        self._remember_lines(text)
        with self._output_lock:
            self._unsent.append(text)
            self._unsent_chars += len(text)
            if self._unsent_chars > MAX_UNSENT:
                self._shed()
        self._publish_due()

    def _remember_lines(self, text: str) -> None:
        """The last few lines as plain text, to quote when the program fails."""
        if "\n" not in text and self._last_lines:
            self._last_lines[-1] = (self._last_lines[-1] + text)[-2000:]
            return
        pieces = text[-4000:].split("\n")
        if self._last_lines:
            pieces[0] = self._last_lines.pop() + pieces[0]
        self._last_lines = (self._last_lines + [plain_line(p[-2000:]) for p in pieces])[-5:]

    def _shed(self) -> None:
        """Keep the newest MAX_UNSENT characters for clients (caller holds the lock)."""
        text = "".join(self._unsent)
        cut = len(text) - MAX_UNSENT // 2
        newline = text.find("\n", cut)
        if 0 <= newline < cut + 4096:  # resume at a line start where one is near
            cut = newline + 1
        self._skipped += cut
        self._unsent = [text[cut:]]
        self._unsent_chars = len(text) - cut

    def _output_pending(self) -> bool:
        return bool(self._unsent or self._skipped)  # (a racy read is fine: a hint to wake)

    def _publish_due(self, force: bool = False) -> None:
        """Publish the unsent output when PUBLISH_EVERY has passed (terminal thread, or the
        main thread at an attempt's end)."""
        now = self.clock()
        if not force and now - self._last_publish < PUBLISH_EVERY:
            return
        with self._output_lock:
            if not self._unsent and not self._skipped:
                self._last_publish = now
                return
            self._tokens = min(float(OUTPUT_BURST),
                               self._tokens + (now - self._last_publish) * OUTPUT_RATE)
            self._last_publish = now
            text = "".join(self._unsent)
            allowed = max(4096, int(self._tokens))
            send, rest = text[:allowed], text[allowed:]
            if rest and force:  # the attempt is over: what is left is the final screen
                self._skipped += len(text) - allowed
                send, rest = text[-allowed:], ""
            self._unsent = [rest] if rest else []
            self._unsent_chars = len(rest)
            self._tokens -= len(send)
            skipped, self._skipped = self._skipped, 0
        if skipped:
            send = (f"\r\n\x1b[7m[ctui: {skipped:,} characters of output skipped here; "
                    f"output.log has them]\x1b[0m\r\n") + send
        self.emit(ProgramOutput(data=send))

    # ------------------------------------------------------------ gauges

    def _sample(self, pid: int) -> None:
        if self.sampler is None:
            return
        try:
            rows = self.sampler.sample(pid)
        except Exception as error:  # a gauge never stops the supervision
            self.emit(LogLine(level="warning", message=f"process sampling failed: {error}"))
            self.sampler = None
            return
        self.emit(ProcessTree(rows=rows))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
