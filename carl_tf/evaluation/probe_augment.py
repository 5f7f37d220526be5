"""The training augmentation of the linear evaluation protocol: padded random crop and flip."""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="carl_tf")
class PadCropFlip(keras.layers.Layer):
    """Reflect-pads each image, crops it back at a random offset and flips it half the time.

    The standard CIFAR training augmentation (pad 4 px, random 32 x 32 crop, horizontal flip),
    drawn independently per image on device. Outside training the layer is the identity, so test
    images are seen whole.

    Args:
        padding: Pixels of reflection padding on every side; the crop offset is uniform over the
            (2 * padding + 1)^2 positions.
        seed: Seed of the random offsets and flips.
        **kwargs: Base `keras.layers.Layer` arguments.
    """

    def __init__(self, padding: int, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.padding = padding
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Augments a batch when training.

        Args:
            images: Images `(batch, H, W, C)`.
            training: Whether to augment.

        Returns:
            Images `(batch, H, W, C)`.
        """
        if not training:
            return images
        p = self.padding
        batch, height, width = tf.shape(images)[0], tf.shape(images)[1], tf.shape(images)[2]
        padded = tf.pad(images, [[0, 0], [p, p], [p, p], [0, 0]], mode="REFLECT")
        offsets = keras.random.randint((batch, 2), 0, 2 * p + 1, seed=self.seed_generator)
        rows = offsets[:, :1] + tf.range(height)[None, :]
        cols = offsets[:, 1:] + tf.range(width)[None, :]
        flip = keras.random.uniform((batch, 1), seed=self.seed_generator) < 0.5
        # Reading columns right to left flips the crop with the same gather.
        cols = tf.where(flip, cols[:, ::-1], cols)
        crops = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(crops, cols, axis=2, batch_dims=1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "padding": self.padding, "seed": self.seed}
