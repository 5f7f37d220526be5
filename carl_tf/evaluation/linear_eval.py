"""Linear evaluation of frozen features, following the protocol of He et al. (2020), MoCo.

CARL (arXiv 2112.15421, Sec. 3 and App. A) reports top-1 accuracy of a linear classifier trained
on the frozen backbone's pooled features as in MoCo: SGD with momentum 0.9, no weight decay,
batch 256, 100 epochs, learning rate divided by 10 at epochs 60 and 80, random crop and flip on
the training images, centre (unaugmented) test images.

One deviation, in conditioning only: features are standardised with the mean and variance of the
training features (of augmented images when augmenting) before the linear layer. An affine map of the features followed by
a linear layer is still a linear classifier of the features, so the probe's capacity is MoCo's;
what changes is that one learning rate suits any backbone. Unnormalised features need a learning
rate matched to their scale (MoCo uses 30 for ResNet-50 on ImageNet, CIFAR repositories use 0.05
to 30 for ResNet-18), which would otherwise have to be searched per backbone and even per epoch
of a training-time monitor.
"""

import functools
import logging
import math
from typing import TYPE_CHECKING

import keras
import numpy as np

from carl_tf.evaluation.features import extract_features
from carl_tf.evaluation.settings import DEFAULT_LEARNING_RATE

if TYPE_CHECKING:  # the probes train on tf.data; the module imports without TensorFlow
    import tensorflow as tf

logger = logging.getLogger(__name__)

# At most this many progress lines per probe: the full probe runs minutes without output.
_PROGRESS_LINES = 10

# The full protocol's crop and flip are made for photos at their own resolution (CIFAR's 32 px,
# STL-10's 96 px). Images upscaled from fewer pixels than this per side are probed without them:
# on the 8x8 digits upscaled to 32 px, a shift of 1/8 of the image moves every stroke by a whole
# source pixel and a mirrored 2 or 5 is another shape, while the scored digits are never shifted
# or mirrored. Measured on one 15-epoch digits run (100 probe epochs): 59.89% top-1 with crop and
# flip, 82.45% without, equal to the features mode (README, Evaluation).
SMALLEST_AUGMENTED_SIDE = 16


def augments_images(native_size: tuple[int, int] | None) -> bool:
    """Whether the full protocol crops and flips images whose source is `native_size`.

    Args:
        native_size: `(height, width)` of the source's images before resizing, or None when
            unknown (images of varying size); then they are augmented.

    Returns:
        False for images upscaled from fewer than `SMALLEST_AUGMENTED_SIDE` pixels per side.
    """
    return native_size is None or min(native_size) >= SMALLEST_AUGMENTED_SIDE


