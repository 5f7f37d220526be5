"""FusedBatchNormalization computes what keras.layers.BatchNormalization computes.

That two replicas keep the synchronized statistics of the global batch is checked by
tests/test_model.py::test_mirrored_step_equals_single_device_step, whose backbone uses this
layer (one MirroredStrategy per test process: TensorFlow's collective keys of a second one on
the same devices collide with the first's).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from carl_tf.method.normalization import FusedBatchNormalization

SHAPE = (8, 6, 6, 5)


@pytest.fixture(autouse=True)
def _restore_float32():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def twin_layers(dtype_policy: str = "float32"):
    """A fused layer and a Keras one with the same, non-trivial weights and moving statistics."""
    layers = [
        cls(synchronized=True, momentum=0.9, epsilon=1e-5, dtype=dtype_policy)
        for cls in (FusedBatchNormalization, keras.layers.BatchNormalization)
    ]
    rng = np.random.default_rng(0)
    weights = [
        rng.uniform(0.5, 1.5, SHAPE[-1]),  # gamma
        rng.normal(0, 0.5, SHAPE[-1]),  # beta
        rng.normal(0, 0.5, SHAPE[-1]),  # moving mean
        rng.uniform(0.5, 2.0, SHAPE[-1]),  # moving variance
    ]
    for layer in layers:
        layer.build(SHAPE)
        layer.set_weights(weights)
    return layers


def inputs(seed: int = 1) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).normal(2.0, 3.0, SHAPE), tf.float32)


def forward_backward(layer, x, training):
    """Output, gradients of a weighted sum of the output w.r.t. input, gamma and beta."""
    weights = tf.constant(np.random.default_rng(2).normal(size=SHAPE), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    grads = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return [y] + grads


@pytest.mark.parametrize("training", [True, False])
def test_outputs_gradients_and_moving_statistics_match_keras(training):
    fused, reference = twin_layers()
    x = inputs()
    for got, want in zip(
        forward_backward(fused, x, training), forward_backward(reference, x, training)
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    for name in ("moving_mean", "moving_variance"):
        np.testing.assert_allclose(getattr(fused, name), getattr(reference, name), rtol=1e-5)
    if training:  # the update happened (momentum 0.9 moves them off the starting values)
        assert not np.allclose(fused.moving_mean, twin_layers()[0].moving_mean)


def test_fused_kernel_runs_in_training_on_one_replica():
    fused, _ = twin_layers()
    graph = tf.function(lambda x: fused(x, training=True)).get_concrete_function(inputs()).graph
    assert any(op.type.startswith("FusedBatchNorm") for op in graph.get_operations())


def test_bfloat16_matches_keras_to_bfloat16_precision():
    keras.mixed_precision.set_dtype_policy("mixed_bfloat16")
    fused, reference = twin_layers("mixed_bfloat16")
    x = tf.cast(inputs(), tf.bfloat16)
    got, want = fused(x, training=True), reference(x, training=True)
    assert got.dtype == want.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(got, tf.float32), tf.cast(want, tf.float32), rtol=2e-2, atol=2e-2
    )
    np.testing.assert_allclose(fused.moving_variance, reference.moving_variance, rtol=1e-3)


def test_config_and_weights_round_trip(tmp_path):
    fused, _ = twin_layers()
    model = keras.Sequential([keras.Input(SHAPE[1:]), fused])
    model.save(tmp_path / "bn.keras")
    restored = keras.saving.load_model(tmp_path / "bn.keras")
    layer = restored.layers[-1]
    assert isinstance(layer, FusedBatchNormalization) and layer.synchronized
    np.testing.assert_array_equal(layer(inputs(), training=False), fused(inputs(), training=False))
