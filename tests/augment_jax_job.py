"""The JAX side of tests/test_augment_jax.py: `carl_tf.method.augment` under Keras's JAX backend.

    python tests/augment_jax_job.py OUT.npz

runs every piece of the view maker on the inputs of `make_inputs` (which the test process builds
too, with the same draws) and writes the results to OUT.npz: the crop, colour jitter, grayscale,
blur and whole view from given parameters, which the test compares with the TensorFlow backend's;
crop windows drawn under JAX, to check their distribution; and views of `SimCLRAugment` called
eagerly and inside `jax.jit` through `stateless_call`, the way Keras's JAX trainer calls it.
The test runs it with TensorFlow unimportable, so it also shows the module needs none.
"""

import sys

import keras
import numpy as np

from carl_tf.method import augment

IMAGE_SIZE = 32
# Windows drawn for the distribution checks, per image shape (height, width).
CROP_SAMPLES = 20_000
CROP_SHAPES = ((32, 32), (24, 40))


def make_inputs() -> dict[str, np.ndarray]:
    """Images and view parameters, the same in every process (NumPy draws only)."""
    rng = np.random.default_rng(7)
    batch, height, width = 4, 40, 36
    crop_h = rng.integers(1, height + 1, batch)
    crop_w = rng.integers(1, width + 1, batch)
    top = rng.integers(0, height - crop_h + 1)
    left = rng.integers(0, width - crop_w + 1)
    # A gray and a saturated pixel in every image, where hue is undefined or at its edges.
    views = rng.uniform(0, 255, (batch, IMAGE_SIZE, IMAGE_SIZE, 3))
    views[:, 0, 0] = 128.0
    views[:, 0, 1] = (255.0, 0.0, 0.0)
    rgb = rng.uniform(0, 1, (1, 40, 25, 3))
    rgb[0, 0, :5] = [[0, 0, 0], [1, 1, 1], [0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 1]]
    return {
        "images": rng.uniform(0, 255, (batch, height, width, 3)).astype(np.float32),
        "boxes": np.stack([top, left, crop_h, crop_w], axis=1).astype(np.float32),
        "flip": rng.uniform(size=batch) < 0.5,
        "views": views.astype(np.float32),
        "brightness": rng.uniform(0.6, 1.4, batch).astype(np.float32),
        "contrast": rng.uniform(0.6, 1.4, batch).astype(np.float32),
        "saturation": rng.uniform(0.6, 1.4, batch).astype(np.float32),
        "hue": rng.uniform(-0.1, 0.1, batch).astype(np.float32),
        "jitter": np.array([True, True, False, True]),
        "gray": np.array([False, True, False, False]),
        "sigma": np.array([0.0, 0.4, 1.3, 2.0], np.float32),
        "rgb": rgb.astype(np.float32),
        "hsv": rng.uniform(0, 1, (1, 40, 25, 3)).astype(np.float32),
    }


def view_layer(**kwargs) -> augment.SimCLRAugment:
    """The layer whose `_view` both backends run: every op on, blur included (K = 3)."""
    return augment.SimCLRAugment(IMAGE_SIZE, blur_probability=0.5, seed=0, **kwargs)


def view_inputs(inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The arguments of `SimCLRAugment._view`, in order."""
    names = ("images", "boxes", "flip", "jitter", "brightness", "contrast", "saturation")
    return [inputs[name] for name in names + ("hue", "gray", "sigma")]


def stateless_views(images: np.ndarray) -> dict[str, np.ndarray]:
    """Views of jitted `stateless_call`s: two in a row, feeding the state back, then a replay."""
    import jax

    layer = augment.SimCLRAugment(IMAGE_SIZE, seed=0)
    call = jax.jit(lambda state, x: layer.stateless_call([], state, x, training=True))
    initial = [v.value for v in layer.non_trainable_variables]
    first, state = call(initial, images)
    second, _ = call(state, images)
    replay, _ = call(initial, images)
    return {"jit_first": first, "jit_second": second, "jit_replay": replay}


def main(out_path: str) -> None:
    import jax

    inputs = make_inputs()
    ops = keras.ops
    results = {
        "crops": augment.crop_and_resize(
            inputs["images"], inputs["boxes"], IMAGE_SIZE, inputs["flip"]
        ),
        "jittered": augment.color_jitter(
            inputs["views"],
            inputs["brightness"],
            inputs["contrast"],
            inputs["saturation"],
            inputs["hue"],
        ),
        "grayscale": augment.grayscale(inputs["views"]),
        "blurred": augment.gaussian_blur(inputs["images"], inputs["sigma"], kernel_size=5),
        "view": view_layer()._view(*view_inputs(inputs)),
        "rgb_to_hsv": ops.image.rgb_to_hsv(inputs["rgb"], data_format="channels_last"),
        "hsv_to_rgb": ops.image.hsv_to_rgb(inputs["hsv"], data_format="channels_last"),
        "resized": augment.SimCLRAugment(IMAGE_SIZE)(inputs["images"], training=False),
        "eager_view": augment.SimCLRAugment(IMAGE_SIZE, seed=1)(inputs["images"].astype(np.uint8)),
        **stateless_views(inputs["images"]),
    }
    for height, width in CROP_SHAPES:
        results[f"boxes_{height}x{width}"] = augment.sample_crop_boxes(
            CROP_SAMPLES, height, width, seed=(0, 0)
        )
    # A traced seed: the same seed gives the same windows, another seed others.
    boxes_of = jax.jit(lambda seed: augment.sample_crop_boxes(64, 32, 32, seed=seed))
    results["boxes_seed_a"] = boxes_of(np.array([1, 2], np.int32))
    results["boxes_seed_a_again"] = boxes_of(np.array([1, 2], np.int32))
    results["boxes_seed_b"] = boxes_of(np.array([1, 3], np.int32))
    results["backend"] = np.array(keras.backend.backend())
    results["tensorflow_loaded"] = np.array("tensorflow" in sys.modules)
    np.savez(out_path, **{name: np.asarray(value) for name, value in results.items()})


if __name__ == "__main__":
    main(sys.argv[1])
