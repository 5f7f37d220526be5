"""CARL's opt-in extensions from CARP (not in the paper): an EMA target encoder and random
partitions of the prototypes into blocks. Each against an independent NumPy computation, with
gradients only where they belong, saved and loaded, refused with the field named where it cannot
train, and equal under MirroredStrategy and on one device."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from carl_tf import CARL
from carl_tf.configs.common import paper_recipe
from carl_tf.run.config import ConfigFieldError, validate_config
from carl_tf.run.rundir import _changed_fields
from tests.test_model import assert_mirrored_steps_equal_one_device, random_views, tiny_carl

MOMENTUM = 0.9
EXTENSIONS = ("target_momentum", "prototype_block_size")


def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_energies(model, images, training=False):
    """<z, c_k> in float64 from `model`'s z and its prototype matrix."""
    features = model.backbone(images, training=training)
    z = np.array(model.projection_head(features, training=training), dtype=np.float64)
    return z @ np.array(model.prototypes, dtype=np.float64)


def numpy_kl_to_uniform(p):
    """KL(batch mean || uniform) over the last axis of p (batch, ..., K), natural logs."""
    mean = p.mean(axis=0)
    return np.sum(mean * np.log(mean * p.shape[-1]), axis=-1)


def set_encoder(model, source):
    for weight, value in zip(model._encoder_weights(), source._encoder_weights()):
        weight.assign(value)


def twin_of(model):
    """A plain CARL whose trainable weights are `model`'s EMA weights and whose moving
    statistics are `model`'s: the target encoder, built without `target_momentum`."""
    twin = tiny_carl()
    set_encoder(twin, model)
    weights = twin._encoder_weights()
    for index, target in zip(model._averaged, model.target_weights):
        weights[index].assign(target)
    return twin


def ema_carl(seed=0, **kwargs):
    """A tiny CARL with `target_momentum`, whose EMA weights are another initialization's."""
    keras.utils.set_random_seed(seed)
    model = tiny_carl(target_momentum=MOMENTUM, **kwargs)
    other = tiny_carl()
    for target, weight in zip(model.target_weights, other._online_weights()):
        target.assign(weight)
    return model


def drawn_partition(model):
    """The partition the model's next step draws, leaving its generator's state as it was."""
    state = np.array(model.partition_seed_generator.state)
    partition = np.array(model._draw_partition())
    model.partition_seed_generator.state.assign(state)
    return partition


# EMA target encoder


