"""The evaluation protocols of evaluate.py on one backbone: kNN, linear probe and clustering.

Figures use the units of CARL's Table 1: accuracies in percent, NMI and ARI as fractions.
"""

import dataclasses
import logging

import keras
import numpy as np

from carl_tf.errors import UsageError
from carl_tf.evaluation.clustering import clustering_scores, kmeans_scores
from carl_tf.evaluation.features import extract_features
from carl_tf.evaluation.knn import knn_accuracy
from carl_tf.evaluation.linear_eval import (
    DEFAULT_LEARNING_RATE,
    linear_probe,
    linear_probe_on_features,
)

logger = logging.getLogger(__name__)

PROTOCOLS = ("knn", "linear", "cluster")
LINEAR_MODES = ("full", "features")
# The second kNN figure, beside the configurable k (200 by default, as in Wu et al. 2018).
SMALL_K = 20


@dataclasses.dataclass(frozen=True)
class ProtocolSettings:
    """How the protocols run.

    Attributes:
        protocols: Names from `PROTOCOLS` to run.
        knn_k: Neighbours of the kNN figure `knn_top1`; `knn20_top1` always uses 20.
        knn_temperature: T of the kNN vote weight exp(similarity / T).
        linear: `full` (MoCo's protocol with crop and flip, the backbone run every step) or
            `features` (no augmentation, on features computed once).
        linear_epochs: Epochs of the linear probe.
        linear_learning_rate: Base learning rate of the linear probe.
        batch_size: Images per forward pass and per linear-probe step.
        seed: Seed of the probe's shuffling and augmentation and of k-means.
    """

    protocols: tuple[str, ...] = PROTOCOLS
    knn_k: int = 200
    knn_temperature: float = 0.1
    linear: str = "full"
    linear_epochs: int = 100
    linear_learning_rate: float = DEFAULT_LEARNING_RATE
    batch_size: int = 256
    seed: int = 0

    def applied(self, *, baseline: bool = False) -> dict:
        """The settings that shaped the figures of `protocols`, for the JSON record.

        A setting of a protocol that did not run is left out, so the record does not claim,
        say, a linear probe of 100 epochs that never happened.

        Args:
            baseline: Whether a random baseline was drawn, which uses the seed.
        """
        names = ["protocols", "batch_size"]
        if "knn" in self.protocols:
            names += ["knn_k", "knn_temperature"]
        if "linear" in self.protocols:
            names += ["linear", "linear_epochs", "linear_learning_rate"]
        # The probe's shuffling and augmentation, k-means and the baseline's weights draw from it.
        if baseline or {"linear", "cluster"} & set(self.protocols):
            names.append("seed")
        return {name: getattr(self, name) for name in names}

    def check(self) -> None:
        """Raises UsageError naming the first setting that cannot work."""
        unknown = [p for p in self.protocols if p not in PROTOCOLS]
        if unknown or not self.protocols:
            raise UsageError(
                f"unknown protocol {', '.join(map(repr, unknown)) or '(none given)'}; pass "
                f"--protocol as a comma-separated list from {', '.join(PROTOCOLS)}"
            )
        if self.linear not in LINEAR_MODES:
            raise UsageError(
                f"linear must be one of {', '.join(LINEAR_MODES)}, got {self.linear!r}"
            )
        positive = {
            "knn_k": self.knn_k,
            "knn_temperature": self.knn_temperature,
            "linear_epochs": self.linear_epochs,
            "linear_lr": self.linear_learning_rate,
            "batch_size": self.batch_size,
        }
        for name, value in positive.items():
            if not value > 0 or value == float("inf"):
                raise UsageError(f"{name} must be positive and finite, got {value}; fix --{name}")


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """The figures of one model, and its prototype of every test image when it has an assigner.

    Attributes:
        figures: Figure name -> value; None where a figure does not apply (prototype
            clustering of a model without assigner).
        assignments: Argmax prototype `(N_test,)` of each test image, or None.
    """

    figures: dict[str, float | None]
    assignments: np.ndarray | None


