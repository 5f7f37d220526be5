"""Throughput of SimCLR view making on device: crop and blur implementations, full layer.

On a (256, S, S, 3) batch, S in {32, 96}, output S x S, each timed as a `tf.function` that also
samples the boxes, three batched random-resized-crop implementations:

- one `tf.image.crop_and_resize` call with a box per image (native kernel; XLA has none);
- `keras_cv.layers.RandomCropAndResize`: per-image `vectorized_map`, which falls back to a
  while_loop because CropAndResize has no pfor converter (TF warns about it);
- `carl_tf.method.augment.crop_and_resize`: one gather of each view's bilinear taps and their
  blends, without and with XLA (`SimCLRAugment` runs it inside an XLA function);

then two per-image Gaussian blurs at 96 px (banded matrix products as in `augment`, and a sum
of shifted slices), and the full `SimCLRAugment` layer, in a graph-mode `tf.function` (its own
inner XLA function still applies) and fully jit-compiled. Prints images/s, median of timed runs.

With `--before PATH`, instead times the full layer of the module at PATH (e.g. a copy of an
older `augment.py`) against `carl_tf.method.augment`, calling the two alternately so that both
see the same load, and prints after / before speed ratios.

Run: TF_CPP_MIN_LOG_LEVEL=2 PYTHONPATH=. python benchmarks/view_making.py [--before PATH [--calls N]]
"""

import argparse
import importlib.util
import statistics
import time
from collections.abc import Callable

import keras
import tensorflow as tf

try:
    import keras_cv
except ImportError:  # an optional extra: carl_tf itself does not use keras-cv
    raise SystemExit("error: keras-cv is not installed; pip install 'carl_tf[bench]'") from None

from carl_tf.method import augment

BATCH_SIZE = 256
SIZES = (32, 96)
WARMUP_RUNS = 2
TIMED_RUNS = 10


def images_per_second(fn: Callable[[tf.Tensor], tf.Tensor], images: tf.Tensor) -> float:
    """Median throughput of `fn` on `images` after warm-up (which includes tracing)."""
    for _ in range(WARMUP_RUNS):
        fn(images).numpy()
    seconds = []
    for _ in range(TIMED_RUNS):
        start = time.perf_counter()
        # .numpy() waits for the result, so the time covers the whole computation.
        fn(images).numpy()
        seconds.append(time.perf_counter() - start)
    return images.shape[0] / statistics.median(seconds)


