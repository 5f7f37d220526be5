"""Every schedule of a run, built from its config: the learning rate's (warmup +) cosine cycle,
the KL weight lambda_e of CARL eq. 8 (linear decay from b to a over E epochs), and what
extending a finished run does to both (`carl_tf.run.choices.EXTEND_MODES`).

`learning_rate_schedule` and `kl_weight_schedule` are what training calls; a run extended with
`rescale` has its `epochs` and `kl_decay_epochs` stretched in its record, so both schedules
stretch with them, and one extended with `restart` starts a new cosine cycle where the
extension began (`cycle_start`) while its record keeps lambda's decay (`carl_tf.run.rundir`).
"""

from collections.abc import Sequence

import keras


def linear_decay(epoch: int, start: float, end: float, decay_epochs: int) -> float:
    """Eq. 8: `lambda_e = b - (b - a) / E * e` for `e <= E`, else `a`.

    Args:
        epoch: zero-based epoch counter e.
        start: b, the weight at epoch 0.
        end: a, the weight from epoch E on.
        decay_epochs: E; 0 means the weight is `end` from the start.

    Returns:
        The KL weight for this epoch as a Python float.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if decay_epochs < 0:
        raise ValueError(f"decay_epochs must be >= 0, got {decay_epochs}")
    if decay_epochs == 0 or epoch >= decay_epochs:
        return float(end)
    return float(start - (start - end) / decay_epochs * epoch)


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


def kl_weight_schedule(config) -> KLWeightSchedule:
    """Lambda's schedule (eq. 8) of a run: `kl_start` -> `kl_end` over `kl_decay_epochs`."""
    return KLWeightSchedule(config.kl_start, config.kl_end, config.kl_decay_epochs)


def cycle_start(extensions: Sequence[dict]) -> int:
    """The epoch the learning-rate cycle starts at: the last `restart` extension's, else 0.

    `extensions` are the run's recorded extensions (`carl_tf.run.rundir`); a `rescale` after a
    restart stretches that restarted cycle to the new end.
    """
    restarts = [e["from_epochs"] for e in extensions if e["schedules"] == "restart"]
    return restarts[-1] if restarts else 0


def learning_rate_schedule(config, steps_per_epoch: int, extensions: Sequence[dict] = ()):
    """The run's (warmup +) cosine learning rate, peaking at `learning_rate * batch / 256`.

    After a `restart` extension (`cycle_start`) the cosine cycle starts afresh, from the peak
    rate without warmup, at the extension's first epoch and ends at `config.epochs`.
    """
    peak = config.learning_rate * config.batch_size / 256
    start = cycle_start(extensions)
    if start:
        return StartAt(
            keras.optimizers.schedules.CosineDecay(
                peak, decay_steps=(config.epochs - start) * steps_per_epoch
            ),
            start_step=start * steps_per_epoch,
        )
    warmup_steps = config.warmup_epochs * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
        decay_steps=(config.epochs - config.warmup_epochs) * steps_per_epoch,
    )


@keras.saving.register_keras_serializable(package="carl_tf")
class StartAt(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule that begins at optimizer step `start_step`.

    `StartAt(CosineDecay(peak, n), s)` gives `peak` at step s and decays over the n steps after
    it: a new cosine cycle for the epochs a finished run is extended by (train.py
    `--extend=restart`), while the optimizer's step count keeps counting from the run's start.

    Args:
        schedule: The schedule of the new cycle, as a function of steps since `start_step`.
        start_step: Optimizer step at which the cycle starts.
    """

    def __init__(self, schedule, start_step: int):
        self.schedule = schedule
        self.start_step = int(start_step)

    def __call__(self, step):
        since = keras.ops.maximum(keras.ops.cast(step, "float32") - self.start_step, 0.0)
        return self.schedule(since)

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "start_step": self.start_step,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = keras.saving.deserialize_keras_object(config["schedule"])
        return cls(**config)
