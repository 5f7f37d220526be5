"""Weighted k-nearest-neighbour classification of frozen features.

The classifier of Wu et al. (2018), "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", in the form solo-learn and lightly use to monitor self-supervised training: each
of the k most cosine-similar bank features votes for its class with weight exp(sim / T).

In NumPy, so it runs under every Keras backend and without TensorFlow; float32 throughout, with
`tf.math.top_k`'s choice among equally similar neighbours (the lower bank index first).
"""

import numpy as np


def knn_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """Predicts a class for each test feature by a similarity-weighted vote of its neighbours.

    With s_j the cosine similarity of a test feature to its j-th nearest bank feature and y_j
    that neighbour's label, the score of class c is sum_j [y_j = c] exp(s_j / T), and the
    prediction is the class of highest score (the lowest class id on a tie). Test rows are
    processed `batch_size` at a time, so memory holds a `(batch_size, N_train)` similarity block
    rather than the full matrix (50,000 x 50,000 floats are 10 GB).

    Args:
        train_features: Bank features `(N_train, D)`.
        train_labels: Bank labels `(N_train,)`, integers in [0, num_classes).
        test_features: Query features `(N_test, D)`.
        k: Neighbours per query; clipped to N_train.
        temperature: T in exp(s / T); smaller values let the nearest neighbours dominate.
        num_classes: Number of classes; defaults to max(train_labels) + 1.
        batch_size: Test rows per similarity block.

    Returns:
        Predicted labels `(N_test,)` int64.
    """
    if num_classes is None:
        num_classes = int(np.max(train_labels)) + 1
    k = min(k, len(train_features))
    bank = _l2_normalize(train_features)
    # (N_train, num_classes): the one-hot vote of every bank feature.
    votes = np.eye(num_classes, dtype=np.float32)[np.asarray(train_labels, np.int64)]
    predictions = []
    for start in range(0, len(test_features), batch_size):
        similarities = _l2_normalize(test_features[start : start + batch_size]) @ bank.T
        neighbours = _top_k_mask(similarities, k)
        # Shifting by each row's top similarity scales all its class scores by one factor, which
        # keeps the argmax and keeps exp() finite for small T (exp(1 / 0.01) overflows float32).
        top = similarities.max(axis=1, keepdims=True)
        weights = np.exp((similarities - top) / np.float32(temperature), dtype=np.float32)
        scores = np.where(neighbours, weights, np.float32(0)) @ votes
        predictions.append(np.argmax(scores, axis=1))
    return np.concatenate(predictions, axis=0).astype(np.int64)


def _l2_normalize(features: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length in float32; a zero row stays zero (as tf.math.l2_normalize)."""
    features = np.asarray(features, np.float32)
    squares = np.sum(features * features, axis=1, keepdims=True)
    return features / np.sqrt(np.maximum(squares, np.float32(1e-12)))


def _top_k_mask(similarities: np.ndarray, k: int) -> np.ndarray:
    """`(n, N)` bool: each row's k largest entries, ties at the k-th value to the lowest indices.

    The neighbours `tf.math.top_k` picks, found in O(N) per row (`np.partition`) rather than by
    sorting the whole row.
    """
    count = similarities.shape[1]
    kth = np.partition(similarities, count - k, axis=1)[:, count - k : count - k + 1]
    chosen = similarities > kth
    at_kth = similarities == kth
    # Rows where more entries equal the k-th value than places are left: the first ones win.
    missing = k - chosen.sum(axis=1)
    tied = np.flatnonzero(at_kth.sum(axis=1) > missing)
    if len(tied):
        at_kth[tied] &= np.cumsum(at_kth[tied], axis=1, dtype=np.int32) <= missing[tied, None]
    return chosen | at_kth


def knn_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    *,
    k: int = 200,
    temperature: float = 0.1,
    num_classes: int | None = None,
    batch_size: int = 512,
) -> float:
    """Top-1 accuracy of `knn_predict` on labelled test features.

    Args:
        train_features: Bank features `(N_train, D)`.
        train_labels: Bank labels `(N_train,)`.
        test_features: Query features `(N_test, D)`.
        test_labels: Query labels `(N_test,)`.
        k: Neighbours per query; clipped to N_train.
        temperature: T in the vote weight exp(s / T).
        num_classes: Number of classes; defaults to max(train_labels) + 1.
        batch_size: Test rows per similarity block.

    Returns:
        Accuracy in percent.
    """
    predictions = knn_predict(
        train_features,
        train_labels,
        test_features,
        k=k,
        temperature=temperature,
        num_classes=num_classes,
        batch_size=batch_size,
    )
    return 100.0 * float(np.mean(predictions == np.asarray(test_labels)))
