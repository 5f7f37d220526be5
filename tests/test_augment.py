"""Tests for carl_tf.augment: the batched SimCLR view layer and its pieces."""

import colorsys
import math

import keras
import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf

from carl_tf.method import augment

# Every random op off and a crop covering the whole image: the layer should be the identity.
IDENTITY = {
    "crop_scale": (1.0, 1.0),
    "crop_ratio": (1.0, 1.0),
    "flip_probability": 0.0,
    "jitter_probability": 0.0,
    "grayscale_probability": 0.0,
    "blur_probability": 0.0,
}


def random_images(shape, dtype=tf.float32, seed=0):
    values = np.random.default_rng(seed).uniform(0, 255, size=shape)
    if dtype == tf.uint8:
        values = np.round(values)
    return tf.constant(values, dtype)


@pytest.mark.parametrize(
    "input_shape, dtype, image_size",
    [
        ((4, 32, 32, 3), tf.uint8, 32),
        ((4, 32, 32, 3), tf.float32, 32),
        ((3, 40, 28, 3), tf.float32, 32),  # non-square
        ((2, 96, 80, 3), tf.uint8, 96),  # larger input; blur on by default at 96 px
        ((2, 20, 24, 3), tf.uint8, 32),  # smaller input: crops are upsampled
    ],
)
def test_output_shape_dtype_and_range(input_shape, dtype, image_size):
    layer = augment.SimCLRAugment(image_size, seed=1)
    views = layer(random_images(input_shape, dtype))
    assert views.shape == (input_shape[0], image_size, image_size, 3)
    assert views.dtype == tf.float32
    assert float(tf.reduce_min(views)) >= 0.0
    assert float(tf.reduce_max(views)) <= 255.0


def test_default_blur_probability_depends_on_image_size():
    assert augment.SimCLRAugment(32).blur_probability == 0.0
    assert augment.SimCLRAugment(96).blur_probability == 0.5
    assert augment.SimCLRAugment(96).blur_kernel_size == 9


def test_inference_is_deterministic_resize():
    images = random_images((3, 40, 28, 3), tf.uint8)
    layer = augment.SimCLRAugment(32, seed=0)
    first = layer(images, training=False)
    np.testing.assert_array_equal(first, layer(images, training=False))
    expected = tf.image.resize(tf.cast(images, tf.float32), (32, 32))
    np.testing.assert_allclose(first, expected, atol=1e-5)


def test_two_calls_give_different_views():
    images = random_images((4, 32, 32, 3))
    layer = augment.SimCLRAugment(32, seed=0)
    view_1, view_2 = layer(images), layer(images)
    # Every image should differ, not just some of the batch.
    per_image_gap = tf.reduce_max(tf.abs(view_1 - view_2), axis=[1, 2, 3])
    assert np.all(per_image_gap.numpy() > 1.0)


def test_identity_settings_return_input():
    images = random_images((4, 32, 32, 3))
    views = augment.SimCLRAugment(32, seed=0, **IDENTITY)(images)
    np.testing.assert_allclose(views, images, rtol=0, atol=1e-4)


def test_grayscale_probability_one_gives_equal_channels():
    layer = augment.SimCLRAugment(32, grayscale_probability=1.0, seed=0)
    views = layer(random_images((4, 32, 32, 3)))
    np.testing.assert_allclose(views[..., 0], views[..., 1], atol=1e-4)
    np.testing.assert_allclose(views[..., 0], views[..., 2], atol=1e-4)


def test_flip_probability_one_mirrors_images():
    images = random_images((4, 32, 32, 3))
    views = augment.SimCLRAugment(32, seed=0, **{**IDENTITY, "flip_probability": 1.0})(images)
    np.testing.assert_allclose(views, tf.image.flip_left_right(images), rtol=0, atol=1e-4)


