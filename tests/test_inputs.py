"""What a Keras user passes to CARL: batch forms, the [0, 255] convention, inference after a short
run, and `carl_tf.KNNMonitor` from a script."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import carl_tf
from carl_tf.method.backbones import build_backbone
from carl_tf.method.inputs import split_batch


def small_carl(**kwargs):
    keras.utils.set_random_seed(0)
    model = carl_tf.CARL(
        build_backbone("resnet18", width=4, image_size=16),
        num_prototypes=20,
        projection_hidden_units=(32,),
        projection_dim=16,
        augmenter=carl_tf.SimCLRAugment(image_size=16, crop_scale=(0.5, 1.0)),
        **kwargs,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def images(n=32, channels=3, dtype="uint8", seed=0):
    values = np.random.default_rng(seed).integers(0, 256, (n, 16, 16, channels))
    return values.astype(dtype)


@pytest.mark.parametrize(
    "batch",
    [
        {"image": images(), "label": np.zeros(32, "int64")},  # TFDS's default elements
        (images(channels=1),),  # grayscale
        (images(dtype="float32"), np.zeros(32)),
    ],
    ids=["tfds-dict", "grayscale", "float-with-labels"],
)
def test_fit_takes_the_batches_keras_users_pass(batch):
    model = small_carl()
    dataset = tf.data.Dataset.from_tensors(batch)
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.predict(dataset, verbose=0).shape == (32, 20)


@pytest.mark.parametrize(
    "batch, message",
    [
        (np.zeros((4, 16, 16, 2), "uint8"), r"shape \(4, 16, 16, 2\)"),
        (np.zeros((16, 16, 3), "uint8"), r"shape \(16, 16, 3\)"),
        ({"pixels": np.zeros((4, 16, 16, 3))}, r"'image' key, got keys \['pixels'\]"),
    ],
)
def test_other_batches_get_one_line_naming_the_accepted_forms(batch, message):
    with pytest.raises(ValueError, match=message) as error:
        split_batch(batch)
    assert "\n" not in str(error.value) and "(view_a, view_b)" in str(error.value)


def test_a_batch_in_unit_range_warns_once(caplog):
    model = small_carl()
    unit = images(dtype="float32") / 255.0
    with caplog.at_level("WARNING", logger="carl_tf"):
        model.fit(unit, batch_size=16, epochs=1, verbose=0)
        model.fit(unit, batch_size=16, epochs=1, verbose=0)
    warnings = [m for m in caplog.messages if "[0, 1]" in m]
    assert len(warnings) == 1 and "[0, 255]" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="carl_tf"):
        small_carl().fit(images(dtype="float32"), batch_size=16, epochs=1, verbose=0)
    assert not [m for m in caplog.messages if "[0, 1]" in m]


def test_knn_monitor_takes_a_dataset_and_the_epoch_count_from_fit():
    model = small_carl()
    x, y = images(64), np.arange(64) % 4
    bank = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    monitor = carl_tf.KNNMonitor(bank, (x[:32], y[:32]), every=5, k=10)
    history = model.fit(x, batch_size=32, epochs=2, verbose=0, callbacks=[monitor])
    # every=5 but fit has 2 epochs: the last one is measured, the first is not.
    assert "knn_top1" in history.history and len(history.history["knn_top1"]) == 1
    assert 0.0 <= history.history["knn_top1"][0] <= 100.0


def test_inference_assignments_use_about_as_many_prototypes_as_training_after_a_short_run():
    """The README example's training (digits, 2 epochs): with Keras's BatchNorm momentum 0.99
    in the head, inference-mode argmaxes fell onto a handful of prototypes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.repeat(digits.images[..., None] / 16 * 255, 3, axis=-1).astype("float32")
    x = keras.ops.convert_to_numpy(keras.ops.image.resize(x, (32, 32)))
    keras.utils.set_random_seed(0)
    model = carl_tf.CARL(
        build_backbone("resnet18", width=8, image_size=32),
        num_prototypes=100,
        projection_hidden_units=(256, 256),
        augmenter=carl_tf.SimCLRAugment(image_size=32, crop_scale=(0.3, 1.0)),
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    model.fit(x, batch_size=128, epochs=2, verbose=0)
    inference = len(np.unique(np.argmax(model.predict(x, verbose=0), axis=1)))
    batch_statistics = len(
        np.unique(
            np.concatenate(
                [
                    np.argmax(keras.ops.convert_to_numpy(model(x[i : i + 128], training=True)), 1)
                    for i in range(0, len(x), 128)
                ]
            )
        )
    )
    assert inference >= 0.5 * batch_statistics, (inference, batch_statistics)


def test_train_on_batch_takes_images_and_view_pairs():
    """Keras hands `train_on_batch(x)` over as `(x, None)`; a pair of views stays a pair."""
    model = small_carl()
    model.compile(optimizer="sgd")
    x = images(8).astype("float32")
    for batch in (x, (x, x[:, :, ::-1])):
        figures = model.train_on_batch(batch, return_dict=True)
        assert np.isfinite(figures["loss"])
    assert int(model.optimizer.iterations.numpy()) == 2


def unknown_channels(batch):
    """A dataset of one batch whose static channel count is None, as decode_png's without
    `channels=`."""
    spec = tf.TensorSpec((None, 16, 16, None), tf.uint8)
    return tf.data.Dataset.from_generator(lambda: iter([batch]), output_signature=spec)


def test_a_channel_count_unknown_at_trace_time_is_checked_at_run_time():
    """A model fit on RGB and then on single-channel images retraces with the channel dimension
    None, as does a tf.data batch decoded without `channels=`: both train."""
    model = small_carl()
    model.fit(images(), batch_size=16, epochs=1, verbose=0)
    history = model.fit(images(channels=1), batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    unknown = unknown_channels(images(channels=1))
    assert unknown.element_spec.shape[-1] is None
    history = model.fit(unknown, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    two_channels = unknown_channels(images(channels=2))
    with pytest.raises(tf.errors.InvalidArgumentError, match="1 or 3 channels"):
        model.fit(two_channels, epochs=1, verbose=0)
