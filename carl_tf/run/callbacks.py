"""Keras callbacks of a train.py run: collapse and NaN guards, and the run directory's records.

`Interrupted` is the Ctrl-C (or SIGTERM) of a run, with the epoch `RunRecorder` was in.
"""

import logging
import math
import time

import keras
import numpy as np

from carl_tf.run import signals
from carl_tf.run.rundir import RunDirectory

logger = logging.getLogger(__name__)


# Where lambda ended when K = 1000 prototypes held on CIFAR-10 (docs/results.md, "Stability").
HELD_KL_END = 2.5
# The config fields `collapse_advice` names, as they are written in it.
ADVICE_FIELDS = ("learning_rate", "kl_start", "kl_end")


def collapse_advice(
    num_prototypes: int, batch_size: int, learning_rate: float, kl_start: float, kl_end: float
) -> str:
    """The settings to change after a collapse, named from the cases measured on CIFAR-10.

    With more prototypes than images in a batch, the batch-mean prior (eq. 5) holds the
    assignment only while lambda stays high: K = 1000 collapsed once lambda decayed to 1.5, at
    batch 128 and at batch 256, and held with lambda 4 -> 2.5 at batch 256 and a constant 4 at
    batch 128. With fewer, the usual cause is the learning rate: K = 100 at batch 128 held at
    0.12 and collapsed at 0.24.
    """
    if num_prototypes > batch_size and kl_end < HELD_KL_END:
        return (
            f"with K = {num_prototypes} prototypes above the batch of {batch_size}, end lambda "
            f"at {HELD_KL_END} or more: kl_end={HELD_KL_END} (now {kl_start} -> {kl_end}; "
            f"K = 1000 held there and collapsed at 1.5), or lower learning_rate "
            f"(now {learning_rate})"
        )
    return (
        f"lower learning_rate (now {learning_rate}) or raise kl_start/kl_end "
        f"(now {kl_start}/{kl_end})"
    )


class CollapseGuard(keras.callbacks.Callback):
    """Warns when the assignment collapses onto few prototypes (section 2.3's trivial solution)
    and stops training once it has stayed collapsed for `patience` epochs in a row.

    A collapsed CARL does not come back (every run here that fell under the threshold stayed
    there), so training on only burns the rest of the schedule. `prototypes_in_use` counts
    distinct argmax prototypes within one batch, so it can never exceed the batch size: the
    threshold is a fraction of min(K, batch_size), not of K. `advice` (`collapse_advice`) names
    the settings to change, in the warning and in the caller's error alike.
    """

    def __init__(self, fraction: float, batch_size: int, *, advice: str, patience: int = 2):
        super().__init__()
        self.fraction, self.batch_size, self.patience = fraction, batch_size, patience
        self.advice = advice
        self.collapsed_epochs = 0
        self.stopped_at: int | None = None

    def threshold(self) -> float:
        """Fewest prototypes in use per batch that still count as healthy."""
        return self.fraction * min(self.model.num_prototypes, self.batch_size)

    def on_epoch_end(self, epoch, logs=None):
        in_use = logs.get("prototypes_in_use")
        if in_use is None:
            return
        if in_use >= self.threshold():
            self.collapsed_epochs = 0
            return
        self.collapsed_epochs += 1
        logger.warning(
            "epoch %d: only %.1f of %d prototypes in use per batch: the assignment is "
            "collapsing; %s",
            epoch + 1,
            in_use,
            self.model.num_prototypes,
            self.advice,
        )
        if self.patience and self.collapsed_epochs >= self.patience:
            self.stopped_at = epoch + 1
            self.model.stop_training = True


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where, for a clear message.

    Keras's `TerminateOnNaN` stops as gracefully but prints its own line and keeps no record of
    the epoch; the run reports `failed_at` in its one-line error instead.
    """

    def __init__(self):
        super().__init__()
        self.failed_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if logs and not math.isfinite(float(logs["loss"])):
            self.failed_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


class RaiseSignals(keras.callbacks.Callback):
    """Raises a Ctrl-C or SIGTERM that arrived during the batch (`carl_tf.run.signals.deferred`).

    Last in the list, so an epoch that has ended is recorded before the signal stops the run.
    """

    def on_train_batch_end(self, batch, logs=None):
        signals.raise_pending()

    def on_epoch_end(self, epoch, logs=None):
        signals.raise_pending()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a run's epochs, raised from the signal's exception.

    A KeyboardInterrupt, so whatever unwinds on Ctrl-C unwinds on it too.

    Attributes:
        epoch: The 1-based epoch in progress: the first one not checkpointed, which rerunning
            the same command trains again.
    """

    def __init__(self, epoch: int):
        super().__init__(f"interrupted during epoch {epoch}")
        self.epoch = epoch


class MetricsRecorder(keras.callbacks.Callback):
    """Appends each finished epoch's logs, learning rate and seconds to metrics.csv.

    An epoch whose loss is not finite is not recorded. Runs without checkpoints (the SimCLR
    baseline of experiments/) use it alone; `RunRecorder` adds the checkpoint.
    """

    def __init__(self, run_dir: RunDirectory):
        super().__init__()
        self.run_dir = run_dir
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.record(epoch, logs)

    def record(self, epoch: int, logs: dict) -> bool:
        """Appends the 0-based `epoch`'s row; False (nothing written) if its loss is not finite."""
        if not math.isfinite(float(logs["loss"])):
            return False
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        row = {name: float(value) for name, value in logs.items()}
        row.update(epoch=epoch + 1, seconds=round(time.time() - self._started, 2))
        self.run_dir.append_metrics(row)
        return True


class RunRecorder(MetricsRecorder):
    """Appends each finished epoch to metrics.csv, then checkpoints model and optimizer.

    The row is written before the checkpoint: a process killed between the two resumes from the
    previous checkpoint, and `RunDirectory.keep_metrics_up_to` drops the row it will write again.
    An epoch whose loss is not finite is neither recorded nor checkpointed.

    Attributes:
        epoch_in_progress: The 1-based epoch a stop now would lose (the first not yet
            checkpointed), for `Interrupted`; it moves on once an epoch's checkpoint is written.
    """

    def __init__(self, run_dir: RunDirectory, epochs_done: int = 0):
        super().__init__(run_dir)
        self.epoch_in_progress = epochs_done + 1

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        self.epoch_in_progress = epoch + 1

    def on_epoch_end(self, epoch, logs=None):
        if not self.record(epoch, logs):
            return
        self.run_dir.save_checkpoint(self.model, epoch + 1)
        self.epoch_in_progress = epoch + 2  # this one is safe; a stop now loses the next
