"""Bilinear, antialiased resizing of images to uint8, the same pixels with or without TensorFlow."""

from typing import TYPE_CHECKING

import numpy as np

from carl_tf.data import numpy_images
from carl_tf.data.image_source import CHUNK
from carl_tf.data.optional_tensorflow import tensorflow_or_none

if TYPE_CHECKING:
    import tensorflow as tf


def resize(images: "tf.Tensor", size: tuple[int, int]) -> "tf.Tensor":
    """Bilinear resize of one image or a batch to `size` with TensorFlow, returned as uint8."""
    import tensorflow as tf

    resized = tf.image.resize(tf.cast(images, tf.float32), size, antialias=True)
    # Rounded to uint8, saturating outside 0..255.
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def resize_array(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes `(N, h, w, C)` images (any real dtype, 0..255) to uint8 `(N, *size, C)`.

    With TensorFlow where it is installed; else `numpy_images.resize`, which gives the same
    pixels.
    """
    if images.shape[1:3] == size and images.dtype == np.uint8:
        return images
    with_tensorflow = tensorflow_or_none() is not None
    out = np.empty((len(images), *size, images.shape[-1]), np.uint8)
    for start in range(0, len(images), CHUNK):
        chunk = images[start : start + CHUNK]
        if with_tensorflow:
            out[start : start + CHUNK] = resize(chunk, size).numpy()
        else:
            out[start : start + CHUNK] = numpy_images.resize(chunk, size)
    return out
