"""The figures every logger records, under the same names: TensorBoard, wandb and the tests
read them from here, so the loggers never import one another."""

from __future__ import annotations

from ..events import EpochEnded, StepLogged

# Per-epoch figures, named as in the wandb tutorial ctui follows (test_loss, test_acc,
# time_taken), plus the ones a user compares while tuning. Both loggers use these names.
EPOCH_METRICS = ("test_loss", "test_acc", "time_taken", "train_loss", "samples_per_second",
                 "data_wait_fraction", "batch_size", "num_workers", "lr", "eval_seconds",
                 "peak_gpu_memory_mb")
STEP_PREFIX = "train/"


def epoch_scalars(event: EpochEnded) -> dict[str, float]:
    """The per-epoch figures; test_acc in percent, as pytorch/examples prints it; the task's
    own figures (f1, iou, train_acc_i2t...) under their own names."""
    scalars = {
        "test_loss": event.test_loss,
        "time_taken": event.train_seconds,
        "train_loss": event.train_loss,
        "samples_per_second": event.samples_per_second,
        "data_wait_fraction": event.data_wait_fraction,
        "batch_size": event.batch_size,
        "num_workers": event.num_workers,
        "lr": event.lr,
        "eval_seconds": event.eval_seconds,
    }
    if event.test_accuracy is not None:  # None: the task's outputs are not class scores
        scalars["test_acc"] = 100.0 * event.test_accuracy
    if event.peak_gpu_memory_mb is not None:
        scalars["peak_gpu_memory_mb"] = event.peak_gpu_memory_mb
    if event.compile_seconds:
        scalars["compile_seconds"] = event.compile_seconds
    for name, value in event.metrics:
        scalars.setdefault(name, value)  # a task's "lr" does not hide ctui's
    # None: not known this epoch (not evaluated, a supervised program's epoch)
    return {name: value for name, value in scalars.items() if value is not None}


def step_scalars(event: StepLogged) -> dict[str, float]:
    """Figures averaged over the steps since the previous log interval."""
    return {
        STEP_PREFIX + "loss": event.loss,
        STEP_PREFIX + "samples_per_second": event.samples_per_second,
        STEP_PREFIX + "data_wait_fraction": event.data_wait_fraction,
        STEP_PREFIX + "lr": event.lr,
    }
