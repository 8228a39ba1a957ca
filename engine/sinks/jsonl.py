"""metrics.jsonl: one JSON object per logged step and per epoch, appended as they happen."""

from __future__ import annotations

import json
from pathlib import Path

from ..events import EpochEnded, Event, StepLogged
from ..runs import METRICS_FILE


class MetricsFile:
    def __init__(self, run_dir: Path, resume_global_step: int | None = None) -> None:
        self.path = run_dir / METRICS_FILE
        if resume_global_step is not None:
            self._drop_after(resume_global_step)
        self._handle = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __call__(self, event: Event) -> None:
        if isinstance(event, (StepLogged, EpochEnded)):
            self._handle.write(json.dumps(event.to_dict()) + "\n")
            # Flush per record so `tail -f`, `ctui logs -f` and a crash all see whole lines.
            self._handle.flush()

    def _drop_after(self, global_step: int) -> None:
        """A resumed run repeats the steps after its checkpoint: drop their old records so each
        step appears once."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a crash
            if record.get("global_step", 0) <= global_step:
                kept.append(line + "\n")
        temp = self.path.with_name(self.path.name + ".tmp")
        temp.write_text("".join(kept), encoding="utf-8")
        temp.replace(self.path)

    def close(self) -> None:
        self._handle.close()
