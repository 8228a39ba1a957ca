"""The observer patched into this process (fast: no subprocess): what a pass record counts, how
passes end, live settings and refusals, and that a failure inside it never reaches the script."""

from __future__ import annotations

import pytest
import torch
import torch.utils.data.dataloader as dataloader_module
from programs import private_dir
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, Sampler, TensorDataset

from ctui.engine.observe import RecordFollower, hook, write_settings


@pytest.fixture
def observer(tmp_path):
    folder = private_dir(tmp_path / "observe")
    installed = hook.install(dataloader_module, str(folder))
    assert installed is not None
    follower, seen = RecordFollower(folder), []

    def records(kind=None):
        """Every record so far (of one kind)."""
        seen.extend(follower.poll())
        assert follower.skipped == 0
        return [record for record in seen if kind is None or record["kind"] == kind]

    installed.records = records
    installed.path = folder
    yield installed
    hook.uninstall()
    assert not hasattr(DataLoader, "_ctui_observer")


class Pairs(torch.utils.data.Dataset):
    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int):
        return {"img": torch.zeros(3, 2, 2), "txt": f"caption {index}",
                "meta": ((torch.tensor(index), index),)}


def test_dict_batches_with_strings_count_their_samples_and_the_last_short_batch(observer):
    loader = DataLoader(Pairs(103), batch_size=10)
    line = test_dict_batches_with_strings_count_their_samples_and_the_last_short_batch.__code__
    batches = list(loader)
    (record,) = observer.records("pass")
    assert record["loader"].endswith(f"test_hook.py:{line.co_firstlineno + 1}")
    assert (record["batches"], record["samples"], record["batch_size"]) == (11, 103, 10)
    assert record["complete"] and record["ended"] == "exhausted"
    assert 0 <= record["data_wait_fraction"] <= 1 and record["seconds"] >= record["wait_seconds"]
    assert len(batches[-1]["txt"]) == 3
    (announced,) = observer.records("loader")
    assert announced["dataset"] == "Pairs" and announced["can_change"] == {
        "num_workers": True, "batch_size": True}


@pytest.mark.parametrize("collate, expected", [
    (None, 25),  # default_collate: tuples become lists of batched tensors
    (lambda samples: samples, 25),  # a list of samples
    (lambda samples: torch.stack([x for x, _ in samples]), 25),
    (lambda samples: object(), 30),  # opaque: the loader's batch size, 10 a batch
])
def test_samples_for_tuple_and_custom_batches(observer, collate, expected):
    dataset = TensorDataset(torch.randn(25, 4), torch.arange(25))
    list(DataLoader(dataset, batch_size=10, collate_fn=collate))
    (record,) = observer.records("pass")
    assert record["samples"] == expected


def test_the_iterator_keeps_its_type_length_and_batches(observer):
    loader = DataLoader(TensorDataset(torch.arange(9)), batch_size=4)
    iterator = iter(loader)
    assert isinstance(iterator, dataloader_module._SingleProcessDataLoaderIter)
    assert type(iterator).__name__ == "_SingleProcessDataLoaderIter"
    assert len(iterator) == 3
    hook.uninstall()
    bare = [batch[0].tolist() for batch in DataLoader(TensorDataset(torch.arange(9)),
                                                       batch_size=4)]
    assert [batch[0].tolist() for batch in iterator] == bare


def test_a_pass_left_early_is_incomplete(observer):
    loader = DataLoader(TensorDataset(torch.arange(100)), batch_size=10)
    for step, _ in enumerate(loader):
        if step == 2:
            break
    held = iter(loader)
    next(held)
    list(loader)  # a new pass while `held` is unfinished
    passes = observer.records("pass")
    assert [(p["pass"], p["ended"], p["complete"], p["batches"]) for p in passes] == [
        (1, "abandoned", False, 3), (2, "restarted", False, 1), (3, "exhausted", True, 10)]
    del held
    assert len(observer.records("pass")) == 3  # already ended: no second record


def test_a_loader_made_each_epoch_is_one_loader(observer):
    dataset = TensorDataset(torch.arange(20))
    for _ in range(3):
        loader = DataLoader(dataset, batch_size=5)  # one place, a new object each epoch
        list(loader)
    passes = observer.records("pass")
    assert len({p["loader"] for p in passes}) == 1
    assert [p["pass"] for p in passes] == [1, 2, 3]
    assert len(observer.records("loader")) == 1


def test_two_live_loaders_made_at_one_place_get_two_labels(observer):
    train, test = (DataLoader(TensorDataset(torch.arange(n)), batch_size=5) for n in (20, 10))
    list(train), list(test)
    first, second = (p["loader"] for p in observer.records("pass"))
    assert second == first + "#2"


class Subclassed(DataLoader):
    def __init__(self, dataset, **kwargs) -> None:
        super().__init__(dataset, **kwargs)


def test_a_subclass_is_labelled_where_the_script_made_it(observer):
    line = test_a_subclass_is_labelled_where_the_script_made_it.__code__.co_firstlineno + 2
    list(Subclassed(TensorDataset(torch.arange(4)), batch_size=2))
    assert observer.records("pass")[0]["loader"].endswith(f"test_hook.py:{line}")


