"""The `digits` source: scikit-learn's bundled 8x8 handwritten digits, upscaled; the offline default."""

import numpy as np

from carl_tf.data.image_source import ImageSource, LoadOptions
from carl_tf.data.resizing import resize_array
from carl_tf.data.splits import holdout_indices

DEFAULT_SIZE = 32
# load_digits stores ink as integers 0..16.
_MAX_VALUE = 16.0


def load(spec: str, options: LoadOptions) -> ImageSource:
    """scikit-learn's 1797 digits (bundled, offline), upscaled bilinearly and made RGB.

    `train` and `test` are cut by `options.holdout`; images are `options.image_size` square,
    32 by default.
    """
    from sklearn import datasets as sklearn_datasets  # only the digits source needs it

    digits = sklearn_datasets.load_digits()
    labels = digits.target.astype(np.int32)
    indices = holdout_indices(labels, options.split, options.holdout, options.seed, spec)
    size = options.image_size or DEFAULT_SIZE
    gray = digits.images[indices, :, :, None] * (255.0 / _MAX_VALUE)
    images = np.repeat(resize_array(gray, (size, size)), 3, axis=-1)
    return ImageSource(
        name=spec,
        split=options.split,
        num_examples=len(indices),
        num_classes=10,
        image_shape=(size, size, 3),
        arrays=(images, labels[indices]),
        native_size=digits.images.shape[1:3],  # 8x8, before the upscaling
    )