def probe_learning_rate(epoch: int, *, base_learning_rate: float, epochs: int) -> float:
    """Step schedule of the protocol: x0.1 at 60% and again at 80% of the epochs.

    For 100 epochs this is MoCo's schedule: epochs 0-59 at the base rate, 60-79 at a tenth,
    80-99 at a hundredth (epochs counted from 0).

    Args:
        epoch: Current epoch, counted from 0.
        base_learning_rate: Learning rate of the first epoch.
        epochs: Total number of epochs.

    Returns:
        The learning rate of `epoch`.
    """
    # Rounded down when the epoch count is not a multiple of 10.
    milestones = (6 * epochs // 10, 8 * epochs // 10)
    return base_learning_rate * 0.1 ** sum(epoch >= milestone for milestone in milestones)


class _FrozenBackbone(keras.layers.Layer):
    """Calls a backbone in inference mode without making its weights part of the probe.

    The backbone is held through a `functools.partial`, which Keras does not track, so its
    variables are absent from the probe's trainable variables: the optimizer never sees them and
    the caller's model is used as is, without toggling its `trainable` flags. `training=False`
    makes batch norm use, and not update, its moving statistics.
    """

    def __init__(self, backbone: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self._features = functools.partial(backbone, training=False)

    def call(self, images):
        return self._features(images)


class _ProgressLog(keras.callbacks.Callback):
    """Logs the probe's training top-1 every few epochs, at most `_PROGRESS_LINES` lines.

    The full protocol runs the backbone on every step, minutes on a CPU; the lines show it is
    moving and whether the classifier is still learning.
    """

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs, self.every = epochs, max(1, math.ceil(epochs / _PROGRESS_LINES))

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        if done % self.every == 0 or done == self.epochs:
            logger.info(
                "linear probe epoch %d/%d: train top-1 %.1f%%",
                done,
                self.epochs,
                100.0 * float(logs["top1"]),
            )


def _classifier(train_features: np.ndarray, num_classes: int) -> keras.Sequential:
    """Standardisation fitted on `train_features` `(N, D)`, then a zero-initialised linear layer."""
    return keras.Sequential(
        [
            keras.Input(shape=train_features.shape[1:]),
            keras.layers.Normalization(
                mean=train_features.mean(axis=0), variance=train_features.var(axis=0)
            ),
            # Softmax regression is convex, so zero weights are a fine, seed-free start.
            keras.layers.Dense(num_classes, kernel_initializer="zeros"),
        ]
    )


def _train_dataset(
    inputs: np.ndarray, labels: np.ndarray, batch_size: int, seed: int
) -> "tf.data.Dataset":
    """Batches `(inputs, labels)` as float32, reshuffled every epoch in a seeded order."""
    import tensorflow as tf  # only a probe that runs needs it

    return (
        tf.data.Dataset.from_tensor_slices((inputs, labels))
        .shuffle(len(inputs), seed=seed)
        .batch(batch_size)
        .map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of rows whose label is among the k largest logits `(N, C)`."""
    top = np.argsort(-logits, axis=1)[:, :k]
    return 100.0 * float(np.mean(np.any(top == np.asarray(labels)[:, None], axis=1)))


def _fit_and_score(
    probe: keras.Model,
    train_data: "tf.data.Dataset",
    test_inputs: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    verbose: int,
) -> dict[str, float]:
    """Trains `probe` with the protocol's optimizer and schedule, then scores it on test inputs."""
    probe.compile(
        optimizer=keras.optimizers.SGD(learning_rate, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        # Only for the progress lines; the scores below are computed on the test inputs.
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="top1")],
    )
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch, _: probe_learning_rate(epoch, base_learning_rate=learning_rate, epochs=epochs)
    )
    # The dataset already reshuffles every epoch.
    probe.fit(
        train_data,
        epochs=epochs,
        callbacks=[schedule, _ProgressLog(epochs)],
        shuffle=False,
        verbose=verbose,
    )
    logits = extract_features(probe, test_inputs, batch_size=batch_size)
    return {
        "top1": _top_k_accuracy(logits, test_labels, 1),
        "top5": _top_k_accuracy(logits, test_labels, min(5, num_classes)),
    }


def linear_probe_on_features(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    epochs: int = 100,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    batch_size: int = 256,
    seed: int = 0,
    verbose: int = 0,
) -> dict[str, float]:
    """Linear evaluation on precomputed features (fast mode: no augmentation, no backbone).

    Optimizer and schedule are the protocol's (module docstring). The default learning rate,
    0.1, is for the standardised features the probe trains on. On CIFAR-10 features of a small
    CNN (256-d, 10,000 training images, 100 epochs) it reached 63.9% top-1, level with an L-BFGS
    logistic regression run to convergence (63.8%); 0.03 and 0.3 gave 63.1% and 62.0%, 1.0 gave
    60.0%. On features of a random network, rates from 0.01 to 1 all gave 52.0-52.6%, against
    53.0% for the converged regression.

    Args:
        train_features: Features `(N_train, D)` of the training images.
        train_labels: Labels `(N_train,)`, integers in [0, num_classes).
        test_features: Features `(N_test, D)` of the test images.
        test_labels: Labels `(N_test,)`.
        num_classes: Number of classes.
        epochs: Training epochs; the rate drops at 60% and 80% of them.
        learning_rate: Base learning rate.
        batch_size: Training batch size.
        seed: Seed of the shuffling order.
        verbose: Keras `fit` verbosity.

    Returns:
        `top1` and `top5` test accuracy in percent (`top5` is top-C when C < 5).
    """
    train_features = np.asarray(train_features, dtype=np.float32)
    return _fit_and_score(
        _classifier(train_features, num_classes),
        _train_dataset(train_features, train_labels, batch_size, seed),
        test_features,
        test_labels,
        num_classes=num_classes,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        verbose=verbose,
    )


def linear_probe(
    backbone: keras.Model,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    num_classes: int,
    epochs: int = 100,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    batch_size: int = 256,
    augment: bool = True,
    seed: int = 0,
    verbose: int = 0,
) -> dict[str, float]:
    """Linear evaluation of a frozen backbone, the full protocol with augmentation.

    Every step runs a fresh padded random crop and flip of the training images through the
    frozen backbone (inference mode) into the linear classifier, all on device. The padding is
    1/8 of the image height: 4 px for CIFAR's 32 px, 12 px for STL-10's 96 px. Test images are
    not augmented. The backbone's weights, batch-norm statistics and `trainable` flags are left
    unchanged.

    Args:
        backbone: Maps float images `(batch, H, W, 3)` in [0, 255] to features `(batch, D)`.
        train_images: Training images `(N_train, H, W, 3)`, values in [0, 255].
        train_labels: Labels `(N_train,)`, integers in [0, num_classes).
        test_images: Test images `(N_test, H, W, 3)`.
        test_labels: Labels `(N_test,)`.
        num_classes: Number of classes.
        epochs: Training epochs; the rate drops at 60% and 80% of them.
        learning_rate: Base learning rate, for standardised features (see
            `linear_probe_on_features`).
        batch_size: Training batch size.
        augment: Whether to crop and flip the training images.
        seed: Seed of the shuffling order and the augmentation.
        verbose: Keras `fit` verbosity.

    Returns:
        `top1` and `top5` test accuracy in percent (`top5` is top-C when C < 5).
    """
    inputs = keras.Input(shape=train_images.shape[1:])
    images, statistics_images = inputs, train_images
    if augment:
        from carl_tf.evaluation.probe_augment import PadCropFlip  # TensorFlow ops

        augmentation = PadCropFlip(padding=train_images.shape[1] // 8, seed=seed)
        images = augmentation(images)
        # Standardise with statistics of the distribution the classifier trains on, augmented
        # images: a channel nearly constant on whole images but not on crops (one responding to
        # reflected borders) would otherwise be scaled far beyond unit variance in training.
        statistics_images = augmentation(train_images, training=True).numpy()
    # One extra pass over the training images fits the standardisation.
    train_features = extract_features(backbone, statistics_images, batch_size=batch_size)
    logits = _classifier(train_features, num_classes)(_FrozenBackbone(backbone)(images))
    return _fit_and_score(
        keras.Model(inputs, logits),
        _train_dataset(train_images, train_labels, batch_size, seed),
        test_images,
        test_labels,
        num_classes=num_classes,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        verbose=verbose,
    )