def test_batch_size_changes_from_the_next_pass(observer):
    loader = DataLoader(TensorDataset(torch.arange(100)), batch_size=10, shuffle=True)
    list(loader)
    write_settings(observer.path, batch_size=25)
    seen = [index for (batch,) in loader for index in batch.tolist()]
    assert sorted(seen) == list(range(100))
    assert (loader.batch_size, loader.batch_sampler.batch_size) == (25, 25)
    (applied,) = observer.records("applied")
    assert (applied["setting"], applied["value"], applied["previous"],
            applied["from_pass"]) == ("batch_size", 25, 10, 2)
    assert [(p["batch_size"], p["batches"]) for p in observer.records("pass")] == [
        (10, 10), (25, 4)]


def test_settings_go_to_the_loader_of_the_largest_dataset_or_the_one_named(observer):
    small = DataLoader(TensorDataset(torch.arange(10)), batch_size=5)
    large = DataLoader(TensorDataset(torch.arange(40)), batch_size=5)
    write_settings(observer.path, batch_size=20)
    list(small), list(large)
    assert (small.batch_size, large.batch_size) == (5, 20)
    small_label = observer.records("pass")[0]["loader"]
    write_settings(observer.path, batch_size=2, loader=small_label)
    list(small), list(large)
    assert (small.batch_size, large.batch_size) == (2, 20)


class Stream(IterableDataset):
    def __iter__(self):
        return iter(range(30))


class Buckets(Sampler):
    def __iter__(self):
        yield from ([0], [1, 2], [3, 4, 5])

    def __len__(self) -> int:
        return 3


def test_iterable_datasets_and_custom_batch_samplers_are_refused_and_left_alone(observer):
    stream = DataLoader(Stream(), batch_size=10)
    buckets = DataLoader(TensorDataset(torch.arange(6)), batch_sampler=Buckets())
    list(stream), list(buckets)
    labels = {r["dataset"]: r for r in observer.records("loader")}
    assert labels["Stream"]["can_change"] == {"num_workers": False, "batch_size": False}
    assert "iterable dataset" in labels["Stream"]["why_not"]["num_workers"]
    assert labels["TensorDataset"]["can_change"] == {"num_workers": True, "batch_size": False}
    assert "custom batch sampler Buckets" in labels["TensorDataset"]["why_not"]["batch_size"]
    for name, loader in (("Stream", stream), ("TensorDataset", buckets)):
        write_settings(observer.path, batch_size=3, num_workers=0 if name != "Stream" else 1,
                       loader=labels[name]["loader"])
        for _ in range(2):  # refused once, not at every pass
            assert [len(b[0]) if isinstance(b, list) else len(b) for b in loader] == (
                [10, 10, 10] if name == "Stream" else [1, 2, 3])
    refused = [(r["setting"], r["value"]) for r in observer.records("refused")]
    assert refused == [("num_workers", 1), ("batch_size", 3), ("batch_size", 3)]
    assert isinstance(buckets.batch_sampler, Buckets) and stream.batch_size == 10


def test_several_ranks_refuse_batch_size(observer, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    loader = DataLoader(TensorDataset(torch.arange(6)), batch_size=2)
    write_settings(observer.path, batch_size=3)
    list(loader)
    assert loader.batch_size == 2
    assert "2 ranks" in observer.records("refused")[0]["reason"]


def test_a_failure_inside_the_observer_never_reaches_the_script(observer, monkeypatch):
    def broken(*_):
        raise RuntimeError("a bug in ctui")

    monkeypatch.setattr(observer, "announce", broken)
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=3)
    assert [b[0].tolist() for b in loader] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    assert [b[0].tolist() for b in loader][-1] == [9]
    (disabled,) = observer.records("disabled")
    assert "a bug in ctui" in disabled["reason"]
    assert observer.records("pass") == []


def test_torchs_own_batch_sampler_given_by_the_script_is_resizable(observer):
    loader = DataLoader(TensorDataset(torch.arange(6)),
                        batch_sampler=BatchSampler(range(6), batch_size=2, drop_last=False))
    write_settings(observer.path, batch_size=3)
    assert [len(b[0]) for b in loader] == [3, 3]
    assert loader.batch_size is None and loader.batch_sampler.batch_size == 3
    assert observer.records("pass")[0]["batch_size"] == 3


def test_each_pass_says_once_when_it_starts_and_before_it_ends(observer):
    train = DataLoader(TensorDataset(torch.arange(40)), batch_size=10)
    test = DataLoader(TensorDataset(torch.arange(10)), batch_size=5)
    for _ in range(2):
        for _ in train:
            pass
        list(test)
    records = [r for r in observer.records() if r["kind"] in ("pass_started", "pass")]
    assert [(r["kind"], r["pass"], r["loader"] == records[0]["loader"]) for r in records] == [
        ("pass_started", 1, True), ("pass", 1, True), ("pass_started", 1, False),
        ("pass", 1, False), ("pass_started", 2, True), ("pass", 2, True),
        ("pass_started", 2, False), ("pass", 2, False)]
    starts = [r for r in records if r["kind"] == "pass_started"]
    ends = [r for r in records if r["kind"] == "pass"]
    assert [r["started"] for r in starts] == [r["started"] for r in ends]
