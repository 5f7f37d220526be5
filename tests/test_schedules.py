"""The lambda_e schedule of eq. 8 and the callback that applies it."""

import pytest

from carl_tf.method.schedules import linear_decay


@pytest.mark.parametrize(
    "epoch, expected", [(0, 4.0), (50, 2.75), (100, 1.5), (101, 1.5), (500, 1.5), (25, 3.375)]
)
def test_linear_decay_follows_eq8(epoch, expected):
    assert linear_decay(epoch, start=4.0, end=1.5, decay_epochs=100) == pytest.approx(expected)


def test_zero_decay_epochs_is_constant_end():
    assert linear_decay(0, 2.0, 1.0, 0) == 1.0


def test_negative_epoch_is_rejected():
    with pytest.raises(ValueError, match="epoch"):
        linear_decay(-1, 2.0, 1.0, 10)


def test_start_at_begins_a_cosine_cycle_at_its_step_and_round_trips():
    import keras
    import numpy as np

    from carl_tf.method.schedules import StartAt

    schedule = StartAt(keras.optimizers.schedules.CosineDecay(0.1, decay_steps=10), start_step=30)
    rates = [float(schedule(step)) for step in (0, 30, 35, 40, 50)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.05, 0.0, 0.0], atol=1e-6)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(clone, StartAt) and float(clone(35)) == rates[2]
