"""Multi-crop CARL: the averaged consistency, its stop-gradients, serialization and config checks."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from carl_tf import CARL, losses
from carl_tf.configs.common import paper_recipe
from carl_tf.errors import RunDirectoryError
from carl_tf.method.augment import SimCLRAugment
from carl_tf.method.backbones import build_backbone
from carl_tf.run.config import ConfigFieldError, validate_config
from carl_tf.run.rundir import RunDirectory

IMAGE_SIZE, SMALL_SIZE = 16, 8


def tiny_backbone(size=IMAGE_SIZE):
    """A conv net built for `size` px that ends in global pooling, so it encodes any size."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="tiny")


def tiny_carl(backbone=None, **kwargs):
    kwargs.setdefault("num_prototypes", 10)
    kwargs.setdefault("projection_hidden_units", (32,))
    kwargs.setdefault("projection_dim", 16)
    return CARL(backbone or tiny_backbone(), **kwargs)


def images(seed, batch=8, size=IMAGE_SIZE):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 255, (batch, size, size, 3)).astype("float32")


def numpy_consistency(anchor, target):
    return float(np.mean(-np.log(np.sum(anchor * target, axis=1))))


def numpy_kl(probs):
    mean = probs.mean(axis=0)
    return float(math.log(probs.shape[1]) + np.sum(mean * np.log(mean)))


def test_no_small_crops_is_bit_identical_to_the_model_without_the_option():
    view_a, view_b = images(0), images(1)
    results = []
    for kwargs in ({}, {"small_crops": 0, "small_crop_size": 4, "small_crop_scale": (0.1, 0.2)}):
        keras.utils.set_random_seed(0)
        model = tiny_carl(**kwargs)
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        figures = model._objective(view_a, view_b, training=False)
        pairs = tf.data.Dataset.from_tensors((view_a, view_b))
        logs = {
            k: v[-1]
            for k, v in model.fit(pairs, epochs=1, verbose=0, shuffle=False).history.items()
        }
        results.append((figures, logs, [w.numpy() for w in model.weights]))
    (figures_0, logs_0, weights_0), (figures_1, logs_1, weights_1) = results
    for name in ("loss", "consistency", "kl", "prototypes_in_use"):
        np.testing.assert_array_equal(figures_0[name], figures_1[name])
        np.testing.assert_array_equal(logs_0[name], logs_1[name])
    for got, want in zip(weights_1, weights_0, strict=True):
        np.testing.assert_array_equal(got, want)


def test_multi_crop_consistency_of_hand_computed_cases():
    half, first = [[0.5, 0.5]], [[1.0, 0.0]]
    # Pairs (a, b): <.,.> = 0.5; (s, a): 0.5; (s, b): 1.
    np.testing.assert_allclose(
        losses.multi_crop_consistency([first], [half, first]), 2 * math.log(2) / 3, rtol=1e-6
    )
    # Symmetric adds (b, a): 0.5.
    np.testing.assert_allclose(
        losses.multi_crop_consistency([first], [half, first], symmetric=True),
        3 * math.log(2) / 4,
        rtol=1e-6,
    )
    one_hot = np.eye(3, dtype="float32")
    np.testing.assert_allclose(
        losses.multi_crop_consistency([one_hot, one_hot], [one_hot, one_hot]), 0.0, atol=1e-7
    )
    # Without small views it is eq. 4.
    p, q = tf.nn.softmax(images(2, batch=4)[:, 0, 0]), tf.nn.softmax(images(3, batch=4)[:, 0, 0])
    np.testing.assert_allclose(
        losses.multi_crop_consistency([], [p, q]), losses.consistency_loss(p, q), rtol=1e-6
    )


@pytest.mark.parametrize("symmetric", [False, True])
def test_objective_equals_numpy_on_the_models_assignments(symmetric):
    keras.utils.set_random_seed(0)
    model = tiny_carl(kl_weight=2.5, symmetric=symmetric, small_crops=2, small_crop_size=SMALL_SIZE)
    view_a, view_b = images(4), images(5)
    small = (images(6, size=SMALL_SIZE), images(7, size=SMALL_SIZE))
    figures = model._objective(view_a, view_b, training=False, small_views=small)

    p_a, p_b = model.predict(view_a, verbose=0), model.predict(view_b, verbose=0)
    p_small = [model.predict(s, verbose=0) for s in small]
    pairs = [(p_a, p_b)] + ([(p_b, p_a)] if symmetric else [])
    pairs += [(s, g) for s in p_small for g in (p_a, p_b)]
    consistency = np.mean([numpy_consistency(a, t) for a, t in pairs])
    kl = np.mean([numpy_kl(p) for p in ([p_a, p_b] if symmetric else [p_a])])
    np.testing.assert_allclose(figures["consistency"], consistency, rtol=1e-5)
    np.testing.assert_allclose(figures["kl"], kl, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(figures["loss"], consistency + 2.5 * kl, rtol=1e-5)


def test_no_gradient_flows_through_the_global_targets():
    rng = np.random.default_rng(8)
    p_a, p_b, p_s = (tf.constant(rng.dirichlet(np.ones(5), size=4), tf.float32) for _ in "abs")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([p_a, p_b, p_s])
        loss = losses.multi_crop_consistency([p_s], [p_a, p_b])
        # p_a's share as an anchor only: its (a, b) pair, one of the three pairs.
        anchor_only = losses.consistency_loss(p_a, tf.stop_gradient(p_b)) / 3
    assert tape.gradient(loss, p_b) is None  # a target of every pair it is in
    np.testing.assert_allclose(tape.gradient(loss, p_a), tape.gradient(anchor_only, p_a))
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, p_s)))) > 0


