"""Training batches of a source, with random resized crops cut from full-resolution images.

SimCLR's random resized crop takes 8-100% of an image's area. Cut on device from images the
pipeline already resized to `image_size`, a crop of 8% of a 500x375 photo at 224 px is ~63x63
pixels of the 224x224 thumbnail upsampled, where the photo itself has ~140x100 pixels there.
For sources whose images are larger than `image_size`, `crop_pairs` therefore cuts each view's
crop from the decoded full-resolution image in the input pipeline (for JPEGs only the window
is decoded) and resizes it once to `image_size` (bilinear, antialiased); the flip, colour
jitter, grayscale and blur stay on device (`SimCLRAugment(..., crop=False)` inside
`CARL.train_step`). Both paths draw their windows with the same function,
`carl_tf.method.augment.sample_crop_boxes`. `training_batches` picks the path per source.

Under the JAX backend a source held in memory trains from `carl_tf.data.array_batches`, without
tf.data or TensorFlow; a streamed source still reads through tf.data (Keras's JAX trainer takes
its batches), so it needs TensorFlow installed; crop pairs need the TensorFlow backend, as
`sample_crop_boxes` is written in `keras.ops`, which under JAX cannot run inside tf.data.
"""

import logging
from typing import TYPE_CHECKING

import keras
import numpy as np

from carl_tf import data
from carl_tf.data.optional_tensorflow import require_tensorflow
from carl_tf.errors import DataError, UsageError
from carl_tf.method.augment import sample_crop_boxes

if TYPE_CHECKING:  # imported by the functions that build tf.data pipelines
    import tensorflow as tf

logger = logging.getLogger(__name__)

# The crops of each image: the two views of CARL's objective.
VIEWS = 2


def uses_full_resolution(source: data.ImageSource, image_size: int) -> bool:
    """Whether views of `source` are cut from its full-resolution images by `crop_pairs`.

    True for sources read from image files (`source.records` is not None) whose first image is
    larger than `image_size` on either side, or whose images vary in size
    (`source.native_size` is None). Sources held decoded in memory (digits, npz) keep the
    on-device crop from the images as loaded.

    Args:
        source: The training source.
        image_size: Side S of the model's input.
    """
    if source.records is None:
        return False
    return source.native_size is None or max(source.native_size) > image_size


def crop_views(
    encoded: "tf.Tensor",
    seed: "tf.Tensor",
    *,
    image_size: int,
    crop_scale: tuple[float, float],
    crop_ratio: tuple[float, float],
) -> "dict[str, tf.Tensor]":
    """Cuts an image's two random resized crops from its full-resolution pixels.

    The windows are `sample_crop_boxes(2, height, width, crop_scale, crop_ratio, seed)`, the
    distribution `SimCLRAugment` draws on device; each is decoded (for a JPEG only the window,
    see `carl_tf.data.decoding`) and resized once to `image_size x image_size`, bilinear with
    antialiasing, so a window larger than the output is averaged rather than subsampled.

    Args:
        encoded: Scalar `tf.string`, the bytes of a JPEG, PNG, BMP or GIF file.
        seed: Stateless seed of shape `(2,)`, int32 or int64.
        image_size: Output side S.
        crop_scale: Range of the crop area as a fraction of the image's area.
        crop_ratio: Range of the crop aspect ratio, width / height.

    Returns:
        A dict of `crops` uint8 `(2, S, S, 3)` and `boxes` int32 `(2, 4)`, the windows
        `(top, left, height, width)` in the full-resolution image.
    """

    import tensorflow as tf

    from carl_tf.data.decoding import decode_windows  # tf.data decoding, TensorFlow's

    def boxes_for_size(size: tf.Tensor) -> tf.Tensor:
        return sample_crop_boxes(VIEWS, size[0], size[1], crop_scale, crop_ratio, seed)

    boxes, windows = decode_windows(encoded, boxes_for_size)
    crops = [
        tf.image.resize(tf.cast(w, tf.float32), (image_size, image_size), antialias=True)
        for w in windows
    ]
    crops = tf.cast(tf.clip_by_value(tf.round(tf.stack(crops)), 0.0, 255.0), tf.uint8)
    crops.set_shape((VIEWS, image_size, image_size, 3))
    return {"crops": crops, "boxes": boxes}


