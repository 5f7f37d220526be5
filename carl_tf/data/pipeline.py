"""Batches of an `ImageSource` for training and inference, and its images as arrays.

The pipeline only decodes, caches, shuffles, batches and prefetches: augmentation runs later, on
device, inside the model's train step.
"""

import numpy as np
import tensorflow as tf

from carl_tf.data.sources import ImageSource
from carl_tf.errors import DataError

# A streamed source is shuffled through a buffer of at most this many bytes.
_STREAM_SHUFFLE_BYTES = 1 << 30
# Images per batch when a whole source is read into memory.
_CHUNK = 512


def make_dataset(
    source: ImageSource,
    *,
    batch_size: int,
    shuffle: bool,
    drop_remainder: bool,
    seed: int = 0,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches a source into `(images, labels)`.

    Args:
        source: The source to read.
        batch_size: Images per batch.
        shuffle: Whether to reshuffle every epoch; in-memory and cached sources are shuffled
            through a buffer covering all of them, streamed ones by file and a bounded buffer.
        drop_remainder: Whether to drop the last incomplete batch (training).
        seed: Shuffle seed.
        repeat: Whether to repeat forever.

    Returns:
        A dataset of `images` uint8 `(batch, H, W, 3)` and `labels` int32 `(batch,)`.

    Raises:
        DataError: If `batch_size` is not positive, or larger than the source while
            `drop_remainder` would leave no batch at all.
    """
    if batch_size < 1:
        raise DataError(f"batch size must be positive, got {batch_size}; fix --batch_size")
    if drop_remainder and batch_size > source.num_examples:
        raise DataError(
            f"batch size {batch_size} is larger than the {source.num_examples} images in "
            f"{source.description}; lower --batch_size"
        )
    if source.arrays is not None:
        dataset = tf.data.Dataset.from_tensor_slices(source.arrays)
        buffer_size = source.num_examples
    else:
        dataset = source.stream(shuffle, seed)
        if source.cache:
            dataset = dataset.cache()
            buffer_size = source.num_examples
        else:
            image_bytes = int(np.prod(source.image_shape))
            buffer_size = min(source.num_examples, max(1, _STREAM_SHUFFLE_BYTES // image_bytes))
    if shuffle:
        dataset = dataset.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
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
        source, batch_size=_CHUNK, shuffle=False, drop_remainder=False
    ).as_numpy_iterator():
        images.append(image_batch)
        labels.append(label_batch)
    return np.concatenate(images), np.concatenate(labels)


def labelled_arrays(source: ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """The source's labelled images and their labels; unlabelled (-1) images are dropped.

    Raises:
        DataError: If the source has no labels at all.
    """
    if source.num_classes is None:
        raise DataError(
            f"{source.description} has no labels, which evaluation needs; use a folder with one "
            "sub-folder per class, an npz with labels y, or a labelled TFDS dataset"
        )
    images, labels = source_arrays(source)
    labelled = labels >= 0
    return images[labelled], labels[labelled]
