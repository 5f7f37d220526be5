"""The `npz:PATH` source: arrays `x` (N, H, W, C) uint8 and optional labels `y` (N,)."""

import os
import zipfile

import numpy as np

from carl_tf.data.image_source import ImageSource, LoadOptions, num_classes_of
from carl_tf.data.resizing import resize_array
from carl_tf.data.splits import holdout_indices
from carl_tf.errors import DataError, first_line


def load(spec: str, options: LoadOptions) -> ImageSource:
    """The archive's images, C in 1, 3 or 4 made RGB, resized to `options.image_size` if set.

    `train` and `test` are cut by `options.holdout`.

    Raises:
        DataError: If the file is not an npz archive, lacks `x`, or `x` or `y` has the wrong
            shape or type.
    """
    path = spec.partition(":")[2]
    # np.load takes any file that is not a zip (text, a .npy) for pickled data and says so.
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
        raise DataError(
            f"{spec} is not an npz archive (not a zip file); pass a .npz file saved with np.savez"
        )
    try:
        with np.load(path, allow_pickle=False) as arrays:
            keys = list(arrays.files)
            images = arrays["x"] if "x" in keys else None
            labels = arrays["y"] if "y" in keys else None
    except (OSError, ValueError) as error:
        raise DataError(
            f"cannot read {spec}: {first_line(error)}; pass a .npz file saved with np.savez"
        ) from error
    if images is None:
        raise DataError(
            f"{spec} has no array 'x' (found: {', '.join(keys) or 'none'}); save images as "
            "x (N, H, W, C) uint8 and optional labels as y (N,)"
        )
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.dtype != np.uint8:
        raise DataError(
            f"{spec}: x must be uint8 (N, H, W, C) with C in 1, 3 or 4, got {images.dtype} "
            f"{images.shape}; convert it, e.g. x.astype(np.uint8)"
        )
    if labels is None:
        labels = np.full(len(images), -1, np.int32)
    elif (
        labels.shape != (len(images),)
        or not np.issubdtype(labels.dtype, np.integer)
        or (labels.size and labels.min() < -1)
    ):
        raise DataError(
            f"{spec}: y must hold {len(images)} integer labels >= -1, got {labels.dtype} "
            f"{labels.shape}; fix y (-1 marks unlabelled images)"
        )
    labels = labels.astype(np.int32)
    indices = holdout_indices(labels, options.split, options.holdout, options.seed, spec)
    images = images[indices]
    # Grayscale becomes RGB; alpha is dropped, as tf.io.decode_image(channels=3) does.
    images = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]
    size = (options.image_size,) * 2 if options.image_size else images.shape[1:3]
    images = resize_array(images, size)
    return ImageSource(
        name=spec,
        split=options.split,
        num_examples=len(indices),
        num_classes=num_classes_of(labels),
        image_shape=(*size, 3),
        arrays=(images, labels[indices]),
    )


def count(spec: str) -> tuple[int, int | None]:
    """How many images the archive holds and its number of classes (None when unlabelled),
    read from the headers of `x` and the labels `y`, without loading any image.

    Raises:
        DataError: If the archive cannot be read or holds no `x`.
    """
    path = spec.partition(":")[2]
    try:
        with zipfile.ZipFile(path) as archive, archive.open("x.npy") as file:
            version = np.lib.format.read_magic(file)
            read = np.lib.format.read_array_header_2_0 if version[0] >= 2 else None
            shape = (read or np.lib.format.read_array_header_1_0)(file)[0]
        with np.load(path, allow_pickle=False) as arrays:
            labels = arrays["y"] if "y" in arrays.files else np.full(shape[0], -1)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise DataError(
            f"cannot read {spec}: {first_line(error)}; pass a .npz file saved with "
            "np.savez holding x (N, H, W, C) uint8 and optional labels y (N,)"
        ) from error
    return int(shape[0]), num_classes_of(np.asarray(labels))
