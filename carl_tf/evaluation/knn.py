"""Weighted k-nearest-neighbour classification of frozen features.

The classifier of Wu et al. (2018), "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", in the form solo-learn and lightly use to monitor self-supervised training: each
of the k most cosine-similar bank features votes for its class with weight exp(sim / T).
"""

import numpy as np
import tensorflow as tf


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
    bank = tf.math.l2_normalize(tf.convert_to_tensor(train_features, tf.float32), axis=1)
    bank_labels = tf.convert_to_tensor(train_labels, tf.int64)
    predictions = []
    for start in range(0, len(test_features), batch_size):
        queries = tf.convert_to_tensor(test_features[start : start + batch_size], tf.float32)
        queries = tf.math.l2_normalize(queries, axis=1)
        similarities, indices = tf.math.top_k(tf.matmul(queries, bank, transpose_b=True), k=k)
        # Shifting by each row's top similarity scales all its class scores by one factor, which
        # keeps the argmax and keeps exp() finite for small T (exp(1 / 0.01) overflows float32).
        weights = tf.exp((similarities - similarities[:, :1]) / temperature)
        votes = tf.one_hot(tf.gather(bank_labels, indices), num_classes)
        scores = tf.einsum("nk,nkc->nc", weights, votes)
        predictions.append(tf.argmax(scores, axis=1).numpy())
    return np.concatenate(predictions, axis=0)


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
