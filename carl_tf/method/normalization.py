"""BatchNormalization that runs TensorFlow's fused kernel wherever the result is the same.

Keras 3's BatchNormalization computes its moments and the normalisation with a dozen plain ops,
in float32 even under a bfloat16 policy, a large share of CARL's step on the CPU; TensorFlow's
fused kernel (`FusedBatchNormV3`, one op forward and one backward, oneDNN's on x86) takes a
fraction of it (docs/benchmarks.md, "Where the step's time goes", has the figures). This layer takes the
fused kernel for 4-D channels-last inputs whenever the statistics are those of the local
batch: inference, and training on one replica. Under several replicas with `synchronized=True`
it keeps Keras's path, whose moments are all-reduced over the global batch.

Under every other Keras backend it is Keras's layer (JAX's XLA fuses the plain ops itself).
It keeps Keras's layer otherwise: the same variables, config and moving-average update
(`moving = momentum * moving + (1 - momentum) * batch`, with the biased batch variance), so
checkpoints of either load into the other.
"""

import functools
from collections.abc import Callable

import keras

from carl_tf.method import distributed

# A norm-layer factory, torchvision style: called as `norm_layer(name=..., gamma_initializer=...)`
# it returns a new normalization layer. Backbones and heads take one instead of BatchNorm flags.
NormFactory = Callable[..., keras.layers.Layer]

# PyTorch's BatchNorm defaults (momentum 0.1 there is 0.9 here), which CARL's reference uses.
# Keras's own (0.99, 1e-3) lag far behind a short run: moving statistics of a 30-step run would
# still be mostly their initial values, and inference-mode assignments collapse onto few
# prototypes.
BATCHNORM_MOMENTUM = 0.9
BATCHNORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="carl_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` on TensorFlow's fused kernel where it computes the same.

    Takes the arguments of `keras.layers.BatchNormalization`. `synchronized` is kept in the
    config under every backend, so a model saved under one loads under the other; outside
    TensorFlow (where Keras refuses it) the statistics are global without it: JAX's step runs on
    the global batch.
    """

    def __init__(self, *args, synchronized: bool = False, **kwargs):
        tensorflow = keras.backend.backend() == "tensorflow"
        super().__init__(*args, synchronized=synchronized and tensorflow, **kwargs)
        self._synchronized_in_config = bool(synchronized)

    def get_config(self):
        return {**super().get_config(), "synchronized": self._synchronized_in_config}

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf  # _fusable holds only under the TensorFlow backend

        training = bool(training and self.trainable)
        gamma = self.gamma if self.scale else tf.ones(inputs.shape[-1], "float32")
        beta = self.beta if self.center else tf.zeros(inputs.shape[-1], "float32")
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            tf.cast(gamma, "float32"),
            tf.cast(beta, "float32"),
            mean=None if training else tf.cast(self.moving_mean, "float32"),
            variance=None if training else tf.cast(self.moving_variance, "float32"),
            epsilon=self.epsilon,
            is_training=training,
        )
        if training:
            # The kernel returns the unbiased batch variance; Keras averages the biased one.
            count = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], "float32")
            variance *= (count - 1.0) / count
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum)
            )
        return tf.cast(outputs, self.compute_dtype)

    def _fusable(self, inputs, training, mask) -> bool:
        """Whether the fused kernel computes exactly what Keras's path would."""
        if keras.backend.backend() != "tensorflow":
            return False
        if mask is not None or self.renorm or len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return False
        if keras.backend.standardize_dtype(inputs.dtype) not in ("float32", "bfloat16"):
            return False  # float16: not measured on a GPU
        replicas = distributed.num_replicas()
        return not (training and self.trainable) or not self.synchronized or replicas == 1


def batch_norm(
    *,
    synchronized: bool = True,
    fused: bool = True,
    momentum: float = BATCHNORM_MOMENTUM,
    epsilon: float = BATCHNORM_EPSILON,
) -> NormFactory:
    """The BatchNorm factory of carl_tf's networks.

    Args:
        synchronized: All-reduce the batch statistics over replicas under `tf.distribute`, so
            an N-replica step normalizes with the global batch's statistics, like one device.
        fused: `FusedBatchNormalization` (TensorFlow's fused kernel where it computes the
            same); False gives Keras's own `BatchNormalization`, for comparison.
        momentum: Moving-average momentum of the inference statistics.
        epsilon: Added to the variance.

    Returns:
        A factory called with `name=` and optionally `gamma_initializer=`.
    """
    if fused:
        layer_class = FusedBatchNormalization
    else:
        layer_class = keras.layers.BatchNormalization
        # Keras refuses the argument outside TensorFlow, where statistics are global anyway.
        synchronized = synchronized and keras.backend.backend() == "tensorflow"
    return functools.partial(
        layer_class, synchronized=synchronized, momentum=momentum, epsilon=epsilon
    )


def serialize_norm_factory(layer: keras.layers.Layer) -> dict:
    """What rebuilds a factory's layers: `layer`'s serialized config without its name."""
    serialized = keras.saving.serialize_keras_object(layer)
    serialized["config"] = {
        k: v for k, v in serialized["config"].items() if k not in ("name", "gamma_initializer")
    }
    return serialized


def deserialize_norm_factory(serialized: dict) -> NormFactory:
    """The factory whose layers have the config `serialize_norm_factory` recorded."""

    def norm_layer(**overrides) -> keras.layers.Layer:
        config = {**serialized, "config": {**serialized["config"], **overrides}}
        return keras.saving.deserialize_keras_object(config)

    return norm_layer
