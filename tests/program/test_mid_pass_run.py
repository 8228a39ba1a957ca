"""`ctui set num_workers` while a supervised script is inside its first epoch: the change takes
effect inside that pass and every sample is still seen exactly once in each epoch. Slow: a run
host and a torch program."""

from __future__ import annotations

import json
import sys

import pytest

from ctui.engine.events import EpochEnded, LogLine, ProgramOutput, SetNumWorkers, StateChanged
from ctui.engine.host import RunClient
from ctui.engine.program import ProgramSpec, start_program

pytestmark = pytest.mark.slow

SCRIPT = r'''
import json, time
import torch
from torch.utils.data import DataLoader, Dataset


class Indices(Dataset):
    def __len__(self):
        return 96

    def __getitem__(self, index):
        return index


loader = DataLoader(Indices(), batch_size=4, shuffle=True, num_workers=0)
seen = []
for epoch in range(2):
    seen.append([])
    for step, batch in enumerate(loader):
        seen[-1].extend(batch.tolist())
        print(f"epoch {epoch} step {step}", flush=True)
        time.sleep(0.1)
    print(f"epoch {epoch} done num_workers={loader.num_workers}", flush=True)
with open("seen.json", "w") as out:
    json.dump(seen, out)
'''


def test_num_workers_changed_inside_the_first_epoch_sees_each_sample_once(
        tmp_path, isolated_runs):
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(SCRIPT)
    run_dir = start_program(ProgramSpec(argv=(sys.executable, "train.py"), cwd=str(project)),
                            isolated_runs)
    events = []
    with RunClient.connect(run_dir) as client:
        assert client.wait_for(lambda e: isinstance(e, ProgramOutput) and "epoch 0 step 2"
                               in e.data, 120) is not None
        client.send(SetNumWorkers(num_workers=2))
        while (event := client.wait_for(lambda e: True, 120)) is not None:
            events.append(event)
            if isinstance(event, StateChanged) and event.state in ("finished", "failed"):
                break
    assert events[-1].state == "finished", events[-1]
    switched = [e.message for e in events if isinstance(e, LogLine) and "from batch" in e.message]
    assert len(switched) == 1 and "num_workers is now 2 (was 0)" in switched[0], switched
    epochs = [e for e in events if isinstance(e, EpochEnded)]
    assert [(e.num_workers, e.settings_changed) for e in epochs] == [(2, True), (2, False)]
    seen = json.loads((project / "seen.json").read_text())
    assert [sorted(epoch) for epoch in seen] == [list(range(96))] * 2
    output = "".join(e.data for e in events if isinstance(e, ProgramOutput))
    assert "epoch 0 done num_workers=2" in output