def prototype_clustering(
    probabilities: np.ndarray, labels: np.ndarray, num_classes: int
) -> tuple[dict[str, float], np.ndarray]:
    """Scores the argmax prototype of each image as its cluster.

    Args:
        probabilities: Assignment probabilities `(N, K)`.
        labels: Classes `(N,)`, integers in [0, num_classes).
        num_classes: Number of classes.

    Returns:
        `nmi`, `ari` and `cluster_acc` (see `clustering_scores`) and the assignments `(N,)`.
    """
    assignments = np.argmax(probabilities, axis=1)
    scores = clustering_scores(assignments, labels, probabilities.shape[1], num_classes=num_classes)
    return scores, assignments


def run_protocols(
    backbone: keras.Model,
    assigner: keras.Model | None,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    *,
    num_classes: int,
    settings: ProtocolSettings,
) -> Evaluation:
    """Runs the chosen protocols on a frozen backbone (and its assigner).

    Args:
        backbone: Maps images `(N, H, W, 3)` in [0, 255] to features `(N, D)`.
        assigner: Maps the same images to prototype probabilities `(N, K)`, or None; then the
            prototype clustering figures are None.
        train: Labelled images `(N_train, H, W, 3)`, `(N_train,)`: the kNN bank, the probe's
            training set.
        test: Labelled images `(N_test, H, W, 3)`, `(N_test,)` every figure is scored on.
        num_classes: Number of classes (k-means uses it as K).
        settings: The protocols and their settings.

    Returns:
        The figures (`knn_top1`, `knn20_top1`, `linear_top1`, `linear_top5`, `nmi`, `ari`,
        `cluster_acc`, `kmeans_nmi`, `kmeans_ari`, `kmeans_acc`, those of the protocols run)
        and the test assignments.
    """
    (train_images, train_labels), (test_images, test_labels) = train, test
    protocols = set(settings.protocols)
    fast_linear = "linear" in protocols and settings.linear == "features"
    if "knn" in protocols or fast_linear:
        logger.info("computing features of the %d training images", len(train_images))
        train_features = extract_features(backbone, train_images, batch_size=settings.batch_size)
    if protocols & {"knn", "cluster"} or fast_linear:
        test_features = extract_features(backbone, test_images, batch_size=settings.batch_size)
    figures, assignments = {}, None
    if "knn" in protocols:
        for name, k in (("knn_top1", settings.knn_k), ("knn20_top1", SMALL_K)):
            figures[name] = knn_accuracy(
                train_features,
                train_labels,
                test_features,
                test_labels,
                k=k,
                temperature=settings.knn_temperature,
                num_classes=num_classes,
            )
    if "linear" in protocols:
        logger.info("linear probe (%s), %d epochs", settings.linear, settings.linear_epochs)
        options = dict(
            num_classes=num_classes,
            epochs=settings.linear_epochs,
            learning_rate=settings.linear_learning_rate,
            batch_size=settings.batch_size,
            seed=settings.seed,
        )
        if settings.linear == "full":
            scores = linear_probe(backbone, *train, *test, **options)
        else:
            scores = linear_probe_on_features(
                train_features, train_labels, test_features, test_labels, **options
            )
        figures.update(linear_top1=scores["top1"], linear_top5=scores["top5"])
    if "cluster" in protocols:
        if assigner is None:
            figures.update(nmi=None, ari=None, cluster_acc=None)
        else:
            probabilities = extract_features(assigner, test_images, batch_size=settings.batch_size)
            scores, assignments = prototype_clustering(probabilities, test_labels, num_classes)
            figures.update(scores)
        kmeans = kmeans_scores(test_features, test_labels, num_classes, seed=settings.seed)
        figures.update(
            kmeans_nmi=kmeans["nmi"], kmeans_ari=kmeans["ari"], kmeans_acc=kmeans["cluster_acc"]
        )
    return Evaluation(figures, assignments)
