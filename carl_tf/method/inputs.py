"""The batches `CARL.fit` accepts, turned into images, a pair of views, or pairs of crops.

Keras users pass batches in several forms; each is accepted here, in one place:

* images `(N, H, W, 3)`, uint8 or float, values in [0, 255];
* single-channel images `(N, H, W, 1)`, repeated to RGB;
* `(images,)` or `(images, labels)` (labels ignored), as `fit(x, y)` and `tf.data` give them;
* `(view_a, view_b)`, two views the caller made, used as they are;
* a dict with an `image` or `images` key (TFDS's default elements; other keys ignored);
* a dict with a `crops` key `(N, 2, S, S, 3)`: two random resized crops per image, cut and
  resized by the input pipeline (`carl_tf.training.views.crop_pairs`); the model applies the
  rest of each view (flip, colour, blur) on device. Other keys (`boxes`, `label`) are ignored.
"""

import logging
from typing import Any, NamedTuple

import numpy as np
from keras import ops

logger = logging.getLogger(__name__)

IMAGE_KEYS = ("image", "images")
CROPS_KEY = "crops"
ACCEPTED = (
    "images (N, H, W, 3) or (N, H, W, 1), (images, labels), (view_a, view_b), or a dict "
    "with an 'image' key or a 'crops' key (N, 2, S, S, 3)"
)
# Most pixels of a [0, 255] image batch lie above this; all of a [0, 1] one lie below.
_UNIT_RANGE_MAX = 1.0


class Batch(NamedTuple):
    """A batch of `fit` in the form the model makes its two views from; one field is set.

    Attributes:
        images: `(N, H, W, 3)` raw images; both views are made from each on device.
        views: `(view_a, view_b)`, each `(N, H, W, 3)`, made by the caller and used as they are.
        crops: `(N, 2, S, S, 3)`, the two crops of each image, cut by the input pipeline.
    """

    images: Any = None
    views: tuple[Any, Any] | None = None
    crops: Any = None

    @property
    def first_images(self):
        """`(N, H, W, 3)`: the images, the first views or the first crops of the batch.

        What `predict` encodes and what the [0, 1] range check reads.
        """
        if self.views is not None:
            return self.views[0]
        if self.crops is not None:
            return self.crops[:, 0]
        return self.images


def split_batch(data) -> Batch:
    """The images of a batch, its two caller-made views, or its crop pairs.

    Returns:
        A `Batch` with exactly one of `images`, `views` and `crops` set.

    Raises:
        ValueError: For a batch of another form, naming the accepted ones.
    """
    if isinstance(data, dict):
        if CROPS_KEY in data:
            return Batch(crops=as_crop_pairs(data[CROPS_KEY]))
        key = next((k for k in IMAGE_KEYS if k in data), None)
        if key is None:
            raise ValueError(
                f"a dict batch needs a 'crops' or an 'image' key, got keys {sorted(data)}; "
                f"CARL.fit takes {ACCEPTED}"
            )
        return Batch(images=as_rgb(data[key]))
    if isinstance(data, (tuple, list)):
        if len(data) == 1 or (len(data) >= 2 and (data[1] is None or len(data[1].shape) != 4)):
            # (images,), (images, labels[, weights]), or train_on_batch's (x, None)
            return split_batch(data[0])
        if len(data) == 2:
            return Batch(views=(as_rgb(data[0]), as_rgb(data[1])))
        raise ValueError(f"a batch of {len(data)} tensors of images; CARL.fit takes {ACCEPTED}")
    return Batch(images=as_rgb(data))


def as_crop_pairs(crops):
    """`crops` checked to be two RGB crops per image, `(N, 2, S, S, 3)`."""
    shape = tuple(crops.shape)
    if len(shape) != 5 or shape[1] != 2 or shape[-1] != 3:
        raise ValueError(f"got crops of shape {shape}; CARL.fit takes {ACCEPTED}")
    return crops


def as_rgb(images):
    """`images` with 3 channels: single-channel images are repeated, RGB kept.

    A channel count unknown when the step is traced (a model fit on RGB and then on
    single-channel images retraces with it None, as do `tf.data` images decoded without
    `channels=`) is checked when the step runs.
    """
    shape = tuple(images.shape)
    if len(shape) == 4 and shape[-1] is None:
        return _rgb_at_run_time(images)
    if len(shape) != 4 or shape[-1] not in (1, 3):
        raise ValueError(f"got a batch of shape {shape}; CARL.fit takes {ACCEPTED}")
    if shape[-1] == 1:
        return ops.repeat(images, 3, axis=-1)
    return images


def _rgb_at_run_time(images):
    """`as_rgb` for images `(N, H, W, None)`, whose channels only the running step knows.

    Raises:
        tf.errors.InvalidArgumentError: When the step runs on images of neither 1 nor 3
            channels.
    """
    import tensorflow as tf  # only TensorFlow traces a step without the channel count

    channels = tf.shape(images)[-1]
    check = tf.debugging.assert_equal(
        tf.logical_or(channels == 1, channels == 3),
        True,
        message=f"images must have 1 or 3 channels; CARL.fit takes {ACCEPTED}",
    )
    with tf.control_dependencies([check]):
        rgb = tf.cond(
            channels == 1, lambda: tf.repeat(images, 3, axis=-1), lambda: tf.identity(images)
        )
    return tf.ensure_shape(rgb, [*images.shape[:3], 3])


def looks_unit_range(images) -> bool:
    """Whether a sample of images lies within [0, 1], i.e. was scaled as `Rescaling(1/255)` does.

    carl_tf's backbones normalize [0, 255] pixels inside the model; a [0, 1] batch trains with
    features spread ~170x narrower, without any error.
    """
    values = np.asarray(images)
    return bool(
        np.issubdtype(values.dtype, np.floating)
        and values.size
        and values.max() <= _UNIT_RANGE_MAX
        and values.min() >= 0.0
    )


def warn_if_unit_range(images) -> bool:
    """Logs one warning when `images` look like [0, 1]; returns whether it did."""
    if not looks_unit_range(images):
        return False
    logger.warning(
        "the images passed to fit lie in [0, 1], but carl_tf's backbones take raw pixels in "
        "[0, 255] (they normalize inside); multiply by 255, or put your backbone behind its own "
        "preprocessing (see the README)"
    )
    return True
