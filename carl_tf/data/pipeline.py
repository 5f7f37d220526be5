"""Batches of an `ImageSource` for training and inference, and its images as arrays.

The pipeline only decodes, caches, shuffles, batches and prefetches: augmentation runs later, on
device, inside the model's train step. It is a tf.data pipeline, so it needs TensorFlow; the
arrays of a source held in memory do not (`source_arrays`, `labelled_arrays`, and
`carl_tf.data.array_batches` batches them without TensorFlow).
"""

from typing import TYPE_CHECKING

import numpy as np

from carl_tf.data.image_source import CHUNK, ImageSource
from carl_tf.data.optional_tensorflow import require_tensorflow
from carl_tf.data.splits import Shard, shard_elements, shard_seed
from carl_tf.errors import DataError

if TYPE_CHECKING:
    import tensorflow as tf


def make_dataset(
    source: ImageSource,
    *,
    batch_size: int,
    shuffle: bool,
    drop_remainder: bool,
    seed: int = 0,
    repeat: bool = False,
    shard: Shard = (1, 0),
) -> "tf.data.Dataset":
    """Batches a source into `(images, labels)`.

    Args:
        source: The source to read.
        batch_size: Images per batch.
        shuffle: Whether to reshuffle every epoch; in-memory and cached sources are shuffled
            through a buffer covering all of them, streamed ones by file and through a buffer
            of at most `source.memory_budget_bytes` of images.
        drop_remainder: Whether to drop the last incomplete batch (training).
        seed: Shuffle seed.
        repeat: Whether to repeat forever.
        shard: `(count, index)`: read only the index-th of `count` disjoint parts of the source,
            each `num_examples // count` images, chosen before anything is decoded (a worker's
            share under a distribution strategy; see `carl_tf.data.splits.shard_elements`).

    Returns:
        A dataset of `images` uint8 `(batch, H, W, 3)` and `labels` int32 `(batch,)`.

    Raises:
        DataError: If `batch_size` is not positive, or larger than the source while
            `drop_remainder` would leave no batch at all, or if the shard does not exist.
        UsageError: If TensorFlow is not installed.
    """
    source.check_batch_size(batch_size, shard[0], whole_batches=drop_remainder)
    count = source.num_examples // shard[0]
    tf = _tensorflow_for(f"batches of {source.description}")
    if source.arrays is not None:
        dataset = tf.data.Dataset.from_tensor_slices(source.arrays)
        dataset = shard_elements(dataset, source.num_examples, shard)
        buffer_size = max(1, count)
    else:
        dataset = source.stream(shuffle, seed, shard)
        if source.cache:
            dataset = dataset.cache()
            buffer_size = max(1, count)
        else:
            image_bytes = int(np.prod(source.image_shape))
            # The memory budget bounds the decoded images a streamed source holds at once.
            buffer_size = min(max(1, count), max(1, source.memory_budget_bytes // image_bytes))
    if shuffle:
        dataset = dataset.shuffle(
            buffer_size, seed=shard_seed(seed, shard), reshuffle_each_iteration=True
        )
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(
        batch_size, drop_remainder=drop_remainder, num_parallel_calls=tf.data.AUTOTUNE
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def source_arrays(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """Returns all images `(N, H, W, 3)` uint8 and labels `(N,)` int32 of a source, in order.

    Meant for small sources (kNN banks, evaluation sets): a streamed source is read in full.
    """
    if source.arrays is not None:
        return source.arrays
    images, labels = [], []
    for image_batch, label_batch in make_dataset(
        source, batch_size=CHUNK, shuffle=False, drop_remainder=False
    ).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels)


def labelled_batches(source: ImageSource, batch_size: int = 256) -> "tf.data.Dataset":
    """The source's labelled images as `(images, labels)` batches, in order, read as needed.

    Unlabelled (-1) images are dropped; at most one batch is decoded at a time, so any source
    fits, whatever its size.

    Raises:
        DataError: If the source has no labels at all.
        UsageError: If TensorFlow is not installed.
    """
    _check_labelled(source)
    tf = _tensorflow_for(f"labelled batches of {source.description}")
    if source.arrays is not None:
        elements = tf.data.Dataset.from_tensor_slices(source.arrays)
    else:
        elements = source.stream(False, 0)
    return (
        elements.filter(lambda image, label: label >= 0)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def _tensorflow_for(batches: str):
    """TensorFlow for a tf.data pipeline of `batches`, or a one-line UsageError naming the fix."""
    return require_tensorflow(
        f"{batches} come from a tf.data pipeline, which needs TensorFlow (pip install "
        "tensorflow); without it batch a source held in memory with "
        "carl_tf.data.array_batches"
    )


def _check_labelled(source: ImageSource) -> None:
    if source.num_classes is None:
        raise DataError(
            f"{source.description} has no labels, which evaluation needs; use a folder with one "
            "sub-folder per class, an npz with labels y, or a labelled TFDS dataset"
        )


def labelled_arrays(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """The source's labelled images and their labels; unlabelled (-1) images are dropped.

    Raises:
        DataError: If the source has no labels at all.
    """
    _check_labelled(source)
    images, labels = source_arrays(source)
    labelled = labels >= 0
    return images[labelled], labels[labelled]
