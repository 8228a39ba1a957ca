"""Training throughput of a process serving its run on a HostServer while the socket is abused,
against the same training left alone. Target: ratio >= 0.90 for each kind of abuse, and a real
client still attaches and is answered during it.

    python tests/bench/bench_socket_abuse.py                   # 4 repetitions
    python tests/bench/bench_socket_abuse.py --reps 3 --epochs 5 --no-pin

The trainer is a process like a run host: the classic MNIST network of pytorch/examples trained on
random 28x28 images on its main thread, a HostServer on RUN/control.sock, a step event every 10
steps and an epoch event each epoch, commands applied between steps. (Not `start_host`: this
measures the socket server alone, whatever else the engine does.)

Kinds of abuse, each by attacker processes of the same user, for the whole run:
  churn    two processes connecting and closing as fast as they can
  garbage  eight clients sending garbage lines (short ones and 60 KB JSON-looking ones) as fast
           as they can, reading nothing, reconnecting whenever the host hangs up on them

On a 2-core machine an attacker flat out takes a core whatever the host does, so by default the
trainer gets core 0 and the attackers core 1: what is measured is what the server itself spends
on them. --no-pin lets them share every core.

Each repetition trains once per condition, in rotated order (so drift in the machine's speed
falls on all), and takes the median samples/s over the epochs after the first (warm-up). Halfway
through each run a real client attaches, reads the history and sends a command that changes
nothing (the same in every condition). Printed: each run, each repetition's ratios, then per kind
of abuse the median of the ratios and the ratio of the medians.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

ATTACKERS = {"churn": 2, "garbage": 1}  # processes per kind (garbage: 8 clients in one)
GARBAGE_CLIENTS = 8
STOP = threading.Event()  # set in an attacker by SIGTERM: print what was done, exit


# ---------------------------------------------------------------- attackers (own processes)


def attack_churn(address: str) -> int:
    """Connect and close, as fast as one process can; returns the connections made."""
    made = 0
    while not STOP.is_set():
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(1.0)
        try:
            sock.connect(address)
            made += 1
        except OSError:
            pass
        finally:
            sock.close()
    return made


def garbage_chunk() -> bytes:
    """About 200 KB of lines that are not commands: many short ones and a few long JSON-looking
    ones a host might be tempted to decode."""
    short = b"garbage, not a command\n" * 2000 + b"[1, 2, 3]\n" * 1000
    long = b'{"type": "' + b"x" * 60000 + b'"}\n'
    return short + long + short + long + long


def attack_garbage(address: str) -> int:
    """GARBAGE_CLIENTS threads sending garbage and reading nothing; returns bytes sent."""
    chunk, sent = garbage_chunk(), [0] * GARBAGE_CLIENTS

    def one(index: int) -> None:
        while not STOP.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(0.5)
            try:
                sock.connect(address)
                while not STOP.is_set():
                    try:
                        sent[index] += sock.send(chunk)
                    except TimeoutError:  # the host reads no more for now: keep pushing
                        continue
            except OSError:
                time.sleep(0.001)  # hung up on, or the backlog is full: again
            finally:
                sock.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(GARBAGE_CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(sent)


def attacker_main(kind: str, address: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    done = attack_churn(address) if kind == "churn" else attack_garbage(address)
    print(done, flush=True)


# ---------------------------------------------------------------- the trainer (own process)


def trainer_main(run_dir: Path, epochs: int, samples: int, batch_size: int) -> None:
    """Train on the main thread while a HostServer serves RUN/control.sock; print one JSON line:
    samples/s of each epoch."""
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

    look_live(run_dir)
    torch.manual_seed(1)
    images, labels = torch.randn(samples, 1, 28, 28), torch.randint(0, 10, (samples,))
    model = Net()
    optimizer = torch.optim.Adadelta(model.parameters(), lr=1.0)
    commands: queue.SimpleQueue = queue.SimpleQueue()
    import ctui.engine.host.server as srv
    for item in os.environ.get("SRV", "").split(","):
        if item:
            name, value = item.split("=")
            setattr(srv, name, type(getattr(srv, name))(value))
    server = HostServer(run_dir, commands.put).start()
    speeds = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        for step, first in enumerate(range(0, samples, batch_size)):
            while not commands.empty():
                if isinstance(command := commands.get(), SetNumWorkers):
                    server.publish(LogLine(message=f"num_workers is now {command.num_workers}"))
            optimizer.zero_grad()
            loss = F.nll_loss(model(images[first:first + batch_size]),
                              labels[first:first + batch_size])
            loss.backward()
            optimizer.step()
            if step % 10 == 0:
                server.publish(StepLogged(epoch=epoch, step=step, loss=loss.item()))
        speeds.append(samples / (time.perf_counter() - start))
        server.publish(EpochEnded(epoch=epoch, epochs=epochs, samples_per_second=speeds[-1]))
    io = [t for t in threading.enumerate() if t.name == "ctui-host-io"][0]
    import psutil
    cpu = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    print("io cpu", cpu.get(io.native_id), "main", cpu.get(threading.main_thread().native_id), "all", sum(cpu.values()), file=sys.stderr)
    server.shutdown(flush_seconds=0.5)
    print(json.dumps(speeds), flush=True)


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


def stop_attackers(attackers: list[subprocess.Popen]) -> int:
    """What they did in all: connections made (churn) or bytes sent (garbage)."""
    for attacker in attackers:
        attacker.terminate()
    return sum(int(attacker.communicate()[0].strip() or 0) for attacker in attackers)


def probe(run_dir: Path, delay: float) -> str:
    """After delay seconds, what a real client gets: attach, read the history, send a command."""
    from ctui.engine.events import SetNumWorkers
    from ctui.engine.host import RunClient

    time.sleep(delay)
    start = time.monotonic()
    try:
        with RunClient.connect(run_dir, timeout=10) as client:
            history = client.history(timeout=10)
            client.send(SetNumWorkers(0))
            answered = client.wait_for(
                lambda e: e.kind == "log" and "num_workers" in e.message, timeout=10)
    except Exception as error:
        return f"probe failed: {type(error).__name__}: {error}"
    return (f"a client attached in {time.monotonic() - start:.2f}s, {len(history)} events, its "
            f"command {'answered' if answered is not None else 'not answered'}")


def run_once(args: argparse.Namespace, kind: str, runs: Path, cpus: tuple, probe_after: float
             ) -> tuple[list[float], str, int]:
    """Epoch speeds after the first, the probe's outcome and what the attackers did."""
    run_dir = runs / f"{kind}-{time.monotonic_ns()}"
    run_dir.mkdir(mode=0o700)
    trainer = spawn(["--train", str(run_dir), "--epochs", str(args.epochs), "--samples",
                     str(args.samples), "--batch-size", str(args.batch_size)], cpus[0],
                    run_dir / "host.log")
    while not (run_dir / "control.sock").exists():
        if trainer.poll() is not None:
            raise RuntimeError(f"the trainer exited with {trainer.returncode}")
        time.sleep(0.01)
    attackers = [spawn(["--attack", kind, str(run_dir / "control.sock")], cpus[1])
                 for _ in range(ATTACKERS.get(kind, 0))]
    outcome: list[str] = []
    prober = threading.Thread(target=lambda: outcome.append(probe(run_dir, probe_after)))
    prober.start()
    try:
        output = trainer.communicate()[0]
    finally:
        done = stop_attackers(attackers)
        prober.join()
    speeds = json.loads(output.strip().splitlines()[-1])
    return speeds[1:] or speeds, outcome[0], done


