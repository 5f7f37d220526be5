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


def test_learning_rate_follows_the_runs_warmup_cosine_and_its_extensions():
    """Warmup then cosine to the end; `rescale` stretches the cycle with `epochs`; `restart`
    starts a new cycle at its first epoch, and a later `rescale` stretches that one."""
    import math

    import ml_collections
    import numpy as np

    from carl_tf.method.schedules import cycle_start, learning_rate_schedule

    config = ml_collections.ConfigDict(
        {"learning_rate": 0.2, "batch_size": 128, "epochs": 10, "warmup_epochs": 2}
    )
    peak, steps = 0.1, 5  # 0.2 * 128 / 256; steps per epoch

    def cosine(step, first, last):  # the rate of a cosine cycle from `first` to `last` (steps)
        return 0.5 * peak * (1 + math.cos(math.pi * (step - first) / (last - first)))

    schedule = learning_rate_schedule(config, steps)
    for step in (0, 5, 10, 20, 49):
        expected = peak * step / 10 if step < 10 else cosine(step, 10, 50)
        np.testing.assert_allclose(float(schedule(step)), expected, atol=1e-6)

    restart = {"from_epochs": 10, "to_epochs": 16, "schedules": "restart"}
    rescale = {"from_epochs": 16, "to_epochs": 20, "schedules": "rescale"}
    assert cycle_start([]) == 0 and cycle_start([restart]) == cycle_start([restart, rescale]) == 10
    config.epochs = 16
    schedule = learning_rate_schedule(config, steps, [restart])
    for step in (50, 60, 79):
        np.testing.assert_allclose(float(schedule(step)), cosine(step, 50, 80), atol=1e-6)
    config.epochs = 20
    schedule = learning_rate_schedule(config, steps, [restart, rescale])
    np.testing.assert_allclose(float(schedule(75)), cosine(75, 50, 100), atol=1e-6)
