"""Batched inference of a model over images: features of a backbone, assignments of CARL.

Works under every Keras backend, and without TensorFlow installed when the images are arrays.
"""

import weakref
from collections.abc import Callable, Iterable

import keras
import numpy as np

# model -> its compiled inference function, kept as long as the model lives.
_INFERENCE = weakref.WeakKeyDictionary()


def _tensorflow_inference(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """One `tf.function` of `model(batch, training=False)`, traced once per batch shape.

    It runs in this process alone, on its own copy of the weights, also for a model built
    under a distribution strategy: `predict_on_batch` would split the batch among the replicas
    and, under `multi_worker`, return the rows of every worker's batch together.
    """
    import tensorflow as tf  # the TensorFlow backend has it

    # Through a weak reference: the function must not keep its key, the model, alive.
    held = weakref.ref(model)
    function = tf.function(lambda batch: held()(batch, training=False))
    return lambda batch: function(tf.cast(batch, tf.float32))


def _jax_inference(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """One `jax.jit` of the model's `stateless_call`, compiled once per batch shape.

    The weights are read from the model at every call, so the function sees training's
    updates; eager `model(batch)` dispatches every op from Python, several times slower.
    """
    import jax

    held = weakref.ref(model)

    def call(trainable, non_trainable, batch):
        outputs, _ = held().stateless_call(trainable, non_trainable, batch, training=False)
        return outputs

    function = jax.jit(call)

    def infer(batch: np.ndarray) -> np.ndarray:
        current = held()
        return function(
            [v.value for v in current.trainable_variables],
            [v.value for v in current.non_trainable_variables],
            np.asarray(batch, np.float32),
        )

    return infer


def _infer(model: keras.Model, images) -> np.ndarray:
    """Runs one batch through `model` in inference mode (batch norm uses its moving statistics).

    One compiled function per model (`_tensorflow_inference` under the TensorFlow backend,
    `_jax_inference` under JAX), so repeated calls (e.g. from a callback every few epochs)
    compile once per batch shape; other backends call the model eagerly.
    """
    if model not in _INFERENCE:
        backend = keras.backend.backend()
        if backend == "tensorflow":
            _INFERENCE[model] = _tensorflow_inference(model)
        elif backend == "jax":
            _INFERENCE[model] = _jax_inference(model)
        else:
            held = weakref.ref(model)
            _INFERENCE[model] = lambda batch: held()(np.asarray(batch, np.float32), training=False)
    return np.asarray(keras.ops.convert_to_numpy(_INFERENCE[model](images)), dtype=np.float32)


def extract_features(
    model: keras.Model, images: np.ndarray, *, batch_size: int = 256
) -> np.ndarray:
    """Maps in-memory images through `model`, in order, one batch at a time.

    Works for a backbone (giving features) and for a CARL model (giving prototype assignment
    probabilities; their argmax is the cluster of each image). Images are cast to float32 one
    batch at a time, so a uint8 dataset is never copied whole as float32 (CIFAR-10's 50,000
    images would take 600 MB).

    Args:
        model: Maps float images `(batch, H, W, 3)` in [0, 255] to `(batch, D)`.
        images: Images `(N, H, W, 3)`, any real dtype, values in [0, 255].
        batch_size: Images per forward pass.

    Returns:
        Outputs `(N, D)` float32, row i for image i.
    """
    batches = []
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size])
        # Pad a short last batch to the full size so the predict function is not retraced.
        padding = batch_size - len(batch)
        padded = np.concatenate([batch, np.zeros((padding, *batch.shape[1:]), batch.dtype)])
        batches.append(_infer(model, padded)[: len(batch)])
    return np.concatenate(batches, axis=0)


def extract_dataset_features(
    model: keras.Model, dataset: Iterable[tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Maps every batch of a `(images, labels)` dataset through `model` in a single pass.

    Features and labels are collected from the same pass, so they stay paired even when the
    dataset reshuffles on every iteration.

    Args:
        model: Maps float images `(batch, H, W, 3)` in [0, 255] to `(batch, D)`.
        dataset: Batches of images `(batch, H, W, 3)` and integer labels `(batch,)`, e.g. a
            batched `tf.data.Dataset` or a `carl_tf.data.LabelledArrayBatches`.

    Returns:
        Outputs `(N, D)` float32 and labels `(N,)` int64, in the order the dataset yielded them.
    """
    features, labels = [], []
    for batch_images, batch_labels in dataset:
        features.append(_infer(model, batch_images))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.concatenate(features, axis=0), np.concatenate(labels, axis=0)
