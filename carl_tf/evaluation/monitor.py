"""Online kNN evaluation during pretraining, as a Keras callback (`carl_tf.KNNMonitor`).

Runs under every Keras backend; with arrays for its bank and queries it needs no TensorFlow.
"""

import keras
import numpy as np

from carl_tf.evaluation.features import extract_dataset_features, extract_features
from carl_tf.evaluation.knn import DEFAULT_BLOCK_MB, knn_accuracy
from carl_tf.evaluation.settings import KNN_K, KNN_TEMPERATURE


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN top-1 (cosine; k = 200, T = 0.1 by default) of the backbone's features every
    few epochs.

    Adds `knn_top1` (percent) to the epoch's logs after every `every` epochs and after the last
    epoch of `fit`, so `History`, CSVLogger and TensorBoard record it. Only features are held
    between measurements; a `tf.data` bank or query set is read batch by batch each time.

    Args:
        bank: Labelled images whose features vote: `(images, labels)` arrays with shapes
            `(N, H, W, 3)` in [0, 255] and `(N,)` as a tuple or list, or any other iterable of
            `(images, labels)` batches: a batched `tf.data.Dataset`, a
            `carl_tf.data.LabelledArrayBatches`.
        queries: Labelled images that are classified and scored, in the same forms.
        every: Epochs between measurements.
        k: Neighbours that vote.
        temperature: T of the vote weight exp(similarity / T).
        epochs: The run's last epoch, always measured; default: the `epochs` of `fit`.
        memory_budget_mb: Memory the vote's similarity blocks may take, in MiB; the blocks
            are sized to it whatever the bank's size (`carl_tf.evaluation.knn.block_shape`).

    Example:
        >>> monitor = carl_tf.KNNMonitor((x_train, y_train), (x_val, y_val), every=5)
        >>> model.fit(images, epochs=20, callbacks=[monitor])
    """

    def __init__(
        self,
        bank,
        queries,
        *,
        every: int = 1,
        k: int = KNN_K,
        temperature: float = KNN_TEMPERATURE,
        epochs: int | None = None,
        memory_budget_mb: float = DEFAULT_BLOCK_MB,
    ):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"every must be at least 1 epoch, got {every}")
        self.bank, self.queries = bank, queries
        self.every, self.epochs, self.k, self.temperature = int(every), epochs, k, temperature
        self.memory_budget_mb = memory_budget_mb

    def measure(self) -> float:
        """kNN top-1 of the model's backbone as it is now, in percent."""
        bank_features, bank_labels = _features(self.model.backbone, self.bank)
        query_features, query_labels = _features(self.model.backbone, self.queries)
        return knn_accuracy(
            bank_features,
            bank_labels,
            query_features,
            query_labels,
            k=self.k,
            temperature=self.temperature,
            memory_budget_mb=self.memory_budget_mb,
        )

    def on_epoch_end(self, epoch, logs=None):
        last = self.epochs if self.epochs is not None else self.params.get("epochs")
        if (epoch + 1) % self.every == 0 or epoch + 1 == last:
            # Into the logs only: Keras's progress bar, History, CSV and the epoch line show it,
            # and a line of its own would land inside the bar.
            logs["knn_top1"] = self.measure()


def _features(backbone: keras.Model, labelled) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of `(images, labels)` arrays or an iterable of such batches.

    A tuple or list is the arrays, anything else the batches: told apart without importing
    TensorFlow, which a machine with only JAX may not have.
    """
    if not isinstance(labelled, (tuple, list)):
        return extract_dataset_features(backbone, labelled)
    images, labels = labelled
    return extract_features(backbone, images), np.asarray(labels)
