"""Online kNN evaluation during pretraining, as a Keras callback (`carl_tf.KNNMonitor`)."""

import logging

import keras

from carl_tf.evaluation.features import extract_features
from carl_tf.evaluation.knn import knn_accuracy

logger = logging.getLogger(__name__)


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN top-1 (k = 200, T = 0.1, cosine) of the backbone's features every few epochs.

    Adds `knn_top1` (percent) to the epoch's logs, after every `every` epochs and after the last.

    Args:
        bank: labelled images `(N, H, W, 3)` and labels `(N,)` whose features vote.
        queries: labelled images and labels that are classified and scored.
        every: epochs between measurements.
        epochs: the run's last epoch, always measured.
        k, temperature: the kNN's neighbours and vote temperature.
    """

    def __init__(self, bank, queries, *, every: int, epochs: int, k: int = 200, temperature=0.1):
        super().__init__()
        self.bank, self.queries = bank, queries
        self.every, self.epochs, self.k, self.temperature = every, epochs, k, temperature

    def measure(self) -> float:
        """kNN top-1 of the model's backbone as it is now, in percent."""
        bank_features = extract_features(self.model.backbone, self.bank[0])
        query_features = extract_features(self.model.backbone, self.queries[0])
        return knn_accuracy(
            bank_features,
            self.bank[1],
            query_features,
            self.queries[1],
            k=self.k,
            temperature=self.temperature,
        )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.epochs:
            logs["knn_top1"] = self.measure()
            logger.info("epoch %d: kNN top-1 %.2f%%", epoch + 1, logs["knn_top1"])
