"""The view maker under Keras's JAX backend agrees with the TensorFlow backend's.

One run of tests/augment_jax_job.py, with TensorFlow unimportable, computes every JAX figure;
each test compares one of them with the same computation in this (TensorFlow) process, on the
same inputs and drawn parameters (`augment_jax_job.make_inputs`).
"""

import augment_jax_job as job
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf
from jax_support import requires_jax, run_under_jax

from carl_tf.method import augment

pytestmark = [requires_jax, pytest.mark.slow]  # JAX processes: the slow tier

# Float32 tolerance on [0, 255] values (the largest gap seen is 2e-4): units in the last place
# of 255, in sums of products that XLA orders differently on each backend (blends, blur, hue).
ATOL = 1e-3


@pytest.fixture(scope="module")
def jax_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("augment_jax") / "results.npz"
    run_under_jax(["tests/augment_jax_job.py", str(out)], without_tensorflow=True, timeout=600)
    with np.load(out) as results:
        return dict(results)


@pytest.fixture(scope="module")
def inputs():
    return job.make_inputs()


def test_runs_without_tensorflow(jax_results):
    assert str(jax_results["backend"]) == "jax"
    assert not jax_results["tensorflow_loaded"]
    view = jax_results["eager_view"]
    assert view.shape == (4, job.IMAGE_SIZE, job.IMAGE_SIZE, 3) and view.dtype == np.float32
    assert view.min() >= 0.0 and view.max() <= 255.0


def test_crop_and_resize_agrees(jax_results, inputs):
    expected = augment.crop_and_resize(
        inputs["images"], inputs["boxes"], job.IMAGE_SIZE, inputs["flip"]
    )
    np.testing.assert_allclose(jax_results["crops"], expected, rtol=0, atol=ATOL)


def test_color_jitter_agrees(jax_results, inputs):
    names = ("views", "brightness", "contrast", "saturation", "hue")
    expected = augment.color_jitter(*(inputs[name] for name in names))
    np.testing.assert_allclose(jax_results["jittered"], expected, rtol=0, atol=ATOL)


def test_grayscale_agrees(jax_results, inputs):
    expected = augment.grayscale(inputs["views"])
    np.testing.assert_allclose(jax_results["grayscale"], expected, rtol=0, atol=ATOL)


def test_gaussian_blur_agrees(jax_results, inputs):
    expected = augment.gaussian_blur(inputs["images"], inputs["sigma"], kernel_size=5)
    np.testing.assert_allclose(jax_results["blurred"], expected, rtol=0, atol=ATOL)


def test_view_from_the_same_draws_agrees(jax_results, inputs):
    # The whole view (XLA-compiled under TensorFlow), every op on: crop, flip, jitter, gray, blur.
    layer = job.view_layer()  # a tf.function method holds its layer weakly
    expected = layer._view(*job.view_inputs(inputs))
    np.testing.assert_allclose(jax_results["view"], expected, rtol=0, atol=ATOL)


def test_inference_resize_agrees(jax_results, inputs):
    expected = tf.image.resize(inputs["images"], (job.IMAGE_SIZE, job.IMAGE_SIZE))
    np.testing.assert_allclose(jax_results["resized"], expected, rtol=0, atol=ATOL)


def test_hsv_conversions_equal_tf_image(jax_results, inputs):
    hsv = jax_results["rgb_to_hsv"]
    expected = tf.image.rgb_to_hsv(inputs["rgb"]).numpy()
    # Hue is a turn: 0 and 1 are the same hue.
    hue_gap = np.abs(hsv[..., 0] - expected[..., 0])
    np.testing.assert_allclose(np.minimum(hue_gap, 1.0 - hue_gap), 0.0, atol=1e-6)
    np.testing.assert_allclose(hsv[..., 1:], expected[..., 1:], rtol=0, atol=1e-6)
    expected = tf.image.hsv_to_rgb(inputs["hsv"])
    np.testing.assert_allclose(jax_results["hsv_to_rgb"], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("height, width", job.CROP_SHAPES)
def test_crop_boxes_under_jax_follow_the_tensorflow_distribution(jax_results, height, width):
    boxes = jax_results[f"boxes_{height}x{width}"]
    top, left, crop_h, crop_w = boxes.T
    np.testing.assert_array_equal(boxes, np.round(boxes))
    assert np.all((top >= 0) & (top + crop_h <= height) & (crop_h >= 1))
    assert np.all((left >= 0) & (left + crop_w <= width) & (crop_w >= 1))
    # JAX draws other numbers than TensorFlow from the same seed, so the two samples are
    # independent draws of one distribution: two-sample KS tests of area, ratio and offset.
    theirs = augment.sample_crop_boxes(job.CROP_SAMPLES, height, width, seed=(0, 0)).numpy()
    for feature in (
        lambda b: b[:, 2] * b[:, 3],
        lambda b: np.log(b[:, 3] / b[:, 2]),
        lambda b: b[:, 0] + b[:, 2] / 2,
        lambda b: b[:, 1] + b[:, 3] / 2,
    ):
        assert scipy.stats.ks_2samp(feature(boxes), feature(theirs)).pvalue > 1e-3


def test_crop_boxes_are_a_function_of_a_traced_seed(jax_results):
    np.testing.assert_array_equal(jax_results["boxes_seed_a"], jax_results["boxes_seed_a_again"])
    assert np.any(jax_results["boxes_seed_a"] != jax_results["boxes_seed_b"])


def test_jitted_stateless_calls_advance_the_seed(jax_results):
    first, second = jax_results["jit_first"], jax_results["jit_second"]
    assert first.shape == (4, job.IMAGE_SIZE, job.IMAGE_SIZE, 3)
    # Every image differs between consecutive steps, as between two eager calls.
    assert np.all(np.max(np.abs(first - second), axis=(1, 2, 3)) > 1.0)
    # The views are a function of the state passed in.
    np.testing.assert_array_equal(jax_results["jit_replay"], first)