def torchvision_crop(rng, height, width, scale, ratio):
    """torchvision's RandomResizedCrop.get_params, one window, in plain Python."""
    for _ in range(10):
        area = height * width * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_w = round(math.sqrt(area * aspect))
        crop_h = round(math.sqrt(area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = rng.integers(0, height - crop_h + 1)
            left = rng.integers(0, width - crop_w + 1)
            return top, left, crop_h, crop_w
    in_ratio = width / height
    if in_ratio < min(ratio):
        crop_w, crop_h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        crop_h, crop_w = height, round(height * max(ratio))
    else:
        crop_h, crop_w = height, width
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def window_statistics(boxes, height, width):
    top, left, crop_h, crop_w = np.asarray(boxes, np.float64).T
    return {
        "area": np.mean(crop_h * crop_w / (height * width)),
        "log_ratio": np.mean(np.log(crop_w / crop_h)),
        "centre_y": np.mean((top + crop_h / 2) / height),
        "centre_x": np.mean((left + crop_w / 2) / width),
    }


@pytest.mark.parametrize("height, width", [(32, 32), (24, 40)])
def test_crop_sampler_matches_torchvision_statistics(height, width):
    n = 20_000
    scale, ratio = (0.08, 1.0), (3 / 4, 4 / 3)
    boxes = augment.sample_crop_boxes(n, height, width, scale, ratio, seed=(0, 0)).numpy()
    top, left, crop_h, crop_w = boxes.T
    np.testing.assert_array_equal(boxes, np.round(boxes))
    assert np.all((top >= 0) & (top + crop_h <= height) & (crop_h >= 1))
    assert np.all((left >= 0) & (left + crop_w <= width) & (crop_w >= 1))

    rng = np.random.default_rng(0)
    reference = [torchvision_crop(rng, height, width, scale, ratio) for _ in range(n)]
    ours = window_statistics(boxes, height, width)
    theirs = window_statistics(reference, height, width)
    # Rejecting windows that do not fit pulls the mean area (0.49 at 32 x 32, 0.37 at 24 x 40)
    # below the 0.54 of Uniform(0.08, 1). The standard error of each difference of means is
    # about 0.003 (area) and 0.0016 (log ratio): the bounds are about 3.5 standard errors and
    # catch e.g. clipping instead of rejection, or a uniform instead of log-uniform ratio
    # (which moves the mean log ratio by 0.026).
    assert theirs["area"] < 0.52
    assert abs(ours["area"] - theirs["area"]) < 0.01
    assert abs(ours["log_ratio"] - theirs["log_ratio"]) < 0.006
    assert abs(ours["centre_y"] - theirs["centre_y"]) < 0.01
    assert abs(ours["centre_x"] - theirs["centre_x"]) < 0.01


def test_crop_sampler_fallback_and_full_window():
    full = augment.sample_crop_boxes(3, 32, 32, (1.0, 1.0), (1.0, 1.0))
    np.testing.assert_array_equal(full, [[0, 0, 32, 32]] * 3)
    # A 32 x 32 window never fits in 24 x 40, so torchvision centre-crops at ratio 1.
    fallback = augment.sample_crop_boxes(3, 24, 40, (1.0, 1.0), (1.0, 1.0))
    np.testing.assert_array_equal(fallback, [[0, 8, 24, 24]] * 3)


def test_crop_and_resize_equals_resize_of_window():
    images = random_images((3, 64, 60, 3))
    # Whole image, downsampled window, upsampled window (edge samples clamp to the window).
    boxes = tf.constant([[0, 0, 64, 60], [5, 7, 40, 33], [50, 41, 10, 17]], tf.float32)
    crops = augment.crop_and_resize(images, boxes, 32)
    flipped = augment.crop_and_resize(images, boxes, 32, flip=tf.constant([True] * 3))
    for i, (top, left, crop_h, crop_w) in enumerate(boxes.numpy().astype(int)):
        window = images[i : i + 1, top : top + crop_h, left : left + crop_w]
        expected = tf.image.resize(window, (32, 32))[0]
        np.testing.assert_allclose(crops[i], expected, atol=1e-4)
        np.testing.assert_allclose(flipped[i], expected[:, ::-1], atol=1e-4)


def test_color_jitter_matches_reference():
    images = random_images((2, 4, 5, 3))
    brightness = np.array([1.3, 0.7], np.float32)
    contrast = np.array([0.6, 1.4], np.float32)
    saturation = np.array([1.2, 0.0], np.float32)
    hue = np.array([0.1, -0.07], np.float32)
    result = augment.color_jitter(images, brightness, contrast, saturation, hue).numpy()

    # torchvision's ColorJitter maths on [0, 1] images, in plain NumPy and colorsys.
    weights = np.array([0.2989, 0.587, 0.114])
    for i, image in enumerate(images.numpy().astype(np.float64) / 255.0):
        image = np.clip(image * brightness[i], 0, 1)
        mean = np.mean(image @ weights)
        image = np.clip(contrast[i] * image + (1 - contrast[i]) * mean, 0, 1)
        gray = (image @ weights)[..., None]
        image = np.clip(saturation[i] * image + (1 - saturation[i]) * gray, 0, 1)
        for pixel in np.ndindex(image.shape[:2]):
            h, s, v = colorsys.rgb_to_hsv(*image[pixel])
            image[pixel] = colorsys.hsv_to_rgb((h + hue[i]) % 1.0, s, v)
        np.testing.assert_allclose(result[i], image * 255.0, atol=1e-2)


def test_gaussian_blur_matches_scipy():
    images = random_images((2, 12, 10, 3))
    sigma = np.array([0.7, 1.6], np.float32)
    blurred = augment.gaussian_blur(images, sigma, kernel_size=5).numpy()
    for i in range(2):
        expected = scipy.ndimage.gaussian_filter(
            images[i].numpy().astype(np.float64), sigma[i], mode="mirror", radius=2, axes=(0, 1)
        )
        np.testing.assert_allclose(blurred[i], expected, atol=1e-3)
    unchanged = augment.gaussian_blur(images, tf.zeros(2), kernel_size=5)
    np.testing.assert_array_equal(unchanged, images)


def test_blur_in_layer_smooths_noise_and_keeps_constants():
    settings = {**IDENTITY, "blur_probability": 1.0, "blur_sigma": (1.0, 1.0)}
    layer = augment.SimCLRAugment(96, seed=0, **settings)
    noise = random_images((2, 96, 96, 3))
    blurred = layer(noise)
    # Independent pixels: a separable normalised kernel w scales the variance by sum(w^2)^2.
    weights = np.exp(-0.5 * np.arange(-4, 5) ** 2)
    weights /= weights.sum()
    expected_ratio = np.sum(weights**2) ** 2
    ratio = np.var(blurred.numpy()) / np.var(noise.numpy())
    assert 0.7 * expected_ratio < ratio < 1.3 * expected_ratio

    constant = tf.fill((2, 96, 96, 3), 87.0)
    np.testing.assert_allclose(layer(constant), constant, rtol=0, atol=1e-3)


def test_config_round_trip():
    layer = augment.SimCLRAugment(96, crop_scale=(0.2, 1.0), hue=0.05, seed=3, name="views")
    config = layer.get_config()
    assert config["blur_probability"] == 0.5
    assert config["crop_scale"] == [0.2, 1.0]
    assert augment.SimCLRAugment.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, augment.SimCLRAugment)
    assert restored.get_config() == config


@pytest.mark.parametrize("jit_compile", [False, True])
def test_runs_inside_tf_function(jit_compile):
    layer = augment.SimCLRAugment(32, seed=0)

    @tf.function(jit_compile=jit_compile)
    def two_views(images):
        return layer(images), layer(images)

    images = random_images((4, 40, 36, 3), tf.uint8)
    view_1, view_2 = two_views(images)
    assert view_1.shape == (4, 32, 32, 3)
    assert float(tf.reduce_max(tf.abs(view_1 - view_2))) > 1.0
    # The seed state advances across traced calls too.
    view_3, _ = two_views(images)
    assert float(tf.reduce_max(tf.abs(view_1 - view_3))) > 1.0


def test_replicas_draw_different_views(two_replicas):
    strategy = two_replicas
    with strategy.scope():
        layer = augment.SimCLRAugment(32, seed=0)
    images = random_images((4, 32, 32, 3))

    @tf.function
    def views():
        return strategy.run(lambda: layer(images))

    first, second = strategy.experimental_local_results(views())
    # Same images on both replicas: only the random draws can make them differ.
    per_image_gap = tf.reduce_max(tf.abs(first - second), axis=[1, 2, 3])
    assert np.all(per_image_gap.numpy() > 1.0)