@pytest.mark.parametrize("training, symmetric", [(False, False), (True, False), (True, True)])
def test_ema_objective_equals_numpy(training, symmetric):
    model = ema_carl(kl_weight=1.5, symmetric=symmetric, target_temperature=0.5)
    twin = twin_of(model)
    view_a, view_b = random_views(1)
    # The target pass uses its own batch's statistics in training, as the online pass does.
    e_a, e_b = numpy_energies(model, view_a, training), numpy_energies(model, view_b, training)
    t_a, t_b = numpy_energies(twin, view_a, training), numpy_energies(twin, view_b, training)
    figures = model._objective(view_a, view_b, training=training)
    p_a, p_b = numpy_softmax(e_a), numpy_softmax(e_b)
    pairs = [(p_a, numpy_softmax(t_b / 0.5))]
    if symmetric:
        pairs.append((p_b, numpy_softmax(t_a / 0.5)))
    consistency = np.mean([-np.mean(np.log(np.sum(a * t, axis=1))) for a, t in pairs])
    kl = np.mean([numpy_kl_to_uniform(a) for a, _ in pairs])
    np.testing.assert_allclose(figures["consistency"], consistency, rtol=1e-4)
    np.testing.assert_allclose(figures["kl"], kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(figures["loss"], consistency + 1.5 * kl, rtol=1e-4)


def test_the_target_pass_leaves_the_moving_statistics_alone():
    model = ema_carl()
    reference = tiny_carl()
    set_encoder(reference, model)
    view_a, view_b = random_views(2)
    model._objective(view_a, view_b, training=True)
    reference.energies(view_a, training=True)  # the one online pass of a one-sided step
    for got, want in zip(model._encoder_weights(), reference._encoder_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_no_gradient_reaches_the_target_encoder():
    model = ema_carl(kl_weight=2.0)
    twin = twin_of(model)
    view_a, view_b = (tf.constant(v) for v in random_views(3))
    target = tf.constant(numpy_softmax(numpy_energies(twin, view_b, training=True)), "float32")
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([view_a, view_b])
        loss = model._objective(view_a, view_b, training=True)["loss"]
        p_a = model.assign(view_a, training=True)
        agreement = tf.reduce_sum(p_a * target, axis=1)
        mean = tf.reduce_mean(p_a, axis=0)
        kl = tf.reduce_sum(mean * tf.math.log(mean * 10.0))
        reference = -tf.reduce_mean(tf.math.log(agreement)) + 2.0 * kl
    assert tape.gradient(loss, view_b) is None
    assert all(g is None for g in tape.gradient(loss, model.target_weights))
    for got, want in zip(
        tape.gradient(loss, model.trainable_variables),
        tape.gradient(reference, model.trainable_variables),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-6)
    assert not any(w.trainable for w in model.target_weights)
    assert not set(map(id, model.target_weights)) & set(map(id, model.trainable_variables))


def test_the_ema_follows_each_optimizer_step():
    model = ema_carl()
    model.compile(optimizer=keras.optimizers.SGD(0.5, momentum=0.9))
    targets = [np.array(w) for w in model.target_weights]
    online = [np.array(w) for w in model._online_weights()]
    model.fit(tf.data.Dataset.from_tensor_slices(random_views(4)).batch(8), verbose=0)
    moved = [np.array(w) for w in model._online_weights()]
    assert sum(not np.allclose(a, b) for a, b in zip(moved, online)) == len(online)
    for got, target, weight in zip(model.target_weights, targets, moved):
        np.testing.assert_allclose(got, MOMENTUM * target + (1 - MOMENTUM) * weight, rtol=1e-5)


def test_the_ema_starts_equal_to_the_encoder():
    keras.utils.set_random_seed(0)
    model = tiny_carl(target_momentum=0.99)
    assert len(model.target_weights) == len(model.trainable_variables)
    for target, weight in zip(model.target_weights, model._online_weights()):
        np.testing.assert_array_equal(target, weight)
    images = random_views(5)[0]
    np.testing.assert_allclose(model._target_energies(images, False), model.energies(images))


def test_extensions_off_leave_the_weights_and_their_initialization_as_before():
    keras.utils.set_random_seed(0)
    plain = tiny_carl()
    keras.utils.set_random_seed(0)
    extended = tiny_carl(target_momentum=0.5, prototype_block_size=5)
    assert len(plain.weights) + len(plain.trainable_weights) == len(extended.weights)
    for got, want in zip(extended._encoder_weights(), plain._encoder_weights()):
        np.testing.assert_array_equal(got, want)


# Random partitions of the prototypes


def numpy_block_figures(p_blocks, t_blocks):
    """Consistency and KL of per-block assignments (batch, blocks, B): means over blocks."""
    consistency = -np.mean(np.log(np.sum(p_blocks * t_blocks, axis=-1)))
    return consistency, np.mean(numpy_kl_to_uniform(p_blocks))


@pytest.mark.parametrize("symmetric, temperature", [(False, 1.0), (True, 0.5)])
def test_block_objective_equals_numpy(symmetric, temperature):
    keras.utils.set_random_seed(0)
    model = tiny_carl(
        kl_weight=1.5, prototype_block_size=5, symmetric=symmetric, target_temperature=temperature
    )
    view_a, view_b = random_views(6)
    partition = drawn_partition(model)
    assert sorted(partition) == list(range(10))
    figures = model._objective(view_a, view_b, training=False)
    e_a, e_b = numpy_energies(model, view_a), numpy_energies(model, view_b)
    blocks_a, blocks_b = (e[:, partition].reshape(8, 2, 5) for e in (e_a, e_b))
    pairs = [(numpy_softmax(blocks_a), numpy_softmax(blocks_b / temperature))]
    if symmetric:
        pairs.append((numpy_softmax(blocks_b), numpy_softmax(blocks_a / temperature)))
    terms = np.array([numpy_block_figures(a, t) for a, t in pairs]).mean(axis=0)
    np.testing.assert_allclose(figures["consistency"], terms[0], rtol=1e-4)
    np.testing.assert_allclose(figures["kl"], terms[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(figures["loss"], terms[0] + 1.5 * terms[1], rtol=1e-4)
    assert figures["prototypes_in_use"] == len(set(np.argmax(e_a, axis=1)))
    # predict keeps the softmax over all K.
    np.testing.assert_allclose(
        model.predict(view_a, verbose=0), numpy_softmax(e_a), rtol=1e-4, atol=1e-6
    )


def test_blocks_with_small_crops_and_the_ema_target_equal_numpy():
    model = ema_carl(prototype_block_size=2, small_crops=2, small_crop_size=8)
    twin = twin_of(model)
    view_a, view_b = random_views(7)
    smalls = tuple(np.asarray(tf.image.resize(v, (8, 8))) for v in (view_a, view_b))
    partition = drawn_partition(model)
    figures = model._objective(view_a, view_b, training=False, small_views=smalls)

    def blocks(e):
        return e[:, partition].reshape(len(e), 5, 2)

    p_a = numpy_softmax(blocks(numpy_energies(model, view_a)))
    targets = [numpy_softmax(blocks(numpy_energies(twin, v))) for v in (view_a, view_b)]
    both = numpy_energies(model, np.concatenate(smalls))
    p_small = np.split(numpy_softmax(blocks(both)), 2)
    pairs = [(p_a, targets[1])] + [(s, t) for s in p_small for t in targets]
    want = np.mean([-np.log(np.sum(a * t, axis=-1)) for a, t in pairs])
    np.testing.assert_allclose(figures["consistency"], want, rtol=1e-4)
    np.testing.assert_allclose(figures["kl"], np.mean(numpy_kl_to_uniform(p_a)), rtol=1e-4)


def test_partitions_change_every_step_and_repeat_from_the_seed():
    def draws(seed):
        keras.utils.set_random_seed(seed)
        model = tiny_carl(prototype_block_size=2)
        return [np.array(model._draw_partition()) for _ in range(3)]

    first = draws(0)
    assert not np.array_equal(first[0], first[1])
    for got, want in zip(draws(0), first):
        np.testing.assert_array_equal(got, want)
    seeded = [tiny_carl(prototype_block_size=2, partition_seed=5) for _ in range(2)]
    np.testing.assert_array_equal(*(np.array(m._draw_partition()) for m in seeded))


def test_block_anchor_gets_gradient_and_the_target_none():
    keras.utils.set_random_seed(0)
    model = tiny_carl(prototype_block_size=5)
    view_a, view_b = (tf.constant(v) for v in random_views(8))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([view_a, view_b])
        loss = model._objective(view_a, view_b, training=True)["loss"]
    assert tape.gradient(loss, view_b) is None
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, view_a)))) > 0
    assert all(g is not None for g in tape.gradient(loss, model.trainable_variables))


