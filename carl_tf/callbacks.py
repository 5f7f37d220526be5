"""Keras callbacks that drive CARL's training-time schedule."""

import keras

from carl_tf.schedules import linear_decay


class KLWeightSchedule(keras.callbacks.Callback):
    """Sets the model's KL weight lambda_e (eq. 8) at the start of every epoch.

    It is a pure function of the epoch, so a run resumed at epoch e (`fit(initial_epoch=e)` or
    `BackupAndRestore`) gets lambda_e, not the start value.

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
