"""`TwoViewModel`: what every method of carl_tf has, and nothing of any one objective.

A method here is an encoder (a backbone and a projection head) trained with `fit` on two views
of each image: the views are made on device from raw images, taken from the caller, or finished
from the input pipeline's crop pairs (`carl_tf.method.inputs`). The train, test and predict steps
of the running backend (`carl_tf.method.steps`) call the method's `_objective`, which returns the
loss on the global batch and the figures to log. `CARL` (`carl_tf.method.model`) and `SimCLR`
(`carl_tf.method.simclr`) are the two methods; `carl_tf.training.methods` builds either from a
config.
"""

import sys

import keras
from keras import ops

from carl_tf.method.augment import SimCLRAugment
from carl_tf.method.inputs import split_batch, warn_if_unit_range
from carl_tf.method.multi_worker_fit import MultiWorkerFit
from carl_tf.method.steps import steps_for_backend

# The train, test and predict steps of the running backend (carl_tf.method.steps); the
# multi-worker fix only concerns TensorFlow's trainer.
_BACKEND_BASES = (
    (MultiWorkerFit, steps_for_backend())
    if keras.backend.backend() == "tensorflow"
    else (steps_for_backend(),)
)


class TwoViewModel(*_BACKEND_BASES, keras.Model):
    """A backbone, a projection head and a view maker, trained by a subclass's objective.

    Subclasses set `self.projection_head` and `self.augmenter` in `__init__` and define:

    * `FIGURES`: the names of the figures a train step logs, each tracked as a running mean,
      and `VALIDATION_FIGURES`, those of them a validation batch logs;
    * `_objective(view_a, view_b, training, small_views)`: a dict of float32 scalars on the
      global batch holding every figure, "loss" among them, and any entries `_observe` takes
      out first;
    * `call(images, training)`: what `predict` returns.

    They may override `_observe(figures)` (state updated from the step's figures, e.g. counts)
    and `_after_apply()` (state updated after each optimizer step, e.g. a moving average).

    Args:
        backbone: A Keras model mapping images (N, H, W, 3) in [0, 255] to features (N, D).
    """

    FIGURES: tuple[str, ...] = ("loss",)
    VALIDATION_FIGURES: tuple[str, ...] = ("loss",)

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.small_crops, self.small_augmenter = 0, None
        self._trackers = {name: keras.metrics.Mean(name=name) for name in self.FIGURES}
        self._checked_input_range = False

    @property
    def metrics(self):
        """The logged figures' trackers."""
        return list(self._trackers.values())

    def project(self, images, training=False):
        """The projections z (N, projection_dim) of images: backbone, then projection head."""
        features = self.backbone(images, training=training)
        return self.projection_head(features, training=training)

    def fit(self, x=None, y=None, **kwargs):
        """`keras.Model.fit`, warning once when the images look scaled to [0, 1]."""
        if not self._checked_input_range:
            self._checked_input_range = True
            sample = _first_images(x, getattr(self, "distribute_strategy", None))
            if sample is not None:
                warn_if_unit_range(sample)
        return super().fit(x, y, **kwargs)

    def _views(self, data):
        """Two global views per image and the tuple of its `small_crops` small views.

        The global views are the caller's `(a, b)` pair, or made on device from raw images or
        from the input pipeline's two crops of each image; the small views from the raw images,
        or alternately from the first and second view (crop) of each pair.
        """
        batch = split_batch(data)
        if batch.views is not None:
            global_views, sources = batch.views, batch.views
        elif batch.crops is not None:
            sources = (batch.crops[:, 0], batch.crops[:, 1])
            global_views = tuple(self.augmenter(c, training=True, crop=False) for c in sources)
        else:
            global_views = tuple(self.augmenter(batch.images, training=True) for _ in range(2))
            sources = (batch.images, batch.images)
        small_views = tuple(
            self.small_augmenter(sources[i % 2], training=True) for i in range(self.small_crops)
        )
        return (*global_views, small_views)

    def _test_figures(self, data):
        """The logged figures of a validation batch."""
        view_a, view_b, small_views = self._views(data)
        figures = self._objective(view_a, view_b, training=False, small_views=small_views)
        return {name: figures[name] for name in self.VALIDATION_FIGURES}

    def _observe(self, figures) -> None:
        """Takes the step's non-logged entries out of `figures` into the model's state."""

    def _after_apply(self) -> None:
        """Runs after each optimizer step of the TensorFlow trainer."""

    def _update_trackers(self, figures):
        for name, value in figures.items():
            self._trackers[name].update_state(value)
        return {name: self._trackers[name].result() for name in figures}


def default_augmenter(backbone: keras.Model) -> keras.layers.Layer:
    """SimCLR views at the backbone's input size, which must then be fixed."""
    size = backbone.input_shape[1]
    if size is None:
        raise ValueError(
            "the backbone's input size is not fixed; pass augmenter=SimCLRAugment(image_size=...)"
        )
    return SimCLRAugment(image_size=int(size))


def _first_images(x, strategy=None, count: int = 256):
    """Up to `count` images of what `fit` was given, as NumPy, or None where it cannot tell.

    Of a `tf.distribute` dataset (`distribute_datasets_from_function`), the images of this
    process's first replica. TensorFlow's types are only looked for where TensorFlow is loaded.
    """
    tf = sys.modules.get("tensorflow")
    try:
        if tf is not None and isinstance(x, tf.distribute.DistributedDataset):
            first_replica = strategy.experimental_local_results
            x = tf.nest.map_structure(lambda value: first_replica(value)[0], next(iter(x)))
        elif tf is not None and isinstance(x, tf.data.Dataset):
            x = next(iter(x.take(1)))
        elif isinstance(x, keras.utils.PyDataset):
            x = x[0]
        images = split_batch(x).first_images
    except (ValueError, TypeError, IndexError, StopIteration):
        return None  # the train step raises for forms it cannot take
    return ops.convert_to_numpy(images[:count])
