"""Views of large images: crops cut from full-resolution files, and the on-device rest of a view."""

import dataclasses
import logging
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

import carl_tf
from carl_tf.data import load_source
from carl_tf.data.decoding import decode_image, decode_window, encoded_image_size
from carl_tf.method.augment import SimCLRAugment, sample_crop_boxes
from carl_tf.method.backbones import build_backbone
from carl_tf.method.base import _first_images
from carl_tf.method.inputs import split_batch
from carl_tf.training import views

SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
# Probabilities that switch every on-device random op off.
NO_COLOUR = {
    "flip_probability": 0.0,
    "jitter_probability": 0.0,
    "grayscale_probability": 0.0,
    "blur_probability": 0.0,
}


def fine_pattern(height, width, phase=0.0):
    """An RGB image with detail at every pixel (a thumbnail would lose it), uint8."""
    y, x = np.mgrid[:height, :width].astype(np.float64)
    channels = [
        128 + 120 * np.sin(0.9 * x + phase) * np.cos(0.7 * y),
        255 * y / height,
        128 + 120 * np.sin(0.3 * (x + y) + phase),
    ]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def gradient(height, width):
    y, x = np.mgrid[:height, :width].astype(np.float64)
    channels = [255 * y / height, 255 * x / width, 255 * (x + y) / (height + width)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def jpeg(image, chroma_downsampling=False):
    return tf.io.encode_jpeg(image, quality=90, chroma_downsampling=chroma_downsampling)


def write_folder(root, count=16, height=150, width=200):
    """One image per class folder (label = file index): JPEGs (4:4:4), every fourth a PNG."""
    for i in range(count):
        image = fine_pattern(height, width, phase=i)
        png = i % 4 == 3
        encoded = tf.io.encode_png(image) if png else jpeg(image)
        os.makedirs(root / f"c{i:02d}")
        tf.io.write_file(str(root / f"c{i:02d}" / ("image.png" if png else "image.jpg")), encoded)
    return f"folder:{root}"


def one_image_source(encoded, copies):
    """A stand-in source whose records give the same file `copies` times."""
    records = lambda shuffle, seed, shard=(1, 0): (  # noqa: E731
        tf.data.Dataset.from_tensors((encoded, tf.constant(-1, tf.int32))).repeat(copies)
    )
    return dataclasses.replace(
        load_source("digits"), records=records, num_examples=copies, native_size=None
    )


def all_batches(dataset):
    return [{key: value.numpy() for key, value in batch.items()} for batch in dataset]


# (a) One crop distribution on both paths.


@pytest.mark.parametrize("height, width", [(150, 200), (375, 500), (64, 40)])
def test_pipeline_boxes_are_sample_crop_boxes_of_the_image_size(height, width):
    seed = tf.constant([7, 11], tf.int64)
    for encoded in (jpeg(gradient(height, width)), tf.io.encode_png(gradient(height, width))):
        got = views.crop_views(encoded, seed, image_size=32, crop_scale=SCALE, crop_ratio=RATIO)
        expected = sample_crop_boxes(2, height, width, SCALE, RATIO, seed)
        np.testing.assert_array_equal(got["boxes"], expected.numpy().astype(np.int32))


def box_statistics(boxes, height, width):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    return boxes[:, 2] * boxes[:, 3] / (height * width), np.log(boxes[:, 3] / boxes[:, 2])


def test_pipeline_and_device_boxes_follow_one_distribution():
    height, width = 150, 200
    source = one_image_source(jpeg(gradient(height, width)), copies=1000)
    dataset = views.crop_pairs(
        source,
        image_size=4,
        crop_scale=SCALE,
        crop_ratio=RATIO,
        batch_size=250,
        shuffle=False,
        drop_remainder=True,
        seed=3,
    )
    pipeline = np.concatenate([batch["boxes"] for batch in all_batches(dataset)])
    assert pipeline.shape == (1000, 2, 4)
    device = sample_crop_boxes(2000, height, width, SCALE, RATIO, (5, 6)).numpy()
    narrow = sample_crop_boxes(2000, height, width, (0.2, 1.0), RATIO, (5, 6)).numpy()
    area, log_ratio = box_statistics(pipeline, height, width)
    device_area, device_log_ratio = box_statistics(device, height, width)
    assert scipy.stats.ks_2samp(area, device_area).pvalue > 0.01
    assert scipy.stats.ks_2samp(log_ratio, device_log_ratio).pvalue > 0.01
    # The test has the power to see another scale range.
    assert scipy.stats.ks_2samp(area, box_statistics(narrow, height, width)[0]).pvalue < 1e-6
    # Per-image seeds: 2000 distinct windows, not a few repeated.
    assert len({tuple(box) for box in pipeline.reshape(-1, 4)}) > 1900


def test_pipeline_falls_back_to_a_centre_crop_for_extreme_aspect_ratios():
    # No window of area 8-100% with width / height in [3/4, 4/3] fits in 10 x 400: the
    # centre crop at ratio 4/3 is 10 x round(13.3) at left (400 - 13) // 2.
    encoded = tf.io.encode_png(gradient(10, 400))
    got = views.crop_views(
        encoded, tf.constant([1, 2]), image_size=8, crop_scale=SCALE, crop_ratio=RATIO
    )
    np.testing.assert_array_equal(got["boxes"], [[0, 193, 10, 13]] * 2)


# (b) Decoding a window.


def test_encoded_image_size_of_every_format():
    image = gradient(37, 53)
    for encoded in (jpeg(image), tf.io.encode_png(image)):
        np.testing.assert_array_equal(encoded_image_size(encoded), [37, 53])
    assert encoded_image_size(jpeg(image)).dtype == tf.int32


def random_boxes(height, width, count, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        crop_h, crop_w = rng.integers(1, height + 1), rng.integers(1, width + 1)
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        yield top, left, crop_h, crop_w


def test_decode_window_of_a_png_or_444_jpeg_is_the_slice_of_the_decoded_image():
    image = fine_pattern(90, 120)
    for encoded in (tf.io.encode_png(image), jpeg(image, chroma_downsampling=False)):
        full = decode_image(encoded).numpy()
        for top, left, crop_h, crop_w in random_boxes(90, 120, 20):
            window = decode_window(encoded, tf.constant([top, left, crop_h, crop_w]))
            np.testing.assert_array_equal(window, full[top : top + crop_h, left : left + crop_w])


def test_decode_window_of_a_420_jpeg_differs_only_in_its_border_columns():
    # libjpeg upsamples the window's half-resolution chroma from inside the window, so its first
    # and last column can differ from the slice: by at most 2 levels on this gradient
    # (measured: 2), all other pixels equal.
    encoded = jpeg(gradient(90, 120), chroma_downsampling=True)
    full = decode_image(encoded).numpy().astype(int)
    for top, left, crop_h, crop_w in random_boxes(90, 120, 40, seed=1):
        window = decode_window(encoded, tf.constant([top, left, crop_h, crop_w])).numpy()
        expected = full[top : top + crop_h, left : left + crop_w]
        gap = np.abs(window.astype(int) - expected)
        assert gap[:, 1:-1].max(initial=0) == 0
        assert gap.max() <= 2


# (c) Crop pairs from a folder of large images.


def folder_crops(spec, seed, image_size=32, batch_size=8):
    source = load_source(spec, image_size=image_size)
    return views.crop_pairs(
        source,
        image_size=image_size,
        crop_scale=SCALE,
        crop_ratio=RATIO,
        batch_size=batch_size,
        shuffle=True,
        drop_remainder=True,
        seed=seed,
    )


def test_each_crop_is_the_resized_window_of_its_full_resolution_image(tmp_path):
    spec = write_folder(tmp_path)
    files = sorted(p for p in tmp_path.rglob("image.*"))
    decoded = [decode_image(tf.io.read_file(str(path))).numpy() for path in files]
    batches = all_batches(folder_crops(spec, seed=0))
    assert [b["crops"].shape for b in batches] == [(8, 2, 32, 32, 3)] * 2
    assert sorted(np.concatenate([b["label"] for b in batches])) == list(range(16))
    for batch in batches:
        for crops, boxes, label in zip(batch["crops"], batch["boxes"], batch["label"]):
            for crop, (top, left, crop_h, crop_w) in zip(crops, boxes):
                window = decoded[label][top : top + crop_h, left : left + crop_w]
                expected = tf.image.resize(window.astype(np.float32), (32, 32), antialias=True)
                expected = np.clip(np.round(expected.numpy()), 0, 255).astype(np.uint8)
                np.testing.assert_array_equal(crop, expected)
            assert not np.array_equal(boxes[0], boxes[1])
            assert not np.array_equal(crops[0], crops[1])


def test_crops_change_every_epoch_and_repeat_with_the_seed(tmp_path):
    spec = write_folder(tmp_path)
    dataset = folder_crops(spec, seed=4)

    def boxes_by_image(batches):
        return {
            int(label): boxes.tolist()
            for batch in batches
            for label, boxes in zip(batch["label"], batch["boxes"])
        }

    first, second = all_batches(dataset), all_batches(dataset)
    first_boxes, second_boxes = boxes_by_image(first), boxes_by_image(second)
    assert all(first_boxes[i] != second_boxes[i] for i in range(16))
    again = folder_crops(spec, seed=4)
    for ours, theirs in zip(first, all_batches(again)):
        for key in ours:
            np.testing.assert_array_equal(ours[key], theirs[key])
    other = boxes_by_image(all_batches(folder_crops(spec, seed=5)))
    assert all(first_boxes[i] != other[i] for i in range(16))


def one_image_crops(source, **kwargs):
    return views.crop_pairs(
        source,
        **{
            "image_size": 4,
            "crop_scale": SCALE,
            "crop_ratio": RATIO,
            "batch_size": 1,
            "shuffle": False,
            "drop_remainder": False,
            "seed": 0,
            **kwargs,
        },
    )


def test_the_parts_of_a_sharded_source_draw_different_windows():
    # The stand-in gives every part the same files, so only the seeds can tell the parts apart.
    source = one_image_source(jpeg(gradient(150, 200)), copies=8)
    parts = [all_batches(one_image_crops(source, shard=(2, i))) for i in range(2)]
    for ours, theirs in zip(*parts):
        assert not np.array_equal(ours["boxes"], theirs["boxes"])


def test_files_that_cannot_be_decoded_are_skipped():
    good = jpeg(gradient(150, 200))
    files = [good, tf.constant(b"not an image"), good]
    source = dataclasses.replace(
        one_image_source(good, copies=3),
        records=lambda shuffle, seed, shard=(1, 0): tf.data.Dataset.from_tensor_slices(
            (tf.stack(files), tf.constant([0, 1, 2]))
        ),
    )
    assert [int(b["label"][0]) for b in all_batches(one_image_crops(source))] == [0, 2]


# (d) Which path a source takes.


@pytest.mark.parametrize(
    "native_size, image_size, expected",
    [((32, 32), 32, False), ((150, 200), 32, True), ((150, 20), 32, True), (None, 32, True)],
)
def test_uses_full_resolution_for_files_larger_than_the_input(native_size, image_size, expected):
    files = dataclasses.replace(
        load_source("digits"), records=lambda *args: None, native_size=native_size
    )
    assert views.uses_full_resolution(files, image_size) is expected


def test_sources_held_in_memory_only_keep_the_on_device_crop():
    digits = dataclasses.replace(load_source("digits"), native_size=(500, 500))
    assert digits.records is None
    assert not views.uses_full_resolution(digits, 32)


def test_training_batches_picks_the_path_and_says_why(tmp_path, caplog):
    spec = write_folder(tmp_path / "large", count=8)
    with caplog.at_level(logging.INFO, logger="carl_tf"):
        large = views.training_batches(
            load_source(spec, image_size=32),
            image_size=32,
            crop_scale=SCALE,
            crop_ratio=RATIO,
            batch_size=4,
            seed=0,
        )
        small = views.training_batches(
            load_source("digits", image_size=16),
            image_size=16,
            crop_scale=SCALE,
            crop_ratio=RATIO,
            batch_size=4,
            seed=0,
        )
    assert large.element_spec["crops"].shape == (4, 2, 32, 32, 3)
    assert small.element_spec[0].shape == (4, 16, 16, 3)
    # Endless on both paths: fit's steps_per_epoch, not the data, ends an epoch.
    for batches in (large, small):
        assert batches.cardinality() == tf.data.INFINITE_CARDINALITY
    assert any("full-resolution images (first image 150x200 > 32)" in m for m in caplog.messages)
    assert any("on device" in m and "held decoded in memory" in m for m in caplog.messages)


# (e) The rest of a view on device.


def test_without_crop_and_random_ops_the_augmenter_is_the_identity():
    images = tf.constant(np.random.default_rng(0).uniform(0, 255, (4, 24, 24, 3)), tf.float32)
    layer = SimCLRAugment(24, seed=0, **NO_COLOUR)
    np.testing.assert_array_equal(layer(images, crop=False), images)
    flipped = SimCLRAugment(24, seed=0, **{**NO_COLOUR, "flip_probability": 1.0})
    np.testing.assert_array_equal(flipped(images, crop=False), images[:, :, ::-1])


def test_without_crop_the_default_view_keeps_the_shape_and_changes_pixels():
    images = tf.constant(fine_pattern(24, 24)[None].repeat(4, axis=0))
    layer = SimCLRAugment(24, seed=0, jitter_probability=1.0)
    compiled = tf.function(lambda x: layer(x, crop=False), jit_compile=True)
    for view in (layer(images, crop=False), compiled(images)):
        assert view.shape == (4, 24, 24, 3)
        gap = tf.reduce_max(tf.abs(view - tf.cast(images, tf.float32)), axis=[1, 2, 3])
        assert np.all(gap.numpy() > 1.0)


# (f) CARL trained on crop pairs.


def test_fit_on_crop_pairs_trains_and_predict_and_evaluate_take_them(tmp_path):
    keras.utils.set_random_seed(0)
    dataset = folder_crops(write_folder(tmp_path, count=8), seed=0, image_size=16)
    model = carl_tf.CARL(
        build_backbone("resnet18", width=4, image_size=16),
        num_prototypes=10,
        projection_hidden_units=(32,),
        projection_dim=16,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = {w.path: w.numpy().copy() for w in model.trainable_weights}
    history = model.fit(dataset.take(1), epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])
    moved = {w.path for w in model.trainable_weights if not np.array_equal(before[w.path], w)}
    # The residual branches start at zero (zero-init last BatchNorm scale), so their inner
    # kernels get no gradient on the first step; the stem, head and prototypes all move.
    first, last = model.trainable_weights[0].path, model.assigner.kernel.path
    assert {first, last} <= moved and len(moved) > len(before) // 2, sorted(moved)
    assert model.predict(dataset.take(1), verbose=0).shape == (8, 10)
    assert math.isfinite(model.evaluate(dataset.take(1), verbose=0, return_dict=True)["loss"])


def test_fit_on_crop_pairs_under_a_strategy(tmp_path):
    """In a process of its own, as TensorFlow reuses collective instance keys across the
    MirroredStrategy objects of one process.

    Under a strategy Keras builds a model that is not yet built from its first batch, calling it
    on the whole dict; with every layer built at construction that never happens.
    """
    code = f"""
import math, pathlib, keras, tensorflow as tf
(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
import carl_tf
from test_views import folder_crops, write_folder
keras.utils.set_random_seed(0)
dataset = folder_crops(write_folder(pathlib.Path({str(tmp_path)!r})), seed=0, image_size=16)
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    inputs = keras.Input((16, 16, 3))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = carl_tf.CARL(keras.Model(inputs, features), num_prototypes=4)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
assert all(layer.built for layer in model._flatten_layers())
history = model.fit(dataset.take(1), epochs=1, verbose=0)
assert math.isfinite(history.history["loss"][0]), history.history
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_crop_pairs_batches_are_recognized_and_checked():
    crops = np.zeros((3, 2, 16, 16, 3), np.uint8)
    batch = split_batch({"crops": crops, "boxes": np.zeros((3, 2, 4)), "label": np.zeros(3)})
    assert batch.crops is crops and batch.images is None and batch.views is None
    assert _first_images(
        tf.data.Dataset.from_tensors({"crops": crops}), tf.distribute.get_strategy()
    ).shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match=r"crops of shape \(3, 16, 16, 3\)"):
        split_batch({"crops": crops[:, 0]})