def tf_image_crop_and_resize(size: int, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Random resized crop via `tf.image.crop_and_resize`, boxes from `sample_crop_boxes`."""
    generator = keras.random.SeedGenerator(seed)

    @tf.function
    def crop(images):
        shape = tf.shape(images)
        height, width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        seed = keras.random.randint((2,), 0, 2**31 - 1, dtype="int32", seed=generator)
        boxes = augment.sample_crop_boxes(shape[0], shape[1], shape[2], seed=seed)
        top, left, crop_h, crop_w = tf.unstack(boxes, axis=1)
        # crop_and_resize puts its first and last samples on the box corners (y maps to pixel
        # y * (H - 1)); placing them on the window's outermost half-pixel sample centres gives
        # the samples of tf.image.resize on the window, clipped so none falls outside.
        y1 = (top + crop_h / (2 * size) - 0.5) / (height - 1)
        y2 = (top + crop_h - crop_h / (2 * size) - 0.5) / (height - 1)
        x1 = (left + crop_w / (2 * size) - 0.5) / (width - 1)
        x2 = (left + crop_w - crop_w / (2 * size) - 0.5) / (width - 1)
        normalized = tf.clip_by_value(tf.stack([y1, x1, y2, x2], axis=1), 0.0, 1.0)
        return tf.image.crop_and_resize(images, normalized, tf.range(shape[0]), (size, size))

    return crop


def keras_cv_crop_and_resize(size: int, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Random resized crop via `keras_cv.layers.RandomCropAndResize`."""
    layer = keras_cv.layers.RandomCropAndResize(
        target_size=(size, size),
        crop_area_factor=(0.08, 1.0),
        aspect_ratio_factor=(3 / 4, 4 / 3),
        seed=seed,
    )
    return tf.function(lambda images: layer(images, training=True))


def gather_crop_and_resize(
    size: int, seed: int, jit_compile: bool
) -> Callable[[tf.Tensor], tf.Tensor]:
    """Random resized crop via `augment.crop_and_resize` (one gather of the bilinear taps)."""
    generator = keras.random.SeedGenerator(seed)

    @tf.function(jit_compile=jit_compile)
    def crop(images):
        shape = tf.shape(images)
        seed = keras.random.randint((2,), 0, 2**31 - 1, dtype="int32", seed=generator)
        boxes = augment.sample_crop_boxes(shape[0], shape[1], shape[2], seed=seed)
        return augment.crop_and_resize(images, boxes, size)

    return crop


def shifted_sum_blur(kernel_size: int, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Per-image separable blur as a weighted sum of K shifted slices of the padded batch."""
    generator = keras.random.SeedGenerator(seed)
    radius = kernel_size // 2

    @tf.function
    def blur(images):
        sigma = keras.random.uniform((images.shape[0],), 0.1, 2.0, seed=generator)
        taps = tf.range(-radius, radius + 1, dtype=tf.float32)
        weights = tf.exp(-0.5 * tf.square(taps[None, :] / sigma[:, None]))
        weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
        height, width = images.shape[1], images.shape[2]
        padded = tf.pad(images, [[0, 0], [radius, radius], [0, 0], [0, 0]], mode="REFLECT")
        images = tf.add_n(
            [
                weights[:, k, None, None, None] * padded[:, k : k + height]
                for k in range(kernel_size)
            ]
        )
        padded = tf.pad(images, [[0, 0], [0, 0], [radius, radius], [0, 0]], mode="REFLECT")
        images = tf.add_n(
            [
                weights[:, k, None, None, None] * padded[:, :, k : k + width]
                for k in range(kernel_size)
            ]
        )
        return images

    return blur


def matrix_blur(kernel_size: int, seed: int) -> Callable[[tf.Tensor], tf.Tensor]:
    """Per-image separable blur via `augment.gaussian_blur` (banded matrix products)."""
    generator = keras.random.SeedGenerator(seed)

    @tf.function
    def blur(images):
        sigma = keras.random.uniform((images.shape[0],), 0.1, 2.0, seed=generator)
        return augment.gaussian_blur(images, sigma, kernel_size)

    return blur


def full_layer(size: int, seed: int, jit_compile: bool) -> Callable[[tf.Tensor], tf.Tensor]:
    """The whole `SimCLRAugment` view distribution (blur on at 96 px, off at 32 px)."""
    layer = augment.SimCLRAugment(image_size=size, seed=seed)
    return tf.function(lambda images: layer(images, training=True), jit_compile=jit_compile)


def load_module(path: str):
    """Imports the Python file at `path` as a module of its own name."""
    spec = importlib.util.spec_from_file_location("augment_before", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compare_layers(before_path: str, calls: int) -> None:
    """Full-layer speed of `carl_tf.method.augment` over the module at `before_path`.

    The two layers are called alternately, so that both see the same load on a shared machine;
    printed are the speed ratio (after / before) of the fastest calls, the median of the ratios
    of neighbouring calls, and the ratio of median CPU times (which other jobs disturb least).
    """
    before = load_module(before_path)
    print(f"after / before speed of SimCLRAugment, batch {BATCH_SIZE}, {calls} calls each")
    for size in SIZES:
        images = tf.cast(
            tf.random.uniform((BATCH_SIZE, size, size, 3), 0, 256, dtype=tf.int32), tf.uint8
        )
        for jit_compile in (False, True):
            layers = {}
            for name, module in (("before", before), ("after", augment)):
                layer = module.SimCLRAugment(image_size=size, seed=0)
                layers[name] = tf.function(
                    lambda x, layer=layer: layer(x, training=True), jit_compile=jit_compile
                )
            wall = {name: [] for name in layers}
            cpu = {name: [] for name in layers}
            for call in range(WARMUP_RUNS + calls):
                for name, fn in layers.items():
                    start, start_cpu = time.perf_counter(), time.process_time()
                    fn(images).numpy()
                    if call >= WARMUP_RUNS:
                        wall[name].append(time.perf_counter() - start)
                        cpu[name].append(time.process_time() - start_cpu)
            fastest = min(wall["before"]) / min(wall["after"])
            paired = statistics.median(b / a for b, a in zip(wall["before"], wall["after"]))
            by_cpu = statistics.median(cpu["before"]) / statistics.median(cpu["after"])
            label = "SimCLRAugment" + (" (all XLA)" if jit_compile else "")
            print(
                f"{size:3d} px  {label:26s} fastest {fastest:.3f}  paired {paired:.3f}  "
                f"cpu {by_cpu:.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="an older augment.py to compare the layer with")
    parser.add_argument("--calls", type=int, default=40, help="timed calls of each with --before")
    args = parser.parse_args()
    if args.before:
        compare_layers(args.before, args.calls)
        return
    print(f"images/s, batch {BATCH_SIZE}, median of {TIMED_RUNS} runs, CPU threads shared")
    for size in SIZES:
        images = tf.cast(
            tf.random.uniform((BATCH_SIZE, size, size, 3), 0, 256, dtype=tf.int32), tf.uint8
        )
        float_images = tf.cast(images, tf.float32)
        crops = {
            "tf.image.crop_and_resize": tf_image_crop_and_resize(size, 0),
            "keras_cv RandomCropAndResize": keras_cv_crop_and_resize(size, 0),
            "augment.crop_and_resize": gather_crop_and_resize(size, 0, jit_compile=False),
            "augment.crop_and_resize (XLA)": gather_crop_and_resize(size, 0, jit_compile=True),
        }
        for name, fn in crops.items():
            rate = images_per_second(fn, float_images)
            print(f"{size:3d} px  crop  {name:32s} {rate:12,.0f}")
        if size >= 96:
            kernel_size = augment.SimCLRAugment(size).blur_kernel_size
            blurs = {
                "banded matrices": matrix_blur(kernel_size, 0),
                "shifted slices": shifted_sum_blur(kernel_size, 0),
            }
            for name, fn in blurs.items():
                rate = images_per_second(fn, float_images)
                print(f"{size:3d} px  blur  {name:32s} {rate:12,.0f}")
        for jit_compile in (False, True):
            rate = images_per_second(full_layer(size, 0, jit_compile), images)
            label = "SimCLRAugment" + (" (all XLA)" if jit_compile else "")
            print(f"{size:3d} px  full  {label:32s} {rate:12,.0f}")


if __name__ == "__main__":
    main()
