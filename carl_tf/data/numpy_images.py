"""Decoding and resizing images in NumPy and Pillow, for machines without TensorFlow.

Where TensorFlow is installed the sources decode and resize with it (`tf.io.decode_image`,
`tf.image.resize`); these functions stand in for them where it is not (a JAX-only machine), and
give the same images:

* `resize` computes what `tf.image.resize(..., antialias=True)` (bilinear) computes: the
  triangle kernel of `ScaleAndTranslate`, widened by the downscaling factor, half-pixel centres,
  weights renormalised at the borders, float32 sums in TensorFlow's order. Rounded to uint8 it
  gave TensorFlow's pixels exactly on the digits (8x8 to 5..40) and on random images up- and
  downscaled (tests/test_data_without_tensorflow.py checks it).
* `decode_file` decodes with Pillow. PNG, BMP and GIF give TensorFlow's pixels exactly; JPEG
  pixels differ by a few levels, because TensorFlow's libjpeg runs its fast integer DCT
  (`JDCT_IFAST`) and Pillow's the accurate one (`JDCT_ISLOW`); the test states the tolerance.
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# The formats tf.io.decode_image reads, as Pillow names them.
_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
_FILES_PER_TASK = 64


def decode_file(path: str) -> np.ndarray | None:
    """Decodes a JPEG, PNG, BMP or GIF file to RGB with Pillow, or None if it cannot be.

    As `tf.io.decode_image(channels=3, expand_animations=False)`: only those four formats are
    read (whatever the file's extension), grayscale and palette images become RGB, alpha is
    dropped and a GIF gives its first frame.

    Returns:
        uint8 array `(height, width, 3)`, or None for a file that is missing, truncated or not
        an image (TensorFlow's decoder fails on the same files, and the caller skips them).
    """
    from PIL import Image  # only sources decoded without TensorFlow need Pillow

    try:
        with Image.open(path, formats=_FORMATS) as image:
            image.seek(0)
            return np.asarray(image.convert("RGB"), np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None


def decode_files(paths: list[str]) -> list[np.ndarray | None]:
    """`decode_file` of every path, in order, on a thread per core (Pillow releases the GIL).

    Each thread decodes a run of `_FILES_PER_TASK` files: one task per file cost more in
    scheduling than a 32x32 JPEG takes to decode.
    """
    runs = [paths[i : i + _FILES_PER_TASK] for i in range(0, len(paths), _FILES_PER_TASK)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = pool.map(lambda run: [decode_file(path) for path in run], runs)
        return [image for run in decoded for image in run]


def _resize_spans(source: int, target: int) -> tuple[np.ndarray, np.ndarray]:
    """The input spans and float32 weights of TensorFlow's antialiased triangle-kernel resize.

    Output pixel x samples the input at (x + 1/2) * source / target; input pixel j weighs
    max(0, 1 - |j + 1/2 - sample| / s) with s = max(source / target, 1), and each output's
    weights are scaled by the reciprocal of their sum (the kernel's part inside the image), as
    `ScaleAndTranslate` does.

    Returns:
        `(target, span)` int indices of the input pixels each output pixel reads, clamped into
        the image, and their `(target, span)` weights, 0 where the span runs past the kernel.
    """
    inverse_scale = np.float32(source / target)
    kernel_scale = max(inverse_scale, np.float32(1.0))
    samples = (np.arange(target, dtype=np.float32) + np.float32(0.5)) * inverse_scale
    starts = np.clip(np.ceil(samples - kernel_scale - np.float32(0.5)), 0, source - 1)
    span = min(2 * int(np.ceil(kernel_scale)) + 1, source)
    indices = starts.astype(np.int64)[:, None] + np.arange(span)
    positions = indices.astype(np.float32) + np.float32(0.5)
    distance = np.abs(positions - samples[:, None]) * (np.float32(1.0) / kernel_scale)
    weights = np.maximum(np.float32(0.0), np.float32(1.0) - distance)
    weights[indices >= source] = 0.0
    weights *= np.float32(1.0) / weights.sum(axis=1, keepdims=True, dtype=np.float32)
    return np.minimum(indices, source - 1), weights


def _resize_axis(images: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Resizes float32 `images` along `axis`, summing each span in order as TensorFlow does.

    The order of the float32 additions decides which side of .5 a pixel rounds to; summed
    in another order (a matrix product), 1.5% of the digits upscaled to 24x24 moved by a level.
    """
    indices, weights = _resize_spans(images.shape[axis], size)
    moved = np.moveaxis(images, axis, -1)
    resized = np.zeros((*moved.shape[:-1], size), np.float32)
    for k in range(indices.shape[1]):
        resized += moved[..., indices[:, k]] * weights[:, k]
    return np.moveaxis(resized, -1, axis)


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear, antialiased resize of `(N, h, w, C)` or `(h, w, C)` images to uint8 `size`.

    Rows are resized first, then columns, in float32 (TensorFlow's order); values are rounded
    half to even and saturated to 0..255, as the TensorFlow path does.
    """
    resized = _resize_axis(images.astype(np.float32), size[0], images.ndim - 3)
    resized = _resize_axis(resized, size[1], images.ndim - 2)
    return np.clip(np.round(resized), 0, 255).astype(np.uint8)
