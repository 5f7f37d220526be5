"""Decoding a folder's image files: the first one's size, or all of them into memory.

With TensorFlow where it is installed (`tf.io.decode_image`, in parallel through tf.data);
else with Pillow and NumPy (`carl_tf.data.numpy_images`), which give the same images. Files
that cannot be decoded are dropped, and the image libraries' own messages about them are held
back: the caller's warning names the files instead.
"""

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from carl_tf.data import numpy_images
from carl_tf.data.folder_listing import os_names
from carl_tf.data.image_source import CHUNK
from carl_tf.data.optional_tensorflow import tensorflow_or_none
from carl_tf.data.resizing import resize

if TYPE_CHECKING:
    import tensorflow as tf

# What the image libraries print on their own for a damaged file, as libjpeg's messages
# (jerror.h: "Improper call to JPEG library in state 201", "Input file read error", "Premature
# end of JPEG file", "Corrupt JPEG data: ...", "Bogus marker length", "Unsupported marker
# type") and libpng's warnings: the log names the file instead.
_DECODER_NOISE = re.compile(
    r"JPEG|libpng|PNG|GIF|Input file read error|Premature end|Corrupt|Bogus|marker"
)


def decode_to_size(encoded: "tf.Tensor", size: tuple[int, int]) -> tuple["tf.Tensor", "tf.Tensor"]:
    """Decodes an image file's bytes and resizes the image to `size` if needed.

    Returns:
        The image uint8 `(*size, 3)` and whether its original size differed from `size`.
    """
    import tensorflow as tf

    from carl_tf.data.decoding import decode_image  # imports TensorFlow

    image = decode_image(encoded)
    differs = tf.reduce_any(tf.shape(image)[:2] != size)
    image = tf.cond(differs, lambda: resize(image, size), lambda: image)
    image.set_shape((*size, 3))
    return image, differs


def first_image_size(paths: list[str]) -> tuple[int, int] | None:
    """The size of the first file that decodes, or None when none does."""
    tf = tensorflow_or_none()
    if tf is None:
        for path in paths:
            image = numpy_images.decode_file(path)
            if image is not None:
                return image.shape[0], image.shape[1]
        return None
    from carl_tf.data.decoding import decode_image

    sizes = (
        tf.data.Dataset.from_tensor_slices(tf.constant(os_names(paths), tf.string))
        .map(lambda path: tf.shape(decode_image(tf.io.read_file(path)))[:2])
        .ignore_errors()
        .take(1)
    )
    for size in sizes.as_numpy_iterator():
        return int(size[0]), int(size[1])
    return None


def decode_all(
    paths: list[str], labels: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Decodes files in parallel into memory, dropping those that fail to decode.

    With TensorFlow where it is installed; else with Pillow (`_decode_all_without_tensorflow`).

    Returns:
        Images `(M, *size, 3)` uint8, labels `(M,)` int32 and indices into `paths` `(M,)` of
        the M decodable files, in file order, and whether any image had to be resized.
    """
    tf = tensorflow_or_none()
    if tf is None:
        return _decode_all_without_tensorflow(paths, labels, size)
    decoded = (
        tf.data.Dataset.from_tensor_slices(
            (tf.constant(os_names(paths), tf.string), labels, np.arange(len(paths)))
        )
        .map(
            lambda path, label, index: (
                *decode_to_size(tf.io.read_file(path), size),
                label,
                index,
            ),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .ignore_errors()
        .batch(CHUNK)
    )
    images = np.empty((len(paths), *size, 3), np.uint8)
    kept_labels = np.empty(len(paths), np.int32)
    kept = np.empty(len(paths), np.int64)
    count, any_resized = 0, False
    with _decoder_messages_replaced():
        for image_batch, resized, label_batch, index_batch in decoded.as_numpy_iterator():
            images[count : count + len(image_batch)] = image_batch
            kept_labels[count : count + len(image_batch)] = label_batch
            kept[count : count + len(image_batch)] = index_batch
            count += len(image_batch)
            any_resized |= bool(resized.any())
    return images[:count], kept_labels[:count], kept[:count], any_resized


def _decode_all_without_tensorflow(
    paths: list[str], labels: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """`decode_all` with Pillow and NumPy (`numpy_images`), `CHUNK` files at a time.

    Each image is resized on its own to `size` if it differs, as the TensorFlow path does.
    """
    images = np.empty((len(paths), *size, 3), np.uint8)
    kept = []
    any_resized = False
    for start in range(0, len(paths), CHUNK):
        decoded = numpy_images.decode_files(paths[start : start + CHUNK])
        for index, image in enumerate(decoded, start):
            if image is None:
                continue
            if image.shape[:2] != size:
                image = numpy_images.resize(image, size)
                any_resized = True
            images[len(kept)] = image
            kept.append(index)
    kept = np.asarray(kept, np.int64)
    return images[: len(kept)], labels[kept].astype(np.int32), kept, any_resized


@contextlib.contextmanager
def _decoder_messages_replaced() -> Iterator[None]:
    """Holds back the image libraries' own stderr lines while files decode.

    fd 2 goes to a temporary file; afterwards every captured line is written back except the
    decoders' messages about damaged files, which the caller's warning replaces by naming the
    files.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(line for line in lines if not _DECODER_NOISE.search(line))
            if kept:
                os.write(2, kept.encode())
