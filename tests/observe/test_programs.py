"""Unmodified scripts run as `ctui run -- python script.py` runs them: what ctui sees of their
DataLoaders, that it changes nothing they compute, and live num_workers / batch_size."""

from __future__ import annotations

import math
import subprocess

import pytest
from programs import epochs, result_line

from ctui.engine.observe import write_settings

from helpers import wait_until

pytestmark = pytest.mark.slow


def test_a_clip_style_script_with_dict_batches_and_tqdm_is_observed(observed):
    out = observed.run("clip_style.py", "--epochs", "2", "--size", "200").stdout
    assert [epoch[5] for epoch in epochs(out)] == ["True", "True"]
    (process,) = observed.records("process")
    assert process["argv0"] == "clip_style.py" and process["rank"] == 0
    (loader,) = observed.records("loader")
    assert loader["loader"].startswith("clip_style.py:") and loader["dataset"] == "Captions"
    passes = observed.records("pass")
    assert [(p["pass"], p["batches"], p["samples"], p["complete"]) for p in passes] == [
        (1, 7, 200, True), (2, 7, 200, True)]
    assert all(p["loader"] == loader["loader"] and p["num_workers"] == 0 for p in passes)


def test_epoch_seconds_agree_with_the_scripts_own_timer(observed):
    # Epochs of about a second: a scheduling stall of a loaded machine between the script's
    # clock and the loader's first batch (tens of ms) is then well inside 2%.
    out = observed.run("clip_style.py", "--epochs", "3", "--size", "1024", "--side", "16",
                       "--repeat", "16").stdout
    own = [float(epoch[3]) for epoch in epochs(out)]
    measured = [p["seconds"] for p in observed.records("pass")]
    assert len(measured) == 3
    for theirs, ours in zip(own, measured, strict=True):
        assert abs(ours - theirs) <= 0.02 * theirs, (own, measured)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_are_counted_write_nothing_and_change_no_result(observed, bare, start_method):
    args = ("--epochs", "2", "--workers", "2", "--start-method", start_method, "--persistent")
    observed_out = observed.run("clip_style.py", *args).stdout
    bare_out = bare.run("clip_style.py", *args).stdout
    assert result_line(observed_out) == result_line(bare_out)
    assert [epoch[5:] for epoch in epochs(observed_out)] == [["True", "workers", "0,1"]] * 2
    assert len({r["pid"] for r in observed.records()}) == 1  # the workers wrote nothing
    assert len(list(observed.observe.iterdir())) == 1
    passes = observed.records("pass")
    assert [(p["samples"], p["num_workers"]) for p in passes] == [(256, 2), (256, 2)]


def test_observed_results_are_bit_identical_to_bare(observed, bare):
    args = ("--epochs", "3", "--size", "300")
    assert result_line(observed.run("clip_style.py", *args).stdout) == result_line(
        bare.run("clip_style.py", *args).stdout)
    assert len(observed.records("pass")) == 3


def paused(program, *args: str) -> subprocess.Popen:
    process = program.start("clip_style.py", "--epochs", "3", "--pause-after", "1", *args)
    if not wait_until(lambda: (program.folder / "ready-1").exists(), timeout=120):
        process.kill()
        pytest.fail(process.communicate()[1][-3000:])
    return process


def resumed(program, process: subprocess.Popen) -> str:
    (program.folder / "go-1").touch()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return out


@pytest.mark.parametrize("before, persistent, after", [(0, False, 2), (2, True, 1),
                                                        (2, True, 0)])
def test_num_workers_and_batch_size_change_between_epochs_each_sample_once(
        observed, before, persistent, after):
    process = paused(observed, "--workers", str(before), *(["--persistent"] if persistent else []))
    write_settings(observed.observe, num_workers=after, batch_size=50)
    out = resumed(observed, process)
    seen = [epoch[5:] for epoch in epochs(out)]
    workers = ",".join(map(str, range(after))) if after else "-1"
    assert seen == [["True", "workers", ",".join(map(str, range(before))) or "-1"]] + [
        ["True", "workers", workers]] * 2
    applied = {r["setting"]: r for r in observed.records("applied")}
    assert (applied["num_workers"]["value"], applied["num_workers"]["previous"]) == (after,
                                                                                     before)
    assert (applied["batch_size"]["value"], applied["batch_size"]["from_pass"]) == (50, 2)
    passes = observed.records("pass")
    assert [(p["num_workers"], p["batch_size"], p["batches"], p["samples"]) for p in passes] == [
        (before, 32, 8, 256)] + [(after, 50, math.ceil(256 / 50), 256)] * 2