def attacked(kind: str, done: int, seconds: float) -> str:
    if kind == "churn":
        return f", {done / seconds:,.0f} connections/s"
    if kind == "garbage":
        return f", {done / seconds / 2**20:,.1f} MiB/s of garbage sent"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--samples", type=int, default=1024, help="per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--kinds", default="churn,garbage")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--attack", nargs=2, metavar=("KIND", "SOCKET"), help=argparse.SUPPRESS)
    parser.add_argument("--train", metavar="RUN_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        attacker_main(*args.attack)
        return
    if args.train:
        trainer_main(Path(args.train), args.epochs, args.samples, args.batch_size)
        return

    available = sorted(os.sched_getaffinity(0))
    cpus: tuple = (None, None)
    if not args.no_pin and len(available) >= 2:
        cpus = ({available[0]}, {available[1]})
    kinds = ["none", *args.kinds.split(",")]
    print(f"MNIST net on random images, {args.epochs} epochs of {args.samples} samples, batch "
          f"size {args.batch_size}; trainer on cores {sorted(cpus[0] or available)}, attackers "
          f"on {sorted(cpus[1] or available)}; {args.reps} repetitions", flush=True)
    speeds: dict[str, list[float]] = {kind: [] for kind in kinds}
    ratios: dict[str, list[float]] = {kind: [] for kind in kinds[1:]}
    with tempfile.TemporaryDirectory() as folder:
        runs, probe_after = Path(folder), 0.0
        for rep in range(args.reps):
            this: dict[str, float] = {}
            for kind in kinds[rep % len(kinds):] + kinds[: rep % len(kinds)]:
                started = time.monotonic()
                epochs, outcome, done = run_once(args, kind, runs, cpus, probe_after or 3.0)
                took = time.monotonic() - started
                if kind == "none" and not probe_after:
                    probe_after = took / 2
                this[kind] = statistics.median(epochs)
                speeds[kind].append(this[kind])
                print(f"rep {rep + 1} {kind:>8}: {this[kind]:,.0f} samples/s ({took:.0f}s"
                      f"{attacked(kind, done, took)}); {outcome}", flush=True)
            for kind in kinds[1:]:
                ratios[kind].append(this[kind] / this["none"])
            print(f"rep {rep + 1} ratios: " + ", ".join(f"{kind}/none {ratios[kind][-1]:.3f}"
                                                        for kind in kinds[1:]), flush=True)
    for kind in kinds[1:]:
        median = statistics.median(speeds[kind]) / statistics.median(speeds["none"])
        print(f"{kind}/none: median of ratios {statistics.median(ratios[kind]):.3f} (min "
              f"{min(ratios[kind]):.3f}, max {max(ratios[kind]):.3f}); ratio of medians "
              f"{median:.3f} (target >= 0.90)")


if __name__ == "__main__":
    main()