def test_every_replica_draws_the_same_partition(two_replicas):
    with two_replicas.scope():
        model = tiny_carl(prototype_block_size=5, partition_seed=3)

    @tf.function
    def draw():
        return two_replicas.run(model._draw_partition)

    local = two_replicas.experimental_local_results(draw())
    np.testing.assert_array_equal(local[0], local[1])


# Both, under distribution, saved and configured


@pytest.mark.parametrize(
    "options", [{"target_momentum": MOMENTUM}, {"prototype_block_size": 5, "partition_seed": 1}]
)
def test_extension_step_under_mirrored_strategy_equals_one_device(two_replicas, options):
    assert_mirrored_steps_equal_one_device(
        two_replicas, lambda: tiny_carl(kl_weight=2.0, **options), random_views(9, batch=8)
    )


def test_extensions_survive_a_keras_round_trip(tmp_path):
    model = ema_carl(prototype_block_size=5, partition_seed=4)
    path = str(tmp_path / "carl.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, CARL)
    assert loaded.target_momentum == MOMENTUM and loaded.prototype_block_size == 5
    assert loaded.partition_seed == 4
    for got, want in zip(loaded.target_weights, model.target_weights):
        np.testing.assert_array_equal(got, want)
    view_a, view_b = random_views(10)
    for name in ("loss", "consistency", "kl"):
        np.testing.assert_allclose(
            loaded._objective(view_a, view_b, training=False)[name],
            model._objective(view_a, view_b, training=False)[name],
            rtol=1e-6,
        )


@pytest.mark.parametrize(
    "field, value, arguments",
    [
        ("target_momentum", 1.0, {"target_momentum": 1.0}),
        ("target_momentum", -0.1, {"target_momentum": -0.1}),
        ("prototype_block_size", 30, {"prototype_block_size": 3}),
        ("prototype_block_size", 1, {"prototype_block_size": 1}),
        ("prototype_block_size", -2, {"prototype_block_size": -2}),
    ],
)
def test_settings_that_cannot_train_are_refused_naming_the_field(field, value, arguments):
    with pytest.raises(ValueError, match=field):
        tiny_carl(**arguments)  # K = 10
    config = paper_recipe()  # K = 100
    config[field] = value
    with pytest.raises(ConfigFieldError, match=field) as error:
        validate_config(config)
    assert error.value.field == field


def test_the_defaults_are_off_and_runs_recorded_before_them_resume():
    config = paper_recipe()
    validate_config(config)
    assert config.target_momentum == 0.0 and config.prototype_block_size == 0
    recorded = {k: v for k, v in config.to_dict().items() if k not in EXTENSIONS}
    assert _changed_fields(recorded, config.to_dict(), []) == []
    config.target_momentum, config.prototype_block_size = 0.99, 20
    validate_config(config)
    assert _changed_fields(recorded, config.to_dict(), []) == sorted(EXTENSIONS)


# The prototypes' initial scale


def test_prototype_init_scale_multiplies_the_glorot_prototypes_and_nothing_else(tmp_path):
    keras.utils.set_random_seed(0)
    plain = tiny_carl()
    keras.utils.set_random_seed(0)
    scaled = tiny_carl(prototype_init_scale=0.5)
    # Glorot-uniform's bound sqrt(6 / (fan_in + fan_out)), for 16 -> 10 prototypes.
    bound = np.sqrt(6.0 / (16 + 10))
    assert np.abs(plain.prototypes.numpy()).max() <= bound
    np.testing.assert_allclose(scaled.prototypes.numpy(), 0.5 * plain.prototypes.numpy(), rtol=1e-6)
    for got, want in zip(scaled.backbone.weights, plain.backbone.weights):
        np.testing.assert_array_equal(got, want)
    path = str(tmp_path / "carl.keras")
    scaled.save(path)
    assert keras.saving.load_model(path).prototype_init_scale == 0.5


def test_a_prototype_init_scale_that_cannot_train_is_refused_naming_the_field():
    for scale in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="prototype_init_scale"):
            tiny_carl(prototype_init_scale=scale)
    config = paper_recipe()
    config.prototype_init_scale = -1.0
    with pytest.raises(ConfigFieldError, match="prototype_init_scale") as error:
        validate_config(config)
    assert error.value.field == "prototype_init_scale"
    # A run recorded before the field existed trained with Keras's own glorot-uniform: 1.
    config.prototype_init_scale = 1.0
    recorded = {k: v for k, v in config.to_dict().items() if k != "prototype_init_scale"}
    assert _changed_fields(recorded, config.to_dict(), []) == []
    config.prototype_init_scale = 0.5
    assert _changed_fields(recorded, config.to_dict(), []) == ["prototype_init_scale"]
