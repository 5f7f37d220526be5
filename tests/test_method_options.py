"""CARL's opt-in extensions (not in the paper): a sharpened stop-gradient target and unit-norm
prototypes, each against an independent NumPy computation, with gradients only where they belong,
saved and loaded, and equal under MirroredStrategy and on one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from carl_tf import CARL
from carl_tf.configs.common import paper_recipe
from carl_tf.run.config import ConfigFieldError, validate_config
from tests.test_model import assert_mirrored_steps_equal_one_device, random_views, tiny_carl


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_energies(model, images, unit, cosine=0.0):
    """<z, c_k> from the model's z and its kernel, normalized in NumPy when `unit`; with
    `cosine` T > 0, cos(z, c_k) / T."""
    z = np.array(model.projection_head(model.backbone(images)), dtype=np.float64)
    kernel = np.array(model.prototypes, dtype=np.float64)
    if unit or cosine:
        kernel = kernel / np.linalg.norm(kernel, axis=0, keepdims=True)
    if cosine:
        return (z / np.linalg.norm(z, axis=1, keepdims=True)) @ kernel / cosine
    return z @ kernel


@pytest.mark.parametrize("unit, cosine", [(False, 0.0), (True, 0.0), (False, 0.1)])
@pytest.mark.parametrize("temperature", [1.0, 0.25])
def test_objective_equals_numpy(temperature, unit, cosine):
    keras.utils.set_random_seed(0)
    model = tiny_carl(
        kl_weight=1.5,
        target_temperature=temperature,
        unit_prototypes=unit,
        cosine_temperature=cosine,
    )
    model.prototypes.assign(model.prototypes * 7.0)  # unit norm must undo any scale
    view_a, view_b = random_views(1)
    figures = model._objective(view_a, view_b, training=False)
    e_a = numpy_energies(model, view_a, unit, cosine)
    e_b = numpy_energies(model, view_b, unit, cosine)
    p_a, target = numpy_softmax(e_a), numpy_softmax(e_b / temperature)
    consistency = -np.mean(np.log(np.sum(p_a * target, axis=1)))
    mean = p_a.mean(axis=0)
    kl = np.sum(mean * np.log(mean * p_a.shape[1]))
    np.testing.assert_allclose(figures["consistency"], consistency, rtol=1e-4)
    np.testing.assert_allclose(figures["kl"], kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(figures["loss"], consistency + 1.5 * kl, rtol=1e-4)
    np.testing.assert_allclose(model.predict(view_a, verbose=0), p_a, rtol=1e-4, atol=1e-6)


def test_unit_prototypes_ignore_the_prototypes_scale():
    keras.utils.set_random_seed(0)
    model = tiny_carl(unit_prototypes=True)
    images = random_views(2)[0]
    before = np.array(model.energies(images))
    model.prototypes.assign(model.prototypes * 9.0)
    np.testing.assert_allclose(model.energies(images), before, rtol=1e-5, atol=1e-6)


def test_sharpened_target_carries_no_gradient():
    keras.utils.set_random_seed(0)
    model = tiny_carl(target_temperature=0.5, symmetric=False)
    view_a, view_b = (tf.constant(v) for v in random_views(3))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([view_a, view_b])
        loss = model._objective(view_a, view_b, training=True)["loss"]
    assert tape.gradient(loss, view_b) is None
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, view_a)))) > 0


def test_sharpening_changes_the_consistency_gradient():
    keras.utils.set_random_seed(0)
    initial = tiny_carl().get_weights()
    view_a, view_b = (tf.constant(v) for v in random_views(4))

    def gradient(temperature):
        model = tiny_carl(target_temperature=temperature, kl_weight=0.0)
        model.set_weights(initial)
        with tf.GradientTape() as tape:
            loss = model._objective(view_a, view_b, training=False)["loss"]
        return np.concatenate(
            [np.ravel(g) for g in tape.gradient(loss, model.trainable_variables) if g is not None]
        )

    plain, sharp = gradient(1.0), gradient(0.25)
    assert not np.allclose(plain, sharp)


def test_multi_crop_pairs_use_the_sharpened_targets():
    keras.utils.set_random_seed(0)
    model = tiny_carl(target_temperature=0.5, small_crops=2, small_crop_size=8)
    view_a, view_b = random_views(5)
    smalls = tuple(np.asarray(tf.image.resize(view_a, (8, 8))) for _ in range(2))
    figures = model._objective(view_a, view_b, training=False, small_views=smalls)
    e_a, e_b = numpy_energies(model, view_a, False), numpy_energies(model, view_b, False)
    p_a = numpy_softmax(e_a)
    targets = numpy_softmax(e_a / 0.5), numpy_softmax(e_b / 0.5)
    p_small = numpy_softmax(numpy_energies(model, smalls[0], False))
    pairs = [(p_a, targets[1])] + [(p_small, t) for _ in smalls for t in targets]
    want = np.mean([-np.log(np.sum(a * t, axis=1)) for a, t in pairs], axis=0).mean()
    np.testing.assert_allclose(figures["consistency"], want, rtol=1e-4)


def test_options_survive_a_keras_round_trip(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_carl(target_temperature=0.3, unit_prototypes=True, cosine_temperature=0.2)
    path = str(tmp_path / "carl.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CARL)
    assert loaded.target_temperature == 0.3 and loaded.unit_prototypes
    assert loaded.cosine_temperature == 0.2
    images = random_views(6)[0]
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))


def test_non_positive_temperature_is_refused():
    with pytest.raises(ValueError, match="target_temperature"):
        tiny_carl(target_temperature=0.0)
    with pytest.raises(ValueError, match="cosine_temperature"):
        tiny_carl(cosine_temperature=-0.1)
    config = paper_recipe()
    config.target_temperature = -1.0
    with pytest.raises(ConfigFieldError, match="target_temperature"):
        validate_config(config)


def test_options_step_under_mirrored_strategy_equals_one_device(two_replicas):
    assert_mirrored_steps_equal_one_device(
        two_replicas,
        lambda: tiny_carl(kl_weight=2.0, target_temperature=0.5, cosine_temperature=0.2),
        random_views(7, batch=8),
        atol=5e-5,  # summation order differs between one and two replicas; 1/T = 5 magnifies it
    )