def test_torchrun_ranks_each_write_their_own_records(observed):
    out = observed.run("-m", "torch.distributed.run", "--nproc_per_node", "2",
                       "--standalone", "ranks.py").stdout
    assert sorted(line for line in out.splitlines() if line.startswith("RANK")) == [
        "RANK 0 done", "RANK 1 done"]
    passes = observed.records("pass")
    assert sorted((p["rank"], p["pass"], p["samples"]) for p in passes) == [
        (0, 1, 200), (0, 2, 200), (1, 1, 200), (1, 2, 200)]
    assert sorted(path.name.split("-")[1] for path in observed.observe.iterdir()) == ["0", "1"]
    assert all(not r["can_change"]["batch_size"] for r in observed.records("loader"))


def test_a_hidden_sitecustomize_still_runs(observed, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "sitecustomize.py").write_text("MARK = 'theirs'\nprint('their sitecustomize ran')\n")
    code = ("import sitecustomize, torch; from torch.utils.data import DataLoader; "
            "print(sitecustomize.MARK, len(list(DataLoader(range(10), batch_size=4))))")
    out = observed.run("-c", code, env={"PYTHONPATH": str(other)}).stdout
    assert out.splitlines() == ["their sitecustomize ran", "theirs 3"]
    assert observed.records("pass")[0]["samples"] == 10


def test_an_unsafe_observe_folder_is_refused_and_the_script_runs_on(observed):
    observed.observe.chmod(0o777)
    code = "import torch.utils.data as d; print(len(list(d.DataLoader(range(6), batch_size=4))))"
    result = observed.run("-c", code)
    assert result.stdout == "2\n" and "not observing DataLoaders" in result.stderr
    assert list(observed.observe.iterdir()) == []


def test_a_pass_cut_short_by_the_end_of_the_script_is_recorded_incomplete(observed):
    code = ("import torch.utils.data as d\n"
            "loader = d.DataLoader(range(100), batch_size=10)\n"
            "iterator = iter(loader)\n"
            "for _ in range(4): next(iterator)\n"
            "raise SystemExit(0)\n")
    observed.run("-c", code)
    (record,) = observed.records("pass")
    assert (record["batches"], record["complete"], record["ended"]) == (4, False, "exit")


def test_a_script_run_with_python_dash_m_is_observed(observed):
    (observed.folder / "trainer").mkdir()
    (observed.folder / "trainer" / "__init__.py").write_text("")
    (observed.folder / "trainer" / "__main__.py").write_text(
        "import torch.utils.data as d\nfor _ in range(2):\n"
        "    list(d.DataLoader(list(range(9)), batch_size=3))\n")
    observed.run("-m", "trainer")
    assert [p["samples"] for p in observed.records("pass")] == [9, 9]


def wandb_env(tmp_path, name: str) -> dict[str, str]:
    folder = tmp_path / f"wandb-{name}"  # not the script's folder: wandb/ there is its own
    folder.mkdir()
    return {"WANDB_MODE": "offline", "WANDB_DIR": str(folder), "WANDB_SILENT": "true",
            "WANDB_DISABLE_GIT": "true"}


def test_what_a_script_logs_to_wandb_is_recorded_and_wandb_gets_the_same(observed, bare,
                                                                           tmp_path):
    args = ("wandb_log.py", "--steps", "200", "--torch", "--fail")
    observed_out = observed.run(*args, env=wandb_env(tmp_path, "observed")).stdout
    bare_out = bare.run(*args, env=wandb_env(tmp_path, "bare")).stdout
    assert result_line(observed_out) == result_line(bare_out)  # wandb kept the same values
    assert "WANDB REFUSED" in observed_out  # wandb's own error reached the script as it was
    latest = {r["tag"]: (r["step"], r["value"]) for r in observed.records("scalar")}
    assert latest == {"train/loss": (199, 1 / 200), "lr": (199, pytest.approx(0.1)),
                      "eval/acc": (199, 0.995), "eval/top/k5": (199, 0.5),
                      "diverged": (199, None), "tensor/zero_d": (200, 0.25),
                      "final/acc": (210, 0.875)}
    assert observed.records("disabled") == [] and observed.records("pass") == []
    assert {r["source"] for r in observed.records("scalar")} == {"wandb"}