def crop_pairs(
    source: data.ImageSource,
    *,
    image_size: int,
    crop_scale: tuple[float, float],
    crop_ratio: tuple[float, float],
    batch_size: int,
    shuffle: bool,
    drop_remainder: bool,
    seed: int,
    shard: tuple[int, int] = (1, 0),
) -> "tf.data.Dataset":
    """Batches of two random resized crops per image, cut from the full-resolution images.

    Every image gets its own stateless seed per epoch, drawn from `seed` and the part's index,
    so its crops differ between epochs and between the parts of a sharded source, and two
    datasets made with the same `seed` and `shard` give the same batches. Files that cannot be
    decoded are skipped with a warning, as a streamed source skips them.

    Args:
        source: A source read from image files (`source.records` is not None).
        image_size: Side S of the crops.
        crop_scale: Range of the crop area as a fraction of the image's area.
        crop_ratio: Range of the crop aspect ratio, width / height.
        batch_size: Images per batch B.
        shuffle: Whether to reshuffle every epoch: the files, then through a buffer of crop
            pairs that holds at most the source's `memory_budget_bytes`.
        drop_remainder: Whether to drop the last incomplete batch (training).
        seed: Seed of the file order, the buffer and the crop windows.
        shard: `(count, index)`: read only the index-th of `count` disjoint parts of the source.

    Returns:
        A dataset of dicts: `crops` uint8 `(B, 2, S, S, 3)`, `boxes` int32 `(B, 2, 4)` (each
        crop's window `(top, left, height, width)` in its full-resolution image) and `label`
        int32 `(B,)` (-1 where unlabelled), the form `CARL.fit` takes as crop pairs.

    Raises:
        DataError: If the source has no image files to read, `image_size` or `batch_size` is
            not positive, or `drop_remainder` would leave no batch.
    """
    if source.records is None:
        raise DataError(
            f"{source.description} is held decoded in memory, so its views are cut on device; "
            "use carl_tf.data.make_dataset"
        )
    if image_size < 1:
        raise DataError(f"image size must be positive, got {image_size}", fields=("image_size",))
    source.check_batch_size(batch_size, shard[0], whole_batches=drop_remainder)
    count = source.num_examples // shard[0]
    import tensorflow as tf

    part_seed = data.shard_seed(seed, shard)
    box_seed, buffer_seed = (int(s) for s in np.random.SeedSequence(part_seed).generate_state(2))
    # A (2,) int64 seed per image, a new sequence every epoch.
    seeds = tf.data.Dataset.random(seed=box_seed, rerandomize_each_iteration=True).batch(2)

    def cut(record: tuple[tf.Tensor, tf.Tensor], image_seed: tf.Tensor) -> dict[str, tf.Tensor]:
        encoded, label = record
        views = crop_views(
            encoded,
            image_seed,
            image_size=image_size,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
        )
        return {**views, "label": tf.cast(label, tf.int32)}

    dataset = tf.data.Dataset.zip(source.records(shuffle, seed, shard), seeds)
    dataset = dataset.map(cut, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.ignore_errors(log_warning=True)
    if shuffle:
        pair_bytes = VIEWS * image_size * image_size * 3
        buffer_size = min(max(1, count), max(1, source.memory_budget_bytes // pair_bytes))
        dataset = dataset.shuffle(buffer_size, seed=buffer_seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def training_batches(
    source: data.ImageSource,
    *,
    image_size: int,
    crop_scale: tuple[float, float],
    crop_ratio: tuple[float, float],
    batch_size: int,
    seed: int,
    shard: tuple[int, int] = (1, 0),
) -> "tf.data.Dataset | keras.utils.PyDataset":
    """Endless shuffled training batches of a source, in the form its views are best made from.

    Crop pairs from `crop_pairs` when `uses_full_resolution(source, image_size)`, else the
    images as loaded, cropped on device: from `carl_tf.data.make_dataset`, or under the JAX
    backend, for a source held in memory, from `carl_tf.data.array_batches`. Logs which, and
    why.

    Args:
        source: The training source.
        image_size: Side S of the model's input.
        crop_scale: Range of the crop area as a fraction of the image's area.
        crop_ratio: Range of the crop aspect ratio, width / height.
        batch_size: Images per batch.
        seed: Seed of the shuffle and, for crop pairs, of the crop windows.
        shard: `(count, index)`: read only the index-th of `count` disjoint parts of the source.

    Returns:
        An endless stream, reshuffled on every pass (give `fit` its `steps_per_epoch`): a
        repeated dataset of crop-pair dicts (see `crop_pairs`) or of `(images, labels)`
        batches, each pass dropping its incomplete batch; under JAX, for a held source, the
        uint8 image batches of `array_batches`.

    Raises:
        UsageError: Under JAX, for crop pairs (they need the TensorFlow backend), or for a
            streamed source where TensorFlow is not installed.
    """
    jax = keras.backend.backend() == "jax"
    if uses_full_resolution(source, image_size):
        reason = (
            "image sizes vary"
            if source.native_size is None
            else "first image {}x{} > {}".format(*source.native_size, image_size)
        )
        if jax:
            raise UsageError(
                f"{source.description}: views cut from its full-resolution images ({reason}) "
                "need the TensorFlow backend; run with KERAS_BACKEND=tensorflow, or resize the "
                f"images to {image_size} px first"
            )
        logger.info("%s: views cut from full-resolution images (%s)", source.description, reason)
        return crop_pairs(
            source,
            image_size=image_size,
            crop_scale=crop_scale,
            crop_ratio=crop_ratio,
            batch_size=batch_size,
            shuffle=True,
            drop_remainder=True,
            seed=seed,
            shard=shard,
        ).repeat()
    height, width, _ = source.image_shape
    if source.records is None:
        reason = "the source is held decoded in memory"
    else:
        reason = "first image {}x{}, not larger than {}".format(*source.native_size, image_size)
    logger.info(
        "%s: views cut on device from the %dx%d images as loaded (%s)",
        source.description,
        height,
        width,
        reason,
    )
    if jax and source.arrays is not None:
        return data.array_batches(source.arrays[0], batch_size, seed)
    if jax:
        require_tensorflow(
            f"{source.description} is streamed from disk through tf.data, which needs "
            "TensorFlow (pip install tensorflow); without it raise memory_budget_mb "
            "above the decoded images' size to hold them in memory"
        )
    return data.make_dataset(
        source, batch_size=batch_size, shuffle=True, drop_remainder=True, seed=seed, shard=shard
    ).repeat()
