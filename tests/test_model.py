"""The CARL model: gradient paths, training behaviour, serialization and exactness under distribution."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from carl_tf import CARL, KLWeightSchedule, losses
from carl_tf.method.augment import SimCLRAugment
from carl_tf.method.normalization import FusedBatchNormalization

IMAGE_SIZE = 16


def tiny_backbone(width=8, name="tiny"):
    """A small conv net with synchronized BatchNorm, images in [0, 255] -> (N, 2 * width)."""
    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(width, 3, use_bias=False)(x)
    x = FusedBatchNormalization(synchronized=True)(x)  # fused on one replica, Keras's on two
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(2 * width, 3, strides=2, activation="relu")(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name=name)


def tiny_carl(**kwargs):
    kwargs.setdefault("num_prototypes", 10)
    kwargs.setdefault("projection_hidden_units", (32,))
    kwargs.setdefault("projection_dim", 16)
    return CARL(tiny_backbone(), **kwargs)


def random_views(seed, batch=8):
    rng = np.random.default_rng(seed)
    shape = (batch, IMAGE_SIZE, IMAGE_SIZE, 3)
    return (
        rng.uniform(0, 255, shape).astype("float32"),
        rng.uniform(0, 255, shape).astype("float32"),
    )


def test_predict_returns_assignment_probabilities():
    model = tiny_carl()
    probs = model.predict(random_views(0)[0], verbose=0)
    assert probs.shape == (8, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_objective_equals_loss_functions_on_assignments():
    keras.utils.set_random_seed(0)
    model = tiny_carl(kl_weight=2.5)
    view_a, view_b = random_views(1)
    figures = model._objective(view_a, view_b, training=False)
    p_a, p_b = model.assign(view_a), model.assign(view_b)
    consistency = losses.consistency_loss(p_a, p_b)
    kl = losses.kl_to_uniform(p_a)
    np.testing.assert_allclose(figures["consistency"], consistency, rtol=1e-5)
    np.testing.assert_allclose(figures["kl"], kl, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(figures["loss"], consistency + 2.5 * kl, rtol=1e-5)
    assert figures["prototypes_in_use"] == len(set(np.argmax(p_a, axis=1)))


def test_no_gradient_flows_through_the_positive_branch():
    keras.utils.set_random_seed(0)
    model = tiny_carl()
    view_a, view_b = (tf.constant(v) for v in random_views(2))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([view_a, view_b])
        loss = model._objective(view_a, view_b, training=True)["loss"]
        # The same loss with the positive assignment as a precomputed constant.
        target = tf.stop_gradient(model.assign(view_b, training=True))
        p_a = model.assign(view_a, training=True)
        reference = losses.carl_loss(
            losses.consistency_loss(p_a, target), losses.kl_to_uniform(p_a), model.kl_weight
        )
    assert tape.gradient(loss, view_b) is None
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, view_a)))) > 0
    for got, want in zip(
        tape.gradient(loss, model.trainable_variables),
        tape.gradient(reference, model.trainable_variables),
    ):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def test_symmetric_loss_trains_both_views():
    keras.utils.set_random_seed(0)
    model = tiny_carl(symmetric=True)
    view_a, view_b = (tf.constant(v) for v in random_views(3))
    with tf.GradientTape() as tape:
        tape.watch(view_b)
        loss = model._objective(view_a, view_b, training=False)["loss"]
    assert float(tf.reduce_sum(tf.abs(tape.gradient(loss, view_b)))) > 0
    p_a, p_b = model.assign(view_a), model.assign(view_b)
    expected = 0.5 * (
        losses.consistency_loss(p_a, p_b) + losses.consistency_loss(p_b, p_a)
    ) + 4.0 * 0.5 * (losses.kl_to_uniform(p_a) + losses.kl_to_uniform(p_b))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


def test_fit_accepts_images_labelled_images_and_view_pairs():
    keras.utils.set_random_seed(0)
    model = tiny_carl()
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    view_a, view_b = random_views(4, batch=16)
    labels = np.arange(16) % 3
    for data in (view_a, (view_a, labels), (view_a, view_b)):
        dataset = tf.data.Dataset.from_tensor_slices(data).batch(8)
        history = model.fit(dataset, epochs=1, verbose=0)
        assert set(history.history) == {
            "loss",
            "consistency",
            "kl",
            "kl_weight",
            "prototypes_in_use",
        }
    logs = model.evaluate(dataset, verbose=0, return_dict=True)
    assert np.isfinite(logs["loss"]) and "kl_weight" not in logs  # a setting, not a figure


def test_kl_weight_schedule_sets_lambda_every_epoch_and_on_resume():
    model = tiny_carl()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    dataset = tf.data.Dataset.from_tensor_slices(random_views(5, batch=8)).batch(8)
    schedule = KLWeightSchedule(start=4.0, end=1.5, decay_epochs=4)
    history = model.fit(dataset, epochs=6, callbacks=[schedule], verbose=0)
    np.testing.assert_allclose(history.history["kl_weight"], [4.0, 3.375, 2.75, 2.125, 1.5, 1.5])
    resumed = model.fit(dataset, initial_epoch=2, epochs=4, callbacks=[schedule], verbose=0)
    np.testing.assert_allclose(resumed.history["kl_weight"], [2.75, 2.125])


def test_keras_round_trip_gives_identical_predictions(tmp_path):
    keras.utils.set_random_seed(0)
    model = CARL(
        tiny_backbone(),
        num_prototypes=7,
        projection_hidden_units=(24, 24),
        projection_dim=12,
        augmenter=SimCLRAugment(image_size=IMAGE_SIZE, grayscale_probability=0.5),
        kl_weight=3.0,
        symmetric=True,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    images = random_views(6, batch=8)[0]
    model.fit(images, batch_size=4, epochs=1, verbose=0)
    path = tmp_path / "carl.keras"
    model.save(path)
    restored = keras.models.load_model(path)  # no custom_objects: classes are registered
    assert isinstance(restored, CARL) and restored.symmetric and restored.num_prototypes == 7
    assert restored.augmenter.get_config()["grayscale_probability"] == 0.5
    np.testing.assert_array_equal(
        model.predict(images, verbose=0), restored.predict(images, verbose=0)
    )
    assert float(restored.kl_weight) == float(model.kl_weight)
    # Resume needs the optimizer's state (momentum buffers, step count) back too.
    assert len(restored.optimizer.variables) == len(model.optimizer.variables) > 2
    for got, want in zip(restored.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(got, want)


def test_fewer_than_two_prototypes_is_rejected():
    with pytest.raises(ValueError, match="num_prototypes"):
        tiny_carl(num_prototypes=1)


def assert_mirrored_steps_equal_one_device(
    two_replicas, make_model, views, optimizer=None, atol=1e-5
):
    """Two `fit` steps of `make_model()` on `views` under `two_replicas` end with the weights
    of the same two steps on one device, from the same initial weights; most weights move.

    `optimizer(model)` gives each model's optimizer; SGD(0.5, momentum 0.9) by default.
    """
    keras.utils.set_random_seed(0)
    initial = make_model().get_weights()

    def two_steps(strategy):
        with strategy.scope():
            model = make_model()
            model.set_weights(initial)
            model.compile(
                optimizer=optimizer(model) if optimizer else keras.optimizers.SGD(0.5, momentum=0.9)
            )
        dataset = tf.data.Dataset.from_tensor_slices(views).batch(len(views[0]))
        model.fit(dataset, epochs=2, verbose=0)
        return [np.array(w) for w in model.weights]

    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert len(cpus) == 2, "conftest configures two logical CPUs"
    single = two_steps(tf.distribute.OneDeviceStrategy(cpus[0]))
    mirrored = two_steps(two_replicas)
    changed = [not np.allclose(w, w0) for w, w0 in zip(single, initial)]
    assert sum(changed) > len(initial) // 2, "the step must actually move the weights"
    for got, want in zip(mirrored, single):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)


def test_mirrored_step_equals_single_device_step(two_replicas):
    assert_mirrored_steps_equal_one_device(
        two_replicas, lambda: tiny_carl(kl_weight=2.0), random_views(7, batch=8)
    )


def _fit_digits(kl_weight, epochs=5):
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.repeat((digits.images / 16 * 255).astype("float32")[..., None], 3, axis=-1)
    images = tf.image.resize(images, (IMAGE_SIZE, IMAGE_SIZE))
    keras.utils.set_random_seed(0)
    model = CARL(
        tiny_backbone(),
        num_prototypes=20,
        projection_hidden_units=(64,),
        projection_dim=32,
        augmenter=SimCLRAugment(image_size=IMAGE_SIZE, crop_scale=(0.5, 1.0)),
        kl_weight=kl_weight,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    dataset = tf.data.Dataset.from_tensor_slices(images).shuffle(2000, seed=0)
    return model.fit(dataset.batch(128, drop_remainder=True), epochs=epochs, verbose=0).history


def test_paper_lambda_learns_without_collapse_and_zero_lambda_collapses():
    regularised = _fit_digits(kl_weight=4.0)
    assert regularised["loss"][-1] < regularised["loss"][0] - 0.2
    assert regularised["prototypes_in_use"][-1] >= 15  # of 20
    # Section 2.3: the consistency term alone is minimised by one prototype for everything.
    unregularised = _fit_digits(kl_weight=0.0)
    assert unregularised["prototypes_in_use"][-1] <= 2
    assert unregularised["consistency"][-1] < 0.01


def test_collapse_guard_warns_with_the_fix_and_stops_after_patience_epochs(caplog):
    from carl_tf.run.callbacks import CollapseGuard, collapse_advice

    model = tiny_carl(num_prototypes=50)
    model.stop_training = False  # as fit sets it
    guard = CollapseGuard(
        fraction=0.1, batch_size=20, patience=2, advice=collapse_advice(50, 20, 0.1, 4.0, 2.5)
    )
    guard.set_model(model)
    with caplog.at_level("WARNING", logger="carl_tf"):
        guard.on_epoch_end(0, {"prototypes_in_use": 2.0})  # 10% of a batch of 20: healthy
        assert not caplog.messages
        guard.on_epoch_end(1, {"prototypes_in_use": 1.0})
        assert (
            len(caplog.messages) == 1
            and "1.0 of 50" in caplog.messages[0]
            and "raise kl_start/kl_end" in caplog.messages[0]
        )
        guard.on_epoch_end(2, {"prototypes_in_use": 3.0})  # recovered: the count starts again
        guard.on_epoch_end(3, {"prototypes_in_use": 1.0})
        assert guard.stopped_at is None and not model.stop_training
        guard.on_epoch_end(4, {"prototypes_in_use": 1.0})
    assert guard.stopped_at == 5 and model.stop_training
    assert len(caplog.messages) == 3


def test_collapse_advice_names_the_held_lambda_when_prototypes_outnumber_the_batch():
    from carl_tf.run.callbacks import collapse_advice

    # K = 1000 over a batch of 256 collapsed at lambda 4 -> 1.5 and held at 4 -> 2.5.
    many = collapse_advice(1000, 256, 0.03, 4.0, 1.5)
    assert "kl_end=2.5" in many and "now 4.0 -> 1.5" in many and "1000" in many
    assert many.index("kl_end=2.5") < many.index("learning_rate (now 0.03)")
    # Fewer prototypes than the batch, or lambda already there: the general advice.
    for args in ((100, 128, 0.24, 4.0, 1.5), (1000, 256, 0.03, 4.0, 2.5)):
        few = collapse_advice(*args)
        assert f"lower learning_rate (now {args[2]})" in few and "kl_end=2.5" not in few


def test_collapse_guard_warns_with_the_advice_it_was_given(caplog):
    from carl_tf.run.callbacks import CollapseGuard

    model = tiny_carl(num_prototypes=50)
    guard = CollapseGuard(fraction=0.1, batch_size=20, advice="keep lambda at 4")
    guard.set_model(model)
    with caplog.at_level("WARNING", logger="carl_tf"):
        guard.on_epoch_end(0, {"prototypes_in_use": 1.0})
    assert caplog.messages[0].endswith("the assignment is collapsing; keep lambda at 4")


def test_collapse_guard_with_zero_patience_only_warns():
    from carl_tf.run.callbacks import CollapseGuard

    model = tiny_carl(num_prototypes=50)
    model.stop_training = False  # as fit sets it
    guard = CollapseGuard(fraction=0.1, batch_size=20, patience=0, advice="lower the rate")
    guard.set_model(model)
    for epoch in range(5):
        guard.on_epoch_end(epoch, {"prototypes_in_use": 1.0})
    assert guard.stopped_at is None and not model.stop_training
