"""What a train.py run shows while it trains: one line per epoch, and TensorBoard's records.

`EpochLog` prints `epoch 5/30 · loss 4.5943 · prototypes in use 36.8 · kNN 52.7% · elapsed 4:10
· about 21 min left` after each epoch, after every monitor has added its figures, so nothing is
printed inside Keras's progress bar. `RunTensorBoard` writes what `keras.callbacks.TensorBoard`
does not: the loss terms and learning rate every few steps, the prototype usage as a histogram
per epoch, and the untrained kNN, with epochs numbered as in metrics.csv (0 = untrained).

TensorBoard's files are written with `tf.summary`, under either backend; where TensorFlow is not
installed (a JAX-only machine) `RunTensorBoard` says so in one logged line and writes nothing.
"""

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

import keras
import numpy as np

from carl_tf.errors import UsageError

logger = logging.getLogger(__name__)

# `extra=` of the closing lines of a job (where the export went, nothing to do): a command-line
# program prints its own versions of them on stdout and drops these (carl_tf.cli.common).
RESULT = {"carl_tf_result": True}
VERBOSITIES = ("auto", 0, 1, 2)

# Step scalars: the loss terms and the learning rate.
STEP_FIGURES = ("loss", "consistency", "kl")


class EpochLog(keras.callbacks.Callback):
    """One short line per finished epoch, with the run's elapsed time and an estimate of the rest.

    Put it after every callback that adds figures to the epoch's logs (the kNN monitor). The
    estimate extrapolates the epochs this process trained, so a resumed run does not count the
    time of the epochs before it, and it leaves out the first step, which traces (and with XLA
    compiles) the train step: after epoch 1 the rest of that epoch's steps give the pace, after
    that the epochs since the first.

    The first epoch whose validation uses fewer than a third of the prototypes the training
    batches used (`val_prototypes_in_use`, in inference mode) gets one more line saying why:
    BatchNorm's moving statistics still lag the training batches (`lagging_statistics_note`).

    Args:
        epochs: The run's last epoch.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)
        self._noted_lag = False
        self._started = None
        self._first_epoch = 0
        self._first_step_end = None  # after the first step of this process: tracing done
        self._first_epoch_end = None

    def on_train_begin(self, logs=None):
        self._started = time.time()
        self._first_epoch = None
        self._first_step_end = self._first_epoch_end = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._first_step_end is None:
            self._first_step_end = time.time()

    def on_epoch_end(self, epoch, logs=None):
        now = time.time()
        if self._first_epoch_end is None:
            self._first_epoch_end = now
        logs = logs or {}
        logger.info(epoch_line(epoch + 1, self.epochs, logs, *self._times(epoch + 1, now)))
        note = lagging_statistics_note(logs)
        if note and not self._noted_lag:
            self._noted_lag = True
            logger.info(note)

    def _times(self, done: int, now: float) -> tuple[float, float]:
        """The elapsed seconds and the estimate of the seconds left after `done` epochs."""
        elapsed = now - self._started
        trained = done - self._first_epoch
        if trained > 1:  # the epochs after the first, which held the tracing
            per_epoch = (now - self._first_epoch_end) / (trained - 1)
        else:
            steps = (self.params or {}).get("steps") or 0
            if steps > 1 and self._first_step_end is not None:
                per_epoch = (now - self._first_step_end) * steps / (steps - 1)
            else:
                per_epoch = elapsed
        return elapsed, per_epoch * (self.epochs - done)


@contextlib.contextmanager
def talking(verbose: str | int = "auto") -> Iterator[bool]:
    """Makes carl_tf's log lines visible during a job, as `model.fit` prints its own.

    carl_tf's INFO lines go to stdout while the job runs, unless the program routes them itself:
    a handler on the `carl_tf` logger (as the command-line programs add), or handlers on the
    root logger with INFO lines of `carl_tf` enabled (`logging.basicConfig(level="INFO")`).
    `verbose=0` keeps only warnings.

    Args:
        verbose: As `model.fit`'s: "auto" (1 on a terminal, else 2), 0 (quiet), 1 (Keras's
            progress bar and one line per epoch) or 2 (one line per epoch).

    Yields:
        Whether to show Keras's progress bar.

    Raises:
        UsageError: For another `verbose`.
    """
    if verbose not in VERBOSITIES or isinstance(verbose, bool):
        raise UsageError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    if verbose == "auto":
        verbose = 1 if sys.stdout.isatty() else 2
    package = logging.getLogger("carl_tf")
    saved = package.level, package.propagate
    handler = None
    if not verbose:
        package.setLevel(logging.WARNING)
    elif not package.handlers and not (
        logging.getLogger().handlers and package.isEnabledFor(logging.INFO)
    ):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        package.addHandler(handler)
        package.propagate = False
        if package.getEffectiveLevel() > logging.INFO:
            package.setLevel(logging.INFO)
    try:
        yield verbose == 1
    finally:
        if handler is not None:
            handler.flush()
            package.removeHandler(handler)
        package.setLevel(saved[0])
        package.propagate = saved[1]


# Validation (inference-mode) prototype usage below this fraction of training's is explained.
_LAGGING_USAGE = 1 / 3


def lagging_statistics_note(logs: dict) -> str | None:
    """The line that explains a `val_prototypes_in_use` far below `prototypes_in_use`, or None.

    Validation runs the backbone in inference mode, on BatchNorm's moving statistics; early in a
    run, and longer with a momentum of 0.99 (`keras.applications` backbones) than with the
    built-in ResNets' 0.9, they lag the batch statistics the assigner trained on, and the
    assignments fall onto few prototypes without any collapse in training.
    """
    train, val = logs.get("prototypes_in_use"), logs.get("val_prototypes_in_use")
    if train is None or val is None or float(val) >= _LAGGING_USAGE * float(train):
        return None
    return (
        f"note: validation uses {float(val):.1f} prototypes against {float(train):.1f} in "
        "training: it runs on BatchNorm's moving statistics, which still lag the training "
        "batches (longest with momentum 0.99, as in keras.applications backbones); training "
        "has not collapsed, and the figure rises as they catch up"
    )


def epoch_line(epoch: int, epochs: int, logs: dict, elapsed: float, remaining: float) -> str:
    """`epoch 5/30 · loss 4.5943 · prototypes in use 36.8 · kNN 52.7% · elapsed 4:10 · ...`."""
    parts = [f"epoch {epoch}/{epochs}"]
    if "loss" in logs:
        parts.append(f"loss {float(logs['loss']):.4f}")
    if "prototypes_in_use" in logs:
        parts.append(f"prototypes in use {float(logs['prototypes_in_use']):.1f}")
    if "knn_top1" in logs:
        parts.append(f"kNN {float(logs['knn_top1']):.1f}%")
    parts.append(f"elapsed {_clock(elapsed)}")
    if epoch < epochs:
        parts.append(f"about {_duration(remaining)} left")
    return " · ".join(parts)


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, int(round(seconds)))} s"
    if seconds < 90 * 60:
        return f"{int(round(seconds / 60))} min"
    return f"{seconds / 3600:.1f} h"


class RunTensorBoard(keras.callbacks.Callback):
    """TensorBoard records of a run, numbered like metrics.csv.

    Writes under `logdir/train`: `step/loss`, `step/consistency`, `step/kl` and
    `step/learning_rate` every `every_steps` optimizer steps (x = the step), `epoch/<figure>` for
    every figure of the epoch's logs and, for a CARL, `epoch/prototype_usage` as a histogram of
    how many anchors each prototype won (x = the epoch, 1-based; `write_untrained` adds epoch
    0). Step figures a method does not log (SimCLR has the loss alone) are left out.

    The step's learning rate is the optimizer's schedule at the step count this callback keeps,
    not the optimizer's `learning_rate`: under the JAX backend Keras hands the optimizer's
    variables (its step count among them) back to the model only at the end of an epoch, so a
    read mid-epoch would give the epoch's first rate.

    Without TensorFlow every method is a no-op, after one logged line saying so.

    Args:
        logdir: The run's TensorBoard directory.
        every_steps: Optimizer steps between step records.
    """

    def __init__(self, logdir: str, every_steps: int = 10):
        super().__init__()
        self.logdir, self.every_steps = logdir, int(every_steps)
        self._summary = _tf_summary()
        if self._summary is None:
            logger.info(
                "no TensorBoard logs: writing them needs TensorFlow, which is not installed"
            )
        self._writer = None
        self._step = 0
        self._schedule = None

    @property
    def writer(self):
        """The `tf.summary` file writer of `logdir/train`, made at the first record."""
        if self._writer is None:
            self._writer = self._summary.create_file_writer(f"{self.logdir}/train")
        return self._writer

    def write_untrained(self, knn_top1: float) -> None:
        """Records the untrained backbone's kNN top-1 as epoch 0."""
        if self._summary is None:
            return
        with self.writer.as_default():
            self._summary.scalar("epoch/knn_top1", knn_top1, step=0)
        self.writer.flush()

    def on_epoch_begin(self, epoch, logs=None):
        if self._usage() is not None:
            self._usage().reset_state()

    def on_train_begin(self, logs=None):
        # Counted here rather than read from the optimizer every batch (a device read per step,
        # and under JAX a stale one).
        optimizer = self.model.optimizer
        self._step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        # The schedule as the optimizer's config holds it (a dict; a float for a fixed rate),
        # inside the LossScaleOptimizer that mixed_float16 wraps it in.
        rate = getattr(optimizer, "inner_optimizer", optimizer).get_config()["learning_rate"]
        self._schedule = (
            keras.optimizers.schedules.deserialize(rate) if isinstance(rate, dict) else None
        )

    def on_train_batch_end(self, batch, logs=None):
        self._step += 1
        step = self._step
        if self._summary is None or step % self.every_steps or not logs:
            return
        with self.writer.as_default():
            for name in STEP_FIGURES:
                if name in logs:
                    self._summary.scalar(f"step/{name}", float(logs[name]), step=step)
            self._summary.scalar("step/learning_rate", self._learning_rate(step), step=step)

    def _learning_rate(self, step: int) -> float:
        """The rate of the step after `step` optimizer steps, as the optimizer reads it."""
        if self._schedule is None:
            return float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        return float(keras.ops.convert_to_numpy(self._schedule(step)))

    def on_epoch_end(self, epoch, logs=None):
        if self._summary is None:
            return
        with self.writer.as_default():
            for name, value in (logs or {}).items():
                if np.ndim(value) == 0:
                    self._summary.scalar(f"epoch/{name}", float(value), step=epoch + 1)
            if self._usage() is not None:
                counts = np.asarray(self._usage().result())
                # One sample per prototype index, weighted by its wins: the usage histogram.
                winners = np.repeat(np.arange(len(counts)), counts.astype(np.int64))
                self._summary.histogram(
                    "epoch/prototype_usage",
                    winners,
                    step=epoch + 1,
                    buckets=min(len(counts), 200),
                )
        self.writer.flush()

    def _usage(self):
        """The model's per-prototype win counts (`CARL.prototype_usage`); None without them."""
        return getattr(self.model, "prototype_usage", None)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _tf_summary():
    """`tf.summary`, or None where TensorFlow is not installed."""
    try:
        import tensorflow as tf
    except ImportError:
        return None
    return tf.summary
