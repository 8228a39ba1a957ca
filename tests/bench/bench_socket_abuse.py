"""Training throughput of a process serving its run on a HostServer while attackers abuse the
socket, against the same training left alone. Target: ratio >= 0.90 for each kind of abuse, and
a real client still attaches and is answered during it.

    python tests/bench/bench_socket_abuse.py                 # 12 rounds of 5 phases, ~4 minutes
    python tests/bench/bench_socket_abuse.py --rounds 6 --kinds churn,garbage --no-pin

One trainer, like a run host: the classic MNIST network of pytorch/examples trained on random
28x28 images on its main thread, a HostServer on RUN/control.sock, a step event every 10 steps
and an epoch event every 1024 samples, commands applied between steps. (Not `start_host`: this
measures the socket server alone, whatever else the engine does.) It reports the time of every
step, and the CPU time and wake-ups of its I/O thread so far.

Phases, each by processes of the same user, switched on and off with SIGCONT and SIGSTOP:
  none       no one else
  spin       two processes busy-looping, touching no socket: what a busy neighbour alone costs
  churn1500  one process connecting and closing 1,500 times a second (the issue's report)
  churn      two processes connecting and closing as fast as they can, never waiting
  garbage    two processes of four clients each sending garbage lines (short ones and 60 KB
             JSON-looking ones) as fast as they can, reading nothing, never waiting,
             reconnecting when hung up on

This machine's speed drifts (and others may use it), so the phases alternate every few seconds in
one run, in rotated order, and each is compared with the "none" phase of the same round. A phase's
throughput counts only its steps after the first second (the previous phase settling). The
trainer gets core 0 and the others core 1 (--no-pin: they share every core). Halfway through each
phase a real client attaches, reads the history and sends a command that changes nothing.
Printed: per phase kind the median steps/s, the median ratio to "none" of the same round, the
I/O thread's share of a core and wake-ups, and how long the real client took.

Read "spin" first: if it is well under 1, other work on the machine moves onto the trainer's core
when the attackers' core is busy, and every ratio measures that, not the host. The I/O thread's
share of a core is the host's own cost whatever else runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

PROCESSES = {"none": 0, "spin": 2, "churn1500": 1, "churn": 2, "garbage": 2}
PACED_CHURN = 1500  # connections a second, in churn1500
GARBAGE_CLIENTS = 8
SETTLE = 1.0  # seconds at the start of a phase not counted: the last phase's queues drain
STOP = threading.Event()  # set in an attacker by SIGTERM: print what was done, exit


# ---------------------------------------------------------------- attackers (own processes)


def attack_spin(address: str) -> int:
    """No attack: a process as busy as an attacker."""
    spins = 0
    while not STOP.is_set():
        spins += 1
    return spins


def attack_churn(address: str) -> int:
    """Connect and close, as fast as one process can; returns the connections made. A connect
    the host has no room for fails at once (EAGAIN), and is tried again at once."""
    made = 0
    while not STOP.is_set():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(address)
            made += 1
        except OSError:
            pass
        finally:
            sock.close()
    return made


def attack_paced_churn(address: str) -> int:
    """Connect and close at PACED_CHURN a second, the rate of the issue's report."""
    made, due = 0, time.monotonic()
    while not STOP.is_set():
        due = max(due + 0.01, time.monotonic() - 0.05)  # after a SIGSTOP: no catching up
        for _ in range(PACED_CHURN // 100):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.connect(address)
                made += 1
            sock.close()
        time.sleep(max(0.0, due - time.monotonic()))
    return made


def garbage_chunk() -> bytes:
    """About 200 KB of lines that are not commands: many short ones and a few long JSON-looking
    ones a host might be tempted to decode."""
    short = b"garbage, not a command\n" * 2000 + b"[1, 2, 3]\n" * 1000
    long = b'{"type": "' + b"x" * 60000 + b'"}\n'
    return short + long + short + long + long


def attack_garbage(address: str) -> int:
    """GARBAGE_CLIENTS / PROCESSES["garbage"] clients, in turn on one thread (so this process
    loads its core like a spinning one), sending garbage, reading nothing, never waiting: a send
    the host has no room for is tried again at once. Returns the bytes sent."""
    chunk, sent = garbage_chunk(), 0
    clients: list[socket.socket | None] = [None] * (GARBAGE_CLIENTS // PROCESSES["garbage"])
    while not STOP.is_set():
        for index, sock in enumerate(clients):
            if sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.setblocking(False)
                try:
                    sock.connect(address)
                except OSError:  # no room: again at once
                    sock.close()
                    continue
                clients[index] = sock
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                pass  # no room for more: again at once
            except OSError:  # hung up on: a new connection
                sock.close()
                clients[index] = None
    return sent


def attacker_main(kind: str, address: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    os.kill(os.getpid(), signal.SIGSTOP)  # until the bench starts this phase
    attack = {"spin": attack_spin, "churn": attack_churn, "churn1500": attack_paced_churn,
              "garbage": attack_garbage}[kind]
    print(attack(address), flush=True)


# ---------------------------------------------------------------- the trainer (own process)


def trainer_main(run_dir: Path, batch_size: int) -> None:
    """Train on the main thread while a HostServer serves RUN/control.sock, until SIGTERM;
    print one line per step: its end time and the I/O thread's CPU seconds so far."""
    import queue

    import torch
    import torch.nn.functional as F
    from torch import nn

    from ctui.engine.events import EpochEnded, LogLine, SetNumWorkers, StepLogged
    from ctui.engine.host.server import HostServer

    class Net(nn.Module):  # pytorch/examples mnist/main.py
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
            self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
            self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
            x = self.dropout2(F.relu(self.fc1(torch.flatten(self.dropout1(x), 1))))
            return F.log_softmax(self.fc2(x), dim=1)

    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    look_live(run_dir)
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # pinned to one core: one thread
    torch.manual_seed(1)
    samples = 1024
    images, labels = torch.randn(samples, 1, 28, 28), torch.randint(0, 10, (samples,))
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    commands: queue.SimpleQueue = queue.SimpleQueue()
    server = HostServer(run_dir, commands.put).start()
    io_thread = next(t for t in threading.enumerate() if t.name == "ctui-host-io")
    step = epoch = 0
    while not STOP.is_set():
        epoch += 1
        for first in range(0, samples, batch_size):
            while not commands.empty():
                if isinstance(command := commands.get(), SetNumWorkers):
                    server.publish(LogLine(message=f"num_workers is now {command.num_workers}"))
            optimizer.zero_grad()
            loss = F.nll_loss(model(images[first:first + batch_size]),
                              labels[first:first + batch_size])
            loss.backward()
            optimizer.step()
            step += 1
            if step % 10 == 0:
                server.publish(StepLogged(epoch=epoch, step=step, loss=loss.item()))
            print(f"{time.monotonic():.6f} {io_thread_use(io_thread)}", flush=True)
        server.publish(EpochEnded(epoch=epoch, epochs=10**6))
    server.shutdown(flush_seconds=0.5)


def io_thread_use(thread: threading.Thread) -> str:
    """The thread's CPU seconds and times it was scheduled in, so far."""
    with open(f"/proc/self/task/{thread.native_id}/schedstat") as stat:
        run_ns, _, slices = stat.read().split()
    return f"{int(run_ns) / 1e9:.6f} {slices}"


def look_live(run_dir: Path) -> None:
    """Record this process as the run's host and hold its lock, as a run host does: a client
    that finds the socket busy then waits for it rather than calling the run dead."""
    import fcntl

    import psutil

    (run_dir / "host.json").write_text(json.dumps({"pid": os.getpid(), "started": time.time(),
                                                   "created": psutil.Process().create_time()}))
    lock = os.open(run_dir / "host.lock", os.O_RDWR | os.O_CREAT, 0o600)  # held until exit
    fcntl.flock(lock, fcntl.LOCK_EX)


# ---------------------------------------------------------------- the bench process


def spawn(arguments: list[str], cpus: set[int] | None, log: Path | None = None
          ) -> subprocess.Popen:
    with open(log or os.devnull, "w") as stderr:  # the host's notes go to its log
        return subprocess.Popen(
            [sys.executable, __file__, *arguments], stdout=subprocess.PIPE, stderr=stderr,
            text=True, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)


def wait_stopped(process: subprocess.Popen) -> None:
    """Until the attacker has stopped itself, ready for its phase."""
    while True:
        with open(f"/proc/{process.pid}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.01)


def probe(run_dir: Path) -> float | None:
    """Seconds a real client takes to attach, read the history and have a command answered;
    None if it could not."""
    from ctui.engine.events import SetNumWorkers
    from ctui.engine.host import RunClient

    start = time.monotonic()
    try:
        with RunClient.connect(run_dir, timeout=10) as client:
            client.history(timeout=10)
            client.send(SetNumWorkers(0))
            answered = client.wait_for(
                lambda e: e.kind == "log" and "num_workers" in e.message, timeout=10)
    except Exception:
        return None
    return time.monotonic() - start if answered is not None else None


def steps_per_second(steps: list[tuple[float, ...]], start: float, end: float
                     ) -> tuple[float, float, float]:
    """(steps/s, the I/O thread's share of a core, its wake-ups a second) over the steps that
    ended in [start, end]."""
    inside = [step for step in steps if start <= step[0] <= end]
    if len(inside) < 2:
        return 0.0, 0.0, 0.0
    (t0, io0, wake0), (t1, io1, wake1) = inside[0], inside[-1]
    return (len(inside) - 1) / (t1 - t0), (io1 - io0) / (t1 - t0), (wake1 - wake0) / (t1 - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--phase", type=float, default=4.0, help="seconds per phase")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--kinds", default="spin,churn1500,churn,garbage")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--attack", nargs=2, metavar=("KIND", "SOCKET"), help=argparse.SUPPRESS)
    parser.add_argument("--train", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        return attacker_main(*args.attack)
    if args.train:
        return trainer_main(Path(args.train), args.batch_size)

    available = sorted(os.sched_getaffinity(0))
    cpus: tuple = (None, None)
    if not args.no_pin and len(available) >= 2:
        cpus = ({available[0]}, {available[1]})
    kinds = ["none", *args.kinds.split(",")]
    print(f"MNIST net on random images, batch size {args.batch_size}; trainer on cores "
          f"{sorted(cpus[0] or available)}, others on {sorted(cpus[1] or available)}; "
          f"{args.rounds} rounds of {len(kinds)} phases of {args.phase:g}s", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "run"
        run_dir.mkdir(mode=0o700)
        results = bench(args, kinds, run_dir, cpus)
    report(kinds, *results)


def bench(args: argparse.Namespace, kinds: list[str], run_dir: Path, cpus: tuple):
    trainer = spawn(["--train", str(run_dir), "--batch-size", str(args.batch_size)], cpus[0],
                    run_dir.parent / "host.log")
    steps: list[tuple[float, ...]] = []
    reader = threading.Thread(target=lambda: steps.extend(
        tuple(map(float, line.split())) for line in trainer.stdout))
    reader.start()
    groups: dict[str, list[subprocess.Popen]] = {}
    try:
        while not (run_dir / "control.sock").exists() or len(steps) < 20:  # warmed up
            if trainer.poll() is not None:
                raise RuntimeError(f"the trainer exited with {trainer.returncode}")
            time.sleep(0.05)
        for kind in kinds:
            groups[kind] = [spawn(["--attack", kind, str(run_dir / "control.sock")], cpus[1])
                            for _ in range(PROCESSES[kind])]
            for process in groups[kind]:
                wait_stopped(process)
        phases, probes = run_phases(args, kinds, run_dir, groups)
    finally:
        done = {}
        for kind, processes in groups.items():
            for process in processes:
                process.terminate()
                process.send_signal(signal.SIGCONT)
            done[kind] = sum(int(p.communicate()[0].strip() or 0) for p in processes)
        trainer.terminate()
        trainer.wait()
        reader.join()
    return steps, phases, probes, done


def run_phases(args: argparse.Namespace, kinds: list[str], run_dir: Path,
               groups: dict[str, list[subprocess.Popen]]):
    """[(round, kind, start, end)] of the counted part of each phase, and the probes' times."""
    phases, probes = [], defaultdict(list)
    for round_ in range(args.rounds):
        shift = round_ % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            for process in groups[kind]:
                process.send_signal(signal.SIGCONT)
            start = time.monotonic()
            time.sleep(args.phase / 2)
            probes[kind].append(probe(run_dir))
            time.sleep(max(0.0, start + args.phase - time.monotonic()))
            for process in groups[kind]:
                process.send_signal(signal.SIGSTOP)
            phases.append((round_, kind, start + SETTLE, time.monotonic()))
    return phases, probes


def report(kinds: list[str], steps, phases, probes, done) -> None:
    speed: dict[tuple[int, str], float] = {}
    io_share: dict[str, list[float]] = defaultdict(list)
    wakeups: dict[str, list[float]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    for round_, kind, start, end in phases:
        speed[round_, kind], share, woken = steps_per_second(steps, start, end)
        io_share[kind].append(share)
        wakeups[kind].append(woken)
        seconds[kind] += end - start + SETTLE
    rounds = sorted({round_ for round_, _ in speed})
    for kind in kinds:
        speeds = [speed[r, kind] for r in rounds]
        line = (f"{kind:>8}: {statistics.median(speeds):6.1f} steps/s median "
                f"(min {min(speeds):.1f}, max {max(speeds):.1f})")
        if kind != "none":
            ratios = [speed[r, kind] / speed[r, "none"] for r in rounds]
            line += (f", ratio to none {statistics.median(ratios):.3f} median of rounds (min "
                     f"{min(ratios):.3f}, max {max(ratios):.3f})")
        line += (f"; I/O thread {statistics.median(io_share[kind]):.1%} of a core, "
                 f"{statistics.median(wakeups[kind]):,.0f} wake-ups/s")
        if kind.startswith("churn"):
            line += f"; {done[kind] / seconds[kind]:,.0f} connections/s"
        if kind == "garbage":
            line += f"; {done[kind] / seconds[kind] / 2**20:,.1f} MiB/s of garbage sent"
        answered = [took for took in probes[kind] if took is not None]
        line += (f"; a real client answered {len(answered)}/{len(probes[kind])} times, "
                 f"median {statistics.median(answered) if answered else float('nan'):.2f}s, "
                 f"max {max(answered) if answered else float('nan'):.2f}s")
        print(line)
    if "spin" in kinds:
        for kind in kinds:
            if kind not in ("none", "spin", "churn1500"):
                ratios = [speed[r, kind] / speed[r, "spin"] for r in rounds]
                print(f"{kind}/spin (the host's own cost, the neighbour's taken out): "
                      f"{statistics.median(ratios):.3f} median of rounds")


if __name__ == "__main__":
    main()
