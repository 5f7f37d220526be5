"""The projection head of CARL's encoder f (Appendix A): a BYOL-style MLP onto the 128-d space."""

from collections.abc import Sequence

import keras

from carl_tf.method.normalization import (
    NormFactory,
    batch_norm,
    deserialize_norm_factory,
    serialize_norm_factory,
)


@keras.saving.register_keras_serializable(package="carl_tf")
class ProjectionHead(keras.layers.Layer):
    """(Dense -> BatchNorm -> ReLU) per hidden layer, then a linear Dense to `output_dim`.

    The default BatchNorm is synchronized, so that its batch statistics are those of the global
    batch under a `tf.distribute` strategy (one N-replica step equals one single-device step),
    with PyTorch's momentum 0.9 and epsilon 1e-5 like the backbone's: with Keras's 0.99 the
    moving statistics of a short run stay near their initial values and inference-mode
    assignments collapse onto a few prototypes.

    Args:
        hidden_units: widths of the hidden layers; the paper's head has two (Grill et al., 2020).
        output_dim: size of the representation z compared with the prototypes (128 in the paper).
        norm_layer: factory of the hidden layers' normalization
            (`carl_tf.method.normalization.batch_norm()` by default).
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (2048, 2048),
        output_dim: int = 128,
        norm_layer: NormFactory | dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.output_dim = int(output_dim)
        if isinstance(norm_layer, dict):  # from get_config
            norm_layer = deserialize_norm_factory(norm_layer)
        norm_layer = norm_layer or batch_norm()
        # Sublayers take the head's policy, not the global one: a head loaded under another
        # global policy than it was saved with computes as it trained.
        dtype = self.dtype_policy
        self.hidden_layers = []
        self._norm_config = serialize_norm_factory(norm_layer(name="norm", dtype=dtype))
        for i, units in enumerate(self.hidden_units):
            self.hidden_layers += [
                keras.layers.Dense(units, use_bias=False, dtype=dtype, name=f"hidden_{i}"),
                norm_layer(dtype=dtype, name=f"hidden_{i}_bn"),
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
            "norm_layer": self._norm_config,
        }
