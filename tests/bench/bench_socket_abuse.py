"""Training throughput of a run host while its socket is abused, against the same run left alone.
Target: ratio >= 0.90 for each kind of abuse; and a real client still attaches during it.

    python tests/bench/bench_socket_abuse.py                   # 4 repetitions, fake data
    python tests/bench/bench_socket_abuse.py --reps 3 --epochs 5 --no-pin

Kinds of abuse, each by attacker processes of the same user, for the whole run:
  churn    two processes connecting and closing as fast as they can
  garbage  eight clients sending garbage lines (short ones and 60 KB JSON-looking ones) as fast
           as they can, reconnecting whenever the host hangs up on them

On a 2-core machine an attacker flat out takes a core whatever the host does, so by default the
host (and so its training) gets core 0 and the attackers core 1: what is measured is what the
host itself spends on them. --no-pin lets them share both cores.

Each repetition trains the same run once per condition, in rotated order (so drift in the
machine's speed falls on all), and takes the median samples/s over the epochs after the first
(warm-up). Halfway through each run a client attaches, reads the history and sends a command
(the same in every condition). Printed: each run, then the median ratio of each kind of abuse
to none, and the ratio of the medians.
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
    """About 256 KB of lines that are not commands: many short ones and a few long JSON-looking
    ones the host might be tempted to decode."""
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


# ---------------------------------------------------------------- the bench process


def epoch_speeds(run_dir: Path) -> list[float]:
    """Training samples/s of each epoch after the first (warm-up)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["samples_per_second"] for r in records if r.get("type") == "epoch"]
    return speeds[1:] or speeds


def start_attackers(kind: str, run_dir: Path, cpus: set[int] | None) -> list[subprocess.Popen]:
    if kind == "none":
        return []
    command = [sys.executable, __file__, "--attack", kind, str(run_dir / "control.sock")]
    return [subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                             preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
            for _ in range(ATTACKERS[kind])]


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
            client.send(SetNumWorkers(0))  # what it has already: changes nothing
            answered = client.wait_for(
                lambda e: e.kind == "log" and "num_workers" in e.message, timeout=10)
    except Exception as error:
        return f"probe failed: {type(error).__name__}: {error}"
    return (f"probe attached in {time.monotonic() - start:.2f}s, {len(history)} events, "
            f"command {'answered' if answered is not None else 'not answered'}")


def run_once(config, kind: str, runs: Path, attacker_cpus: set[int] | None,
             probe_after: float) -> tuple[list[float], str, int]:
    """Epoch speeds, the probe's outcome and what the attackers did."""
    from ctui.engine.host import start_host
    from ctui.engine.host.registry import host_is_live

    run_dir = start_host(config.replace(run_dir=str(runs / f"{kind}-{time.monotonic_ns()}")))
    attackers = start_attackers(kind, run_dir, attacker_cpus)
    outcome: list[str] = []
    prober = threading.Thread(target=lambda: outcome.append(probe(run_dir, probe_after)))
    prober.start()
    try:
        while host_is_live(run_dir):
            time.sleep(0.2)
    finally:
        done = stop_attackers(attackers)
        prober.join()
    return epoch_speeds(run_dir), outcome[0], done


def attacked(kind: str, done: int, seconds: float) -> str:
    if kind == "churn":
        return f", {done / seconds:,.0f} connections/s"
    if kind == "garbage":
        return f", {done / seconds / 2**20:,.1f} MiB/s of garbage sent"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--fake-size", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--kinds", default="churn,garbage")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--attack", nargs=2, metavar=("KIND", "SOCKET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.attack:
        attacker_main(args.attack[0], args.attack[1])
        return

    from ctui.engine import RunConfig

    cpus = sorted(os.sched_getaffinity(0))
    host_cpus = attacker_cpus = None
    if not args.no_pin and len(cpus) >= 2:
        host_cpus, attacker_cpus = {cpus[0]}, {cpus[1]}
        os.sched_setaffinity(0, host_cpus)  # the host inherits it
    config = RunConfig(task="fake", epochs=args.epochs, batch_size=args.batch_size,
                       fake_size=args.fake_size, log_interval=10, device="cpu",
                       tensorboard=False, checkpoint_every_minutes=0)
    kinds = ["none", *args.kinds.split(",")]
    print(f"fake data ({args.fake_size} samples), {args.epochs} epochs, batch size "
          f"{args.batch_size}, cpu; host on cores {sorted(host_cpus or cpus)}, attackers on "
          f"{sorted(attacker_cpus or cpus)}; {args.reps} repetitions", flush=True)
    speeds: dict[str, list[float]] = {kind: [] for kind in kinds}
    ratios: dict[str, list[float]] = {kind: [] for kind in kinds[1:]}
    with tempfile.TemporaryDirectory() as folder:
        runs = Path(folder)
        probe_after = 0.0
        for rep in range(args.reps):
            order = kinds[rep % len(kinds):] + kinds[: rep % len(kinds)]
            this: dict[str, float] = {}
            for kind in order:
                started = time.monotonic()
                epochs, outcome, done = run_once(config, kind, runs, attacker_cpus, probe_after)
                took = time.monotonic() - started
                probe_after = probe_after or took / 2  # the first run (unabused) sets it
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
