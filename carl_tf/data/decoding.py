"""Decoding an encoded image file, whole or only a window of it.

Random resized crops of large images are cut before the image is ever resized, so the pipeline
needs an image's size without decoding it, and the pixels of a few windows. For JPEGs both come
from libjpeg directly: `tf.image.extract_jpeg_shape` reads only the header, and
`tf.image.decode_and_crop_jpeg` stops after the window's last row and skips most of the work
outside its columns. Other formats (PNG, BMP, GIF) are decoded in full and sliced.

Every function takes the file's bytes as a scalar `tf.string` and runs inside `tf.data` maps.
"""

from collections.abc import Callable

import tensorflow as tf


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """Decodes a JPEG, PNG, BMP or GIF file to RGB.

    Grayscale and RGBA images become RGB (`channels=3`, alpha dropped); a GIF gives its first
    frame, so every format yields one 3-D image.

    Args:
        encoded: Scalar `tf.string`, the bytes of the file.

    Returns:
        uint8 tensor of shape `(height, width, 3)`.
    """
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def encoded_image_size(encoded: tf.Tensor) -> tf.Tensor:
    """The size of an encoded image; read from the header alone for a JPEG.

    Args:
        encoded: Scalar `tf.string`, the bytes of the file.

    Returns:
        int32 tensor of shape `(2,)`: `(height, width)`.
    """
    return tf.cond(
        tf.io.is_jpeg(encoded),
        lambda: _jpeg_size(encoded),
        lambda: tf.shape(decode_image(encoded), out_type=tf.int32)[:2],
    )


def decode_window(encoded: tf.Tensor, box: tf.Tensor) -> tf.Tensor:
    """Decodes one window of an encoded image.

    For a JPEG with 4:4:4 chroma the window equals slicing the decoded image exactly. With 4:2:0
    chroma (most photos), libjpeg upsamples the chroma of the window's first and last column
    from inside the window only, so those two columns can differ from the sliced image, by up to
    2 levels on a smooth gradient and by tens of levels on chroma that changes every pixel
    (measured on generated images); all other pixels are equal.

    Args:
        encoded: Scalar `tf.string`, the bytes of a JPEG, PNG, BMP or GIF file.
        box: int32 tensor of shape `(4,)`: `(top, left, height, width)` in pixels, inside the
            image.

    Returns:
        uint8 tensor of shape `(height, width, 3)`.
    """
    box = tf.reshape(tf.cast(box, tf.int32), (1, 4))
    _, (window,) = decode_windows(encoded, lambda size: box)
    return window


def decode_windows(
    encoded: tf.Tensor, boxes_for_size: Callable[[tf.Tensor], tf.Tensor]
) -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
    """Decodes windows of an encoded image placed by its size, decoding the file at most once.

    A JPEG's size comes from its header, and only the rectangle that bounds all windows is
    decoded (`tf.image.decode_and_crop_jpeg`; see `decode_window` for how its border columns
    can differ), then sliced. Decoding each window on its own was slower for two windows:
    libjpeg entropy-decodes every row down to a window's bottom, so two windows cost 1.4-2.4x a
    full decode (measured on 500x375 JPEGs, one thread). Any other format is decoded in full
    and sliced.

    Args:
        encoded: Scalar `tf.string`, the bytes of a JPEG, PNG, BMP or GIF file.
        boxes_for_size: Maps the image's int32 `(height, width)` to `(n, 4)` windows
            `(top, left, height, width)` inside the image, with n known when traced.

    Returns:
        The windows as int32 `(n, 4)` and a tuple of n uint8 tensors `(height_i, width_i, 3)`.
    """

    def cut(image: tf.Tensor, boxes: tf.Tensor, origin: tf.Tensor) -> tuple[tf.Tensor, ...]:
        return tuple(
            tf.slice(image, tf.concat([box[:2] - origin, [0]], 0), tf.concat([box[2:], [3]], 0))
            for box in tf.unstack(boxes, axis=0)
        )

    def jpeg() -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        boxes = tf.cast(boxes_for_size(_jpeg_size(encoded)), tf.int32)
        start = tf.reduce_min(boxes[:, :2], axis=0)
        end = tf.reduce_max(boxes[:, :2] + boxes[:, 2:], axis=0)
        bounds = tf.image.decode_and_crop_jpeg(encoded, tf.concat([start, end - start], 0), 3)
        return boxes, cut(bounds, boxes, start)

    def other() -> tuple[tf.Tensor, tuple[tf.Tensor, ...]]:
        image = decode_image(encoded)
        boxes = tf.cast(boxes_for_size(tf.shape(image, out_type=tf.int32)[:2]), tf.int32)
        return boxes, cut(image, boxes, tf.zeros((2,), tf.int32))

    boxes, windows = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
    for window in windows:
        window.set_shape((None, None, 3))
    return boxes, windows


def _jpeg_size(encoded: tf.Tensor) -> tf.Tensor:
    """`(height, width)` int32 from a JPEG's header, without decoding its pixels."""
    return tf.image.extract_jpeg_shape(encoded, output_type=tf.int32)[:2]
