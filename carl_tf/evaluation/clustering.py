"""Agreement between cluster assignments and class labels: NMI, ARI and cluster accuracy.

Units: `cluster_acc` is in percent, like the accuracies of CARL's Table 1; `nmi` and `ari` are the
conventional fractions (NMI in [0, 1], ARI in [-0.5, 1] with 0 for chance).
"""

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _contingency(
    assignments: np.ndarray, labels: np.ndarray, num_clusters: int, num_classes: int
) -> np.ndarray:
    """Counts `(num_clusters, num_classes)`: entry (k, c) is how many class-c items sit in cluster k."""
    if assignments.min() < 0 or assignments.max() >= num_clusters:
        raise ValueError(f"Cluster ids must lie in [0, {num_clusters}).")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"Labels must lie in [0, {num_classes}).")
    flat = assignments * num_classes + labels
    return np.bincount(flat, minlength=num_clusters * num_classes).reshape(num_clusters, -1)


def cluster_accuracy(
    assignments: np.ndarray,
    labels: np.ndarray,
    num_clusters: int,
    *,
    num_classes: int | None = None,
) -> float:
    """Accuracy of the best mapping from clusters to classes.

    With as many clusters as classes the mapping is one-to-one, found by the Hungarian algorithm.
    With any other K a one-to-one mapping does not exist, so each cluster maps to its most
    frequent class (majority vote). The choice depends on K, not on how many clusters happen to be
    used, so a model that leaves prototypes empty is still scored one-to-one.

    Args:
        assignments: Cluster id of each item `(N,)`, integers in [0, num_clusters).
        labels: Class of each item `(N,)`, integers in [0, num_classes).
        num_clusters: K, the number of clusters (prototypes) the model could assign to.
        num_classes: Number of classes C; defaults to max(labels) + 1.

    Returns:
        Accuracy in percent.

    Raises:
        ValueError: If a cluster id or label lies outside its range.
    """
    assignments = np.asarray(assignments, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    counts = _contingency(assignments, labels, num_clusters, num_classes)
    if num_clusters == num_classes:
        rows, cols = linear_sum_assignment(counts, maximize=True)
        correct = counts[rows, cols].sum()
    else:
        correct = counts.max(axis=1).sum()
    return 100.0 * float(correct) / len(labels)


def chance_cluster_accuracy(
    assignments: np.ndarray,
    labels: np.ndarray,
    num_clusters: int,
    *,
    num_classes: int | None = None,
    shuffles: int = 20,
    seed: int = 0,
) -> float:
    """`cluster_accuracy` of the same clusters with the labels shuffled: what chance scores.

    Majority vote rewards small clusters: when each cluster holds an image or two, its majority
    class is right by construction, whatever the clusters mean. The mean over `shuffles`
    seeded permutations of the labels is that floor for these cluster sizes.

    Returns:
        Accuracy in percent.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    rng = np.random.default_rng(seed)
    scores = [
        cluster_accuracy(
            assignments, rng.permutation(labels), num_clusters, num_classes=num_classes
        )
        for _ in range(shuffles)
    ]
    return float(np.mean(scores))


def clustering_scores(
    assignments: np.ndarray,
    labels: np.ndarray,
    num_clusters: int,
    *,
    num_classes: int | None = None,
) -> dict[str, float]:
    """NMI, ARI and cluster accuracy of cluster assignments against class labels.

    For a CARL model, the assignments are the argmax prototype of each test image.

    Args:
        assignments: Cluster id of each item `(N,)`, integers in [0, num_clusters).
        labels: Class of each item `(N,)`, integers in [0, num_classes).
        num_clusters: K, the number of clusters (prototypes) the model could assign to.
        num_classes: Number of classes C; defaults to max(labels) + 1.

    Returns:
        `nmi` (fraction, arithmetic-mean normalisation), `ari` (fraction) and `cluster_acc`
        (percent, see `cluster_accuracy`).
    """
    return {
        "nmi": float(normalized_mutual_info_score(labels, assignments)),
        "ari": float(adjusted_rand_score(labels, assignments)),
        "cluster_acc": cluster_accuracy(assignments, labels, num_clusters, num_classes=num_classes),
    }


def kmeans_scores(
    features: np.ndarray, labels: np.ndarray, num_classes: int, *, seed: int = 0
) -> dict[str, float]:
    """Clusters features with k-means (K = number of classes) and scores the clusters.

    Features are L2-normalised first, so Euclidean k-means ranks points by cosine similarity,
    the geometry the kNN monitor and CARL's prototypes use.

    Args:
        features: Features `(N, D)`.
        labels: Class of each item `(N,)`, integers in [0, num_classes).
        num_classes: Number of classes, used as K.
        seed: Seed of the k-means++ initialisation.

    Returns:
        The scores of `clustering_scores` for the k-means clusters.
    """
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    # The floor keeps an all-zero feature (e.g. a dead ReLU output) at zero instead of NaN.
    unit = features / np.maximum(norms, 1e-12)
    assignments = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit_predict(unit)
    return clustering_scores(assignments, labels, num_classes, num_classes=num_classes)
