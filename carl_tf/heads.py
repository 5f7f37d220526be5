"""The projection head of CARL's encoder f (Appendix A): a BYOL-style MLP onto the 128-d space."""

from collections.abc import Sequence

import keras


@keras.saving.register_keras_serializable(package="carl_tf")
class ProjectionHead(keras.layers.Layer):
    """(Dense -> BatchNorm -> ReLU) per hidden layer, then a linear Dense to `output_dim`.

    BatchNorm is synchronized by default so that its batch statistics are those of the global
    batch under a `tf.distribute` strategy (one N-replica step equals one single-device step).

    Args:
        hidden_units: widths of the hidden layers; the paper's head has two (Grill et al., 2020).
        output_dim: size of the representation z compared with the prototypes (128 in the paper).
        synchronized_batchnorm: all-reduce BatchNorm statistics across replicas.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (2048, 2048),
        output_dim: int = 128,
        synchronized_batchnorm: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.output_dim = int(output_dim)
        self.synchronized_batchnorm = bool(synchronized_batchnorm)
        # Sublayers take the head's policy, not the global one: a head loaded under another
        # global policy than it was saved with computes as it trained.
        dtype = self.dtype_policy
        self.hidden_layers = []
        for i, units in enumerate(self.hidden_units):
            self.hidden_layers += [
                keras.layers.Dense(units, use_bias=False, dtype=dtype, name=f"hidden_{i}"),
                keras.layers.BatchNormalization(
                    synchronized=self.synchronized_batchnorm, dtype=dtype, name=f"hidden_{i}_bn"
                ),
                keras.layers.ReLU(dtype=dtype, name=f"hidden_{i}_relu"),
            ]
        self.output_layer = keras.layers.Dense(self.output_dim, dtype=dtype, name="output")

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.hidden_layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.output_layer.build(shape)
        self.built = True

    def call(self, features, training=None):
        x = features
        for layer in self.hidden_layers:
            x = layer(x, training=training)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape):
        return (*tuple(input_shape)[:-1], self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "output_dim": self.output_dim,
            "synchronized_batchnorm": self.synchronized_batchnorm,
        }
