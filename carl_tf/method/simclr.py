"""`SimCLR` (Chen et al. 2020, arXiv 2002.05709): the baseline with negatives, on CARL's parts.

CARL's Table 1 compares CARL with SimCLR under one recipe. This model has CARL's backbone,
projection head, views and steps (`carl_tf.method.base.TwoViewModel`) and SimCLR's NT-Xent
(`carl_tf.method.losses.nt_xent`) in place of the assigner, the prototypes and lambda; so
`train.py --method=simclr` differs from a CARL run in the objective alone.

The NT-Xent is computed on the global batch: under a `tf.distribute` strategy every replica
gathers both views' projections from all replicas (`carl_tf.method.distributed.gather`), so
each holds the same global loss, which the TensorFlow step divides by the replica count for
Keras's sum of the replicas' gradients. Under JAX the step sees the global batch.
"""

from collections.abc import Sequence

import keras
from keras import ops

from carl_tf.method import distributed, losses
from carl_tf.method.base import TwoViewModel, default_augmenter
from carl_tf.method.heads import ProjectionHead

# solo-learn's CIFAR SimCLR recipe (ResNet-18 at 32 px, batch 256), the public recipe closest to
# carl_tf's CIFAR presets; SimCLR's own CIFAR-10 value, 0.5, comes with LARS, batches of 512 to
# 4096 and hundreds of epochs.
DEFAULT_TEMPERATURE = 0.2


@keras.saving.register_keras_serializable(package="carl_tf")
class SimCLR(TwoViewModel):
    """Backbone -> projection head, trained with NT-Xent over the global batch.

    Takes every batch form `CARL.fit` takes (`carl_tf.method.inputs`). `predict(images)` returns
    the projections (N, projection_dim) in float32; `model.backbone` is the encoder the probes
    evaluate.

    Args:
        backbone: A Keras model mapping images (N, H, W, 3) in [0, 255] to features (N, D).
        projection_hidden_units: Hidden widths of the projection head.
        projection_dim: Size of the projections the loss compares.
        augmenter: Layer making one random view per call; defaults to the SimCLR views at the
            backbone's input size.
        temperature: tau of the NT-Xent, positive.
        projection_head: The head to use instead of building one from
            `projection_hidden_units` and `projection_dim`.

    Raises:
        ValueError: For a temperature that is not positive.
    """

    def __init__(
        self,
        backbone: keras.Model,
        projection_hidden_units: Sequence[int] = (2048, 2048),
        projection_dim: int = 128,
        augmenter: keras.layers.Layer | None = None,
        temperature: float = DEFAULT_TEMPERATURE,
        projection_head: keras.layers.Layer | None = None,
        **kwargs,
    ):
        super().__init__(backbone, **kwargs)
        if not float(temperature) > 0.0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.augmenter = augmenter if augmenter is not None else default_augmenter(backbone)
        self.projection_head = projection_head or ProjectionHead(
            projection_hidden_units,
            projection_dim,
            dtype=self.dtype_policy,  # the model's saved policy on load, not the global one
            name="projection_head",
        )
        if not self.projection_head.built:  # a deserialized head arrives built
            self.projection_head.build((None, backbone.output_shape[-1]))
        self.built = True

    def call(self, images, training=False):
        """The projections (N, projection_dim) of images, in float32."""
        return ops.cast(self.project(images, training=training), "float32")

    def _objective(self, view_a, view_b, training, small_views=()):
        """NT-Xent of the two views' projections, gathered from every replica."""
        z_a = distributed.gather(self(view_a, training=training))
        z_b = distributed.gather(self(view_b, training=training))
        return {"loss": losses.nt_xent(z_a, z_b, self.temperature)}

    def get_config(self):
        return {
            **super().get_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "projection_head": keras.saving.serialize_keras_object(self.projection_head),
            "augmenter": keras.saving.serialize_keras_object(self.augmenter),
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name in ("backbone", "projection_head", "augmenter"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)
