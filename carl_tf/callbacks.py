"""Keras callbacks of a CARL run: the lambda_e schedule, monitors and the run directory's records."""

import math
import time

import keras
import numpy as np
from absl import logging

from carl_tf.evaluation.features import extract_features
from carl_tf.evaluation.knn import knn_accuracy
from carl_tf.schedules import linear_decay
from carl_tf.workdir import RunDirectory


class KLWeightSchedule(keras.callbacks.Callback):
    """Sets the model's KL weight lambda_e (eq. 8) at the start of every epoch.

    It is a pure function of the epoch, so a run resumed at epoch e (`fit(initial_epoch=e)`)
    gets lambda_e, not the start value.

    Args:
        start: b, lambda at epoch 0.
        end: a, lambda from epoch `decay_epochs` on.
        decay_epochs: E, epochs over which lambda decays linearly.
    """

    def __init__(self, start: float, end: float, decay_epochs: int):
        super().__init__()
        self.start, self.end, self.decay_epochs = float(start), float(end), int(decay_epochs)

    def on_epoch_begin(self, epoch, logs=None):
        self.model.kl_weight.assign(linear_decay(epoch, self.start, self.end, self.decay_epochs))


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN top-1 (k = 200, T = 0.1, cosine) of the backbone's features every few epochs.

    Adds `knn_top1` (percent) to the epoch's logs, after every `every` epochs and after the last.

    Args:
        bank: labelled images `(N, H, W, 3)` and labels `(N,)` whose features vote.
        queries: labelled images and labels that are classified and scored.
        every: epochs between measurements.
        epochs: the run's last epoch, always measured.
        k, temperature: the kNN's neighbours and vote temperature.
    """

    def __init__(self, bank, queries, *, every: int, epochs: int, k: int = 200, temperature=0.1):
        super().__init__()
        self.bank, self.queries = bank, queries
        self.every, self.epochs, self.k, self.temperature = every, epochs, k, temperature

    def measure(self) -> float:
        """kNN top-1 of the model's backbone as it is now, in percent."""
        bank_features = extract_features(self.model.backbone, self.bank[0])
        query_features = extract_features(self.model.backbone, self.queries[0])
        return knn_accuracy(
            bank_features,
            self.bank[1],
            query_features,
            self.queries[1],
            k=self.k,
            temperature=self.temperature,
        )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            logs["knn_top1"] = self.measure()
            logging.info("epoch %d: kNN top-1 %.2f%%", epoch + 1, logs["knn_top1"])


class CollapseGuard(keras.callbacks.Callback):
    """Warns when the assignment collapses onto few prototypes (section 2.3's trivial solution)
    and stops training once it has stayed collapsed for `patience` epochs in a row.

    A collapsed CARL does not come back (every run here that fell under the threshold stayed
    there), so training on only burns the rest of the schedule. `prototypes_in_use` counts
    distinct argmax prototypes within one batch, so it can never exceed the batch size: the
    threshold is a fraction of min(K, batch_size), not of K.
    """

    def __init__(self, fraction: float, batch_size: int, patience: int = 2):
        super().__init__()
        self.fraction, self.batch_size, self.patience = fraction, batch_size, patience
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
        logging.warning(
            "epoch %d: only %.1f of %d prototypes in use per batch: the assignment is "
            "collapsing; raise --kl_start/--kl_end or lower --learning_rate",
            epoch + 1,
            in_use,
            self.model.num_prototypes,
        )
        if self.patience and self.collapsed_epochs >= self.patience:
            self.stopped_at = epoch + 1
            self.model.stop_training = True


class StopOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where, for a clear message."""

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


class RunRecorder(keras.callbacks.Callback):
    """Appends each finished epoch to metrics.csv, then checkpoints model and optimizer.

    The row is written before the checkpoint: a process killed between the two resumes from the
    previous checkpoint, and `RunDirectory.keep_metrics_up_to` drops the row it will write again.
    An epoch whose loss is not finite is neither recorded nor checkpointed.
    """

    def __init__(self, run_dir: RunDirectory):
        super().__init__()
        self.run_dir = run_dir
        self._started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        if not math.isfinite(float(logs["loss"])):
            return
        logs["learning_rate"] = float(np.asarray(self.model.optimizer.learning_rate))
        row = {name: float(value) for name, value in logs.items()}
        row.update(epoch=epoch + 1, seconds=round(time.time() - self._started, 2))
        self.run_dir.append_metrics(row)
        self.run_dir.save_checkpoint(self.model, epoch + 1)
