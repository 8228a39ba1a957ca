"""num_workers and batch_size changed inside a pass (resume_pass.py), in this process: every
sample of the pass still comes once, in the order it would have bare, with the program's random
stream untouched; where a loader cannot do it, the change waits for its next pass and says why."""

from __future__ import annotations

import pytest
import torch
from test_hook import observer  # noqa: F401  (the fixture)
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from ctui.engine.observe import hook, resume_pass, write_settings

SIZE = 60


class Indices(Dataset):
    def __len__(self) -> int:
        return SIZE

    def __getitem__(self, index: int) -> int:
        return index


@pytest.fixture(autouse=True)
def check_every_batch(monkeypatch):
    monkeypatch.setattr(hook, "CHECK_EVERY", 0.0)


def one_pass(loader, change_after: int | None = None, folder=None, **settings):
    """The batches of one pass, asking for `settings` after `change_after` batches; and the
    global random stream's next number after it."""
    torch.manual_seed(0)
    batches = []
    for batch in loader:
        batches.append(batch.tolist())
        if len(batches) == change_after:
            write_settings(folder, **settings)
    return batches, torch.rand(1).item()


def flat(batches) -> list[int]:
    return [index for batch in batches for index in batch]


@pytest.mark.parametrize(("before", "after", "persistent"), [(0, 2, False), (2, 0, True),
                                                               (2, 1, False)])
def test_num_workers_change_inside_a_pass_keeps_the_order_and_the_random_stream(
        observer, before, after, persistent):  # noqa: F811
    def loader():
        return DataLoader(Indices(), batch_size=4, shuffle=True, num_workers=before,
                          persistent_workers=persistent)

    expected, expected_draw = one_pass(loader())
    changed = loader()
    batches, draw = one_pass(changed, 3, observer.path, num_workers=after)
    assert batches == expected and sorted(flat(batches)) == list(range(SIZE))
    assert draw == expected_draw  # the new iterator's seed draw was undone
    (switched,) = observer.records("switched")
    assert (switched["setting"], switched["value"], switched["previous"]) == (
        "num_workers", after, before)
    assert 3 <= switched["batch"] < 15  # inside the pass, not at its end
    passes = observer.records("pass")
    assert passes[-1]["complete"] and passes[-1]["samples"] == SIZE
    assert passes[-1]["num_workers"] == after and changed.num_workers == after
    again, _ = one_pass(changed)  # the next pass: with the new workers, every sample once
    assert sorted(flat(again)) == list(range(SIZE)) and observer.records("pass")[-1][
        "num_workers"] == after


def test_two_changes_inside_one_pass_still_see_each_sample_once(
        observer, monkeypatch):  # noqa: F811
    monkeypatch.setattr(resume_pass, "TRIM_AT", 2)  # batches returned are forgotten early

    def loader():
        return DataLoader(Indices(), batch_size=3, shuffle=True, num_workers=0)

    expected, expected_draw = one_pass(loader())
    changed = loader()
    torch.manual_seed(0)
    batches = []
    for batch in changed:
        batches.append(batch.tolist())
        if len(batches) == 3:
            write_settings(observer.path, num_workers=2)
        elif len(batches) == 9:
            write_settings(observer.path, num_workers=1, batch_size=5)
    assert flat(batches) == flat(expected) and torch.rand(1).item() == expected_draw
    assert [(r["setting"], r["value"]) for r in observer.records("switched")] == [
        ("num_workers", 2), ("num_workers", 1), ("batch_size", 5)]
    assert [len(batch) for batch in batches][-3:] == [5, 5, 5]


def test_batch_size_change_inside_a_pass_regroups_the_rest_of_it(observer):  # noqa: F811
    def loader():
        return DataLoader(Indices(), batch_size=10, shuffle=True, num_workers=1)

    expected, expected_draw = one_pass(loader())
    changed = loader()
    batches, draw = one_pass(changed, 2, observer.path, batch_size=7)
    assert flat(batches) == flat(expected) and draw == expected_draw
    sizes = [len(batch) for batch in batches]
    switched_at = observer.records("switched")[0]["batch"]
    assert sizes[:switched_at] == [10] * switched_at
    assert set(sizes[switched_at:-1]) == {7} and sizes[-1] <= 7
    assert observer.records("pass")[-1]["batch_size"] == 7
    again, _ = one_pass(changed)  # the batch sampler itself takes it from the next pass
    assert [len(batch) for batch in again] == [7] * 8 + [4]
    assert changed.batch_size == 7


def test_a_loader_that_cannot_change_inside_a_pass_changes_at_its_next(observer):  # noqa: F811
    def loader():
        return DataLoader(Indices(), batch_size=8, drop_last=True)

    changed = loader()
    batches, _ = one_pass(changed, 1, observer.path, batch_size=5)
    assert [len(batch) for batch in batches] == [8] * 7  # this pass as it began
    (deferred,) = observer.records("deferred")
    assert deferred["setting"] == "batch_size" and "drop_last" in deferred["reason"]
    again, _ = one_pass(changed)
    assert [len(batch) for batch in again] == [5] * 12
    assert not observer.records("switched")


def test_a_custom_batch_sampler_changes_workers_inside_a_pass_but_not_its_batches(
        observer):  # noqa: F811
    class Pairs(BatchSampler):  # a batch sampler of its own: ctui does not resize its batches
        pass

    sampler = Pairs(SequentialSampler(range(SIZE)), batch_size=6, drop_last=False)
    changed = DataLoader(Indices(), batch_sampler=sampler)
    batches, _ = one_pass(changed, 2, observer.path, num_workers=1, batch_size=3)
    assert flat(batches) == list(range(SIZE)) and {len(b) for b in batches} == {6}
    assert [r["setting"] for r in observer.records("switched")] == ["num_workers"]
    assert flat(one_pass(changed)[0]) == list(range(SIZE))  # its next pass refuses batch_size
    assert any(r["setting"] == "batch_size" and "custom batch sampler" in r["reason"]
               for r in observer.records("refused"))


def test_a_pass_left_after_a_change_stops_the_new_workers_with_it(observer):  # noqa: F811
    import gc

    loader = DataLoader(Indices(), batch_size=2, num_workers=0)
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    write_settings(observer.path, num_workers=1)
    next(iterator)
    replacement = iterator._ctui_pass.replacement
    assert replacement is not None and replacement._workers[0].is_alive()
    del iterator
    gc.collect()
    assert replacement._shutdown and observer.records("pass")[-1]["ended"] == "abandoned"
