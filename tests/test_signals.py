"""Ctrl-C and SIGTERM during training reach the run even when they land inside a callback
that C code runs (carl_tf.run.signals), and a second signal is not held back."""

import gc
import os
import signal

import keras
import numpy as np
import pytest

from carl_tf.run import signals
from carl_tf.run.callbacks import RaiseSignals


@pytest.fixture
def installed():
    """The programs' handlers, Python's own put back afterwards."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signals.install()
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


def signal_inside_a_gc_callback(signum):
    """Registers a garbage-collector callback that sends `signum` to this process once."""

    def callback(phase, info):
        if phase == "start":
            gc.callbacks.remove(callback)
            os.kill(os.getpid(), signum)

    gc.callbacks.append(callback)


class SignalAtBatch(keras.callbacks.Callback):
    """Sends a signal from inside a gc callback during batch `at`; counts the batches begun."""

    def __init__(self, signum, at):
        super().__init__()
        self.signum, self.at, self.batches = signum, at, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1
        if batch == self.at:
            signal_inside_a_gc_callback(self.signum)
            gc.collect()


@pytest.mark.parametrize(
    "signum, error", [(signal.SIGTERM, signals.Terminated), (signal.SIGINT, KeyboardInterrupt)]
)
def test_a_signal_inside_a_gc_callback_stops_fit_after_its_batch(installed, signum, error):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.zeros((64, 3), "float32"), np.zeros((64, 1), "float32")
    sender = SignalAtBatch(signum, at=1)
    with pytest.raises(error):
        with signals.deferred():
            model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[sender, RaiseSignals()])
    assert sender.batches == 2  # stopped after the batch it arrived in, not 16 batches later


def test_a_signal_after_the_last_check_is_raised_when_the_block_ends(installed):
    with pytest.raises(signals.Terminated):
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
    signals.raise_pending()  # raised once, not again


def test_a_second_signal_while_one_waits_is_raised_at_once(installed):
    with pytest.raises(KeyboardInterrupt):
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)
            pytest.fail("the second signal was held back")


def test_outside_training_a_signal_is_raised_at_once(installed):
    with pytest.raises(signals.Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
        pytest.fail("the signal was held back")
