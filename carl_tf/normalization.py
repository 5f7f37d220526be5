"""BatchNormalization that runs TensorFlow's fused kernel wherever the result is the same.

Keras 3's BatchNormalization computes its moments and the normalisation with a dozen plain ops,
in float32 even under a bfloat16 policy; on the CPU that was 28-37% of CARL's step time
(benchmarks/profile_step.py), against 3-4x less for TensorFlow's fused kernel
(`FusedBatchNormV3`, one op forward and one backward, oneDNN's on x86). This layer takes the
fused kernel for 4-D channels-last inputs whenever the statistics are those of the local
batch: inference, and training on one replica. Under several replicas with `synchronized=True`
it keeps Keras's path, whose moments are all-reduced over the global batch.

It keeps Keras's layer otherwise: the same variables, config and moving-average update
(`moving = momentum * moving + (1 - momentum) * batch`, with the biased batch variance), so
checkpoints of either load into the other.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="carl_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` on TensorFlow's fused kernel where it computes the same.

    Takes the arguments of `keras.layers.BatchNormalization`.
    """

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
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
        if mask is not None or self.renorm or len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return False
        if inputs.dtype not in (tf.float32, tf.bfloat16):  # float16: not measured on a GPU here
            return False
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return not (training and self.trainable) or not self.synchronized or replicas == 1
