"""Keras's own colour layers against the colour part of `SimCLRAugment`: speed and faithfulness.

Keras 3 ships `RandomColorJitter`, `RandomGrayscale` and `RandomGaussianBlur`. On a
(256, S, S, 3) batch, S in {32, 96}, this times SimCLR's colour distortion two ways:

- `carl_tf`: `augment.color_jitter` with probability 0.8, `augment.grayscale` with 0.2 and, at
  96 px, `augment.gaussian_blur` with 0.5, every parameter drawn per image, in one XLA function
  as `SimCLRAugment` runs it;
- `keras`: `keras.layers.Pipeline` of `RandomColorJitter` (brightness, contrast, saturation
  0.4, hue 0.1), `RandomGrayscale(0.2)` and, at 96 px, `RandomGaussianBlur(0.5)`, in a
  `tf.function`.

and then checks what the recipe requires of each Keras layer on a batch of equal images:
per-image parameters (different outputs for equal inputs) and an image left unchanged with
the recipe's probability (0.2 for the jitter, which Keras's layer cannot leave out). Prints
images/s (median of timed runs) and the checks.

Run: TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. python benchmarks/keras_color_layers.py
"""

import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from carl_tf.method import augment

BATCH_SIZE = 256
SIZES = (32, 96)
WARMUP_RUNS = 2
TIMED_RUNS = 10
SIGMA = (0.1, 2.0)


def images_per_second(fn, images) -> float:
    """Median throughput of `fn` on `images` after warm-up (which includes tracing)."""
    for _ in range(WARMUP_RUNS):
        np.asarray(fn(images))
    seconds = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        np.asarray(fn(images))  # waits for the result
        seconds.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(seconds)


def carl_tf_colour(size: int):
    """SimCLR's colour distortion as `SimCLRAugment` applies it, per-image draws, one XLA call."""
    kernel_size = augment.SimCLRAugment(size).blur_kernel_size
    generator = keras.random.SeedGenerator(0)

    @tf.function(jit_compile=True)
    def distort(images, draws):
        jitter, brightness, contrast, saturation, hue, gray, blur, sigma = tf.unstack(draws)
        jittered = augment.color_jitter(
            images,
            0.6 + 0.8 * brightness,
            0.6 + 0.8 * contrast,
            0.6 + 0.8 * saturation,
            -0.1 + 0.2 * hue,
        )
        images = tf.where((jitter < 0.8)[:, None, None, None], jittered, images)
        images = tf.where((gray < 0.2)[:, None, None, None], augment.grayscale(images), images)
        if size >= 96:
            sigma = tf.where(blur < 0.5, SIGMA[0] + sigma * (SIGMA[1] - SIGMA[0]), 0.0)
            images = augment.gaussian_blur(images, sigma, kernel_size)
        return images

    def run(images):
        draws = keras.random.uniform((8, images.shape[0]), seed=generator)
        return distort(images, draws)

    return run


def keras_layers(size: int) -> list[keras.layers.Layer]:
    """Keras's colour layers set to SimCLR's colour distortion as closely as they allow."""
    layers = [
        keras.layers.RandomColorJitter(
            value_range=(0, 255),
            brightness_factor=0.4,
            contrast_factor=0.4,
            saturation_factor=(0.3, 0.7),  # Keras maps f to f / (1 - f): 0.43 .. 2.33
            hue_factor=0.1,
            seed=0,
        ),
        keras.layers.RandomGrayscale(factor=0.2, seed=0),
    ]
    if size >= 96:
        kernel_size = augment.SimCLRAugment(size).blur_kernel_size
        layers.append(
            keras.layers.RandomGaussianBlur(
                factor=0.5, kernel_size=kernel_size, sigma=SIGMA, value_range=(0, 255), seed=0
            )
        )
    return layers


def per_image_check(layer: keras.layers.Layer, size: int) -> tuple[int, float]:
    """Distinct outputs among 64 equal images, and the share left unchanged, by `layer`."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, size, size, 3)).astype("float32")
    images = np.repeat(image, 64, axis=0)
    out = np.asarray(layer(images, training=True))
    distinct = len({row.tobytes() for row in np.round(out, 3)})
    unchanged = float(np.mean(np.all(np.abs(out - images) < 1e-3, axis=(1, 2, 3))))
    return distinct, unchanged


def main() -> None:
    print(f"images/s, batch {BATCH_SIZE}, median of {TIMED_RUNS} runs, CPU threads shared")
    for size in SIZES:
        rng = np.random.default_rng(size)
        images = tf.constant(rng.uniform(0, 255, (BATCH_SIZE, size, size, 3)), tf.float32)
        pipeline = keras.layers.Pipeline(keras_layers(size))
        keras_fn = tf.function(lambda x, p=pipeline: p(x, training=True))
        ours = images_per_second(carl_tf_colour(size), images)
        theirs = images_per_second(keras_fn, images)
        print(f"{size:3d} px  carl_tf colour (XLA)      {ours:12,.0f}")
        print(
            f"{size:3d} px  keras.layers Pipeline     {theirs:12,.0f}   ratio {ours / theirs:.2f}"
        )
        for layer in keras_layers(size):
            distinct, unchanged = per_image_check(layer, size)
            print(
                f"{size:3d} px  {type(layer).__name__:24s} distinct outputs of 64 equal "
                f"images: {distinct:2d}; left unchanged: {unchanged:.2f}"
            )


if __name__ == "__main__":
    main()
