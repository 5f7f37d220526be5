"""The evaluation protocols of evaluate.py on one backbone: kNN, linear probe and clustering.

Figures use the units of CARL's Table 1: accuracies in percent, NMI and ARI as fractions.
"""

import dataclasses
import logging

import keras
import numpy as np

from carl_tf.evaluation.clustering import clustering_scores, kmeans_scores
from carl_tf.evaluation.features import extract_features
from carl_tf.evaluation.knn import knn_accuracy
from carl_tf.evaluation.linear_eval import linear_probe, linear_probe_on_features
from carl_tf.evaluation.settings import (  # noqa: F401  (re-exported: the protocols' settings)
    DEFAULT_LEARNING_RATE,
    LINEAR_MODES,
    PROTOCOLS,
    SMALL_K,
    ProtocolSettings,
)

logger = logging.getLogger(__name__)


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
    augment: bool = True,
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
        augment: Whether the full linear protocol crops and flips the training images (see
            `carl_tf.evaluation.linear_eval.augments_images`).

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
            scores = linear_probe(backbone, *train, *test, augment=augment, **options)
        else:
            scores = linear_probe_on_features(
                train_features, train_labels, test_features, test_labels, **options
            )
        # Top-5 of five classes or fewer is 100% whatever the features: n/a (None).
        top5 = scores["top5"] if num_classes > 5 else None
        figures.update(linear_top1=scores["top1"], linear_top5=top5)
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