def test_model_gradients_equal_those_with_constant_global_targets():
    keras.utils.set_random_seed(0)
    model = tiny_carl(small_crops=2, small_crop_size=SMALL_SIZE)
    view_a, view_b = tf.constant(images(9)), tf.constant(images(10))
    small = (tf.constant(images(11, size=SMALL_SIZE)), tf.constant(images(12, size=SMALL_SIZE)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([view_a, view_b, *small])
        loss = model._objective(view_a, view_b, training=True, small_views=small)["loss"]
        p_a = model.assign(view_a, training=True)
        targets = [
            tf.constant(p_a.numpy()),
            tf.constant(model.assign(view_b, training=True).numpy()),
        ]
        p_small = tf.split(model.assign(tf.concat(small, 0), training=True), 2)
        terms = [losses.consistency_loss(p_a, targets[1])]
        terms += [losses.consistency_loss(s, t) for s in p_small for t in targets]
        reference = losses.carl_loss(
            tf.reduce_mean(terms), losses.kl_to_uniform(p_a), model.kl_weight
        )
    assert tape.gradient(loss, view_b) is None
    for view in (view_a, *small):
        assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, view)))) > 0
    for got, want in zip(
        tape.gradient(loss, model.trainable_variables),
        tape.gradient(reference, model.trainable_variables),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_small_views_are_made_from_every_batch_form():
    model = tiny_carl(small_crops=3, small_crop_size=SMALL_SIZE)
    crops = np.stack([images(13), images(14)], axis=1)
    for batch in (images(13), (images(13), images(14)), {"crops": crops}):
        view_a, view_b, small = model._views(batch)
        assert view_a.shape == view_b.shape == (8, IMAGE_SIZE, IMAGE_SIZE, 3)
        assert [tuple(s.shape) for s in small] == [(8, SMALL_SIZE, SMALL_SIZE, 3)] * 3


def test_two_step_fit_of_a_resnet_with_small_crops_moves_weights():
    keras.utils.set_random_seed(0)
    backbone = build_backbone("resnet18", width=4, image_size=IMAGE_SIZE)
    model = tiny_carl(backbone, small_crops=2, small_crop_size=SMALL_SIZE)
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
    before = [w.numpy() for w in model.trainable_weights]
    history = model.fit(images(15), batch_size=4, epochs=1, verbose=0).history
    for name in ("loss", "consistency", "kl", "prototypes_in_use"):
        assert np.isfinite(history[name]).all()
    assert model.optimizer.iterations.numpy() == 2
    moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(moved)
    assert backbone.input_shape == (None, IMAGE_SIZE, IMAGE_SIZE, 3)  # what export reads


def test_a_backbone_of_fixed_input_size_is_refused():
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    flat = keras.layers.Dense(4)(keras.layers.Flatten()(inputs))
    with pytest.raises(ValueError, match="cannot encode 8x8 small crops"):
        tiny_carl(keras.Model(inputs, flat), small_crops=2, small_crop_size=SMALL_SIZE)


def test_config_round_trip_keeps_the_small_crops(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_carl(
        augmenter=SimCLRAugment(IMAGE_SIZE, grayscale_probability=0.5, seed=3),
        small_crops=4,
        small_crop_scale=(0.1, 0.3),
    )
    assert model.small_crop_size == IMAGE_SIZE // 2  # half the global views by default
    small = model.small_augmenter.get_config()
    assert small["grayscale_probability"] == 0.5 and small["seed"] == 4
    for restored in (
        CARL.from_config(model.get_config()),
        keras.saving.load_model(_saved(model, tmp_path)),
    ):
        assert (restored.small_crops, restored.small_crop_size) == (4, IMAGE_SIZE // 2)
        assert restored.small_crop_scale == (0.1, 0.3)
        assert restored.small_augmenter.get_config() == small
    np.testing.assert_array_equal(
        restored.predict(images(16), verbose=0), model.predict(images(16), verbose=0)
    )
    assert CARL.from_config(tiny_carl().get_config()).small_augmenter is None


def _saved(model, tmp_path):
    path = str(tmp_path / "model.keras")
    model.save(path)
    return path


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("small_crops", -1, "small_crops must be at least 0, got -1"),
        ("small_crop_size", 33, "small_crop_size (33) must be at most image_size (32)"),
        ("small_crop_min_scale", 0.5, "small_crop_min_scale (0.5) must be at most"),
        ("small_crop_max_scale", 1.5, "small_crop_max_scale must be in (0, 1], got 1.5"),
    ],
)
def test_config_refuses_impossible_small_crops(field, value, message):
    config = paper_recipe()
    config[field] = value
    with pytest.raises(
        ConfigFieldError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as e:
        validate_config(config)
    assert e.value.field == field and "\n" not in str(e.value)


def test_small_crop_size_follows_image_size_unless_set():
    config = paper_recipe()
    assert (config.small_crops, config.small_crop_size) == (0, 16)
    config.image_size = 96
    assert config.small_crop_size == 48
    config.small_crop_size = 40
    config.image_size = 64
    assert config.small_crop_size == 40
    validate_config(config)


def test_runs_recorded_before_small_crops_resume_while_they_stay_off(tmp_path):
    config = paper_recipe().to_dict()
    older = {k: v for k, v in config.items() if not k.startswith("small_crop")}
    (tmp_path / "config.json").write_text(json.dumps(older))
    run_dir = RunDirectory(str(tmp_path))
    assert run_dir.check_config(config) == older
    with pytest.raises(RunDirectoryError, match="small_crop_size None -> 16"):
        run_dir.check_config({**config, "small_crops": 4})
