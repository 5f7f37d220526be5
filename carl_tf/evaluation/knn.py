"""Weighted k-nearest-neighbour classification of frozen features.

The classifier of Wu et al. (2018), "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", in the form solo-learn and lightly use to monitor self-supervised training: each
of the k most cosine-similar bank features votes for its class with weight exp(sim / T).

In NumPy, so it runs under every Keras backend and without TensorFlow; float32 throughout, with
`tf.math.top_k`'s choice among equally similar neighbours (the lower bank index first).
"""

import numpy as np

from carl_tf.evaluation.settings import KNN_K, KNN_TEMPERATURE

# Bytes per cell of a `(query rows, bank columns)` similarity block while it is scored: the
# float32 similarities, `np.partition`'s copy, two boolean masks and the gathered values.
_BYTES_PER_CELL = 16
# The similarity blocks' default memory (`memory_budget_mb`), whatever the bank's size.
DEFAULT_BLOCK_MB = 64.0


def block_shape(
    num_queries: int, bank_size: int, memory_budget_mb: float, max_rows: int = 512
) -> tuple[int, int]:
    """`(query rows, bank columns)` of the similarity blocks that fit in `memory_budget_mb`.

    Args:
        num_queries: N_test.
        bank_size: N_train.
        memory_budget_mb: Memory the blocks may take, in MiB.
        max_rows: Most query rows per block.

    Returns:
        Rows and columns, each at least 1: the whole bank in one block when it fits.
    """
    cells = max(1, int(memory_budget_mb * (1 << 20)) // _BYTES_PER_CELL)
    rows = max(1, min(max_rows, num_queries, cells // min(bank_size, 1024)))
    return rows, max(1, min(bank_size, cells // rows))


def knn_predict(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    *,
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    num_classes: int | None = None,
    batch_size: int = 512,
    memory_budget_mb: float = DEFAULT_BLOCK_MB,
) -> np.ndarray:
    """Predicts a class for each test feature by a similarity-weighted vote of its neighbours.

    With s_j the cosine similarity of a test feature to its j-th nearest bank feature and y_j
    that neighbour's label, the score of class c is sum_j [y_j = c] exp(s_j / T), and the
    prediction is the class of highest score (the lowest class id on a tie). Similarities are
    computed a block of test rows by a chunk of bank features at a time (`block_shape`), each
    chunk's k nearest merged into the running k nearest, so memory holds a block within
    `memory_budget_mb` whatever the bank's size (50,000 x 50,000 floats are 10 GB).

    Args:
        train_features: Bank features `(N_train, D)`.
        train_labels: Bank labels `(N_train,)`, integers in [0, num_classes).
        test_features: Query features `(N_test, D)`.
        k: Neighbours per query; clipped to N_train.
        temperature: T in exp(s / T); smaller values let the nearest neighbours dominate.
        num_classes: Number of classes; defaults to max(train_labels) + 1.
        batch_size: Most test rows per similarity block.
        memory_budget_mb: Memory the similarity blocks may take, in MiB.

    Returns:
        Predicted labels `(N_test,)` int64.
    """
    if num_classes is None:
        num_classes = int(np.max(train_labels)) + 1
    k = min(k, len(train_features))
    bank = _l2_normalize(train_features)
    labels = np.asarray(train_labels, np.int64)
    rows, columns = block_shape(len(test_features), len(bank), memory_budget_mb, batch_size)
    predictions = []
    for start in range(0, len(test_features), rows):
        queries = _l2_normalize(test_features[start : start + rows])
        similarities, indices = _nearest(queries, bank, k, columns)
        # Shifting by each row's top similarity scales all its class scores by one factor, which
        # keeps the argmax and keeps exp() finite for small T (exp(1 / 0.01) overflows float32).
        weights = np.exp(
            (similarities - similarities[:, :1]) / np.float32(temperature), dtype=np.float32
        )
        cells = np.arange(len(queries))[:, None] * num_classes + labels[indices]
        scores = np.bincount(cells.ravel(), weights.ravel(), len(queries) * num_classes)
        predictions.append(np.argmax(scores.reshape(len(queries), num_classes), axis=1))
    return np.concatenate(predictions, axis=0).astype(np.int64)


def _nearest(
    queries: np.ndarray, bank: np.ndarray, k: int, columns: int
) -> tuple[np.ndarray, np.ndarray]:
    """The k most similar bank rows of each query, `columns` bank rows at a time.

    Returns:
        Similarities `(n, k)` in descending order, equal ones by ascending bank index (the
        neighbours `tf.math.top_k` picks), and their bank indices `(n, k)`.
    """
    best = np.empty((len(queries), 0), np.float32)
    best_indices = np.empty((len(queries), 0), np.int64)
    for start in range(0, len(bank), columns):
        similarities = queries @ bank[start : start + columns].T
        chunk_k = min(k, similarities.shape[1])
        mask = _top_k_mask(similarities, chunk_k)
        # Row-major order keeps each row's chosen entries in bank order.
        values = similarities[mask].reshape(len(queries), chunk_k)
        indices = np.nonzero(mask)[1].reshape(len(queries), chunk_k) + start
        # The running best come first and are sorted with equal values by index; every index of
        # this chunk is higher. A stable sort therefore keeps the lower index first on a tie.
        values = np.concatenate([best, values], axis=1)
        indices = np.concatenate([best_indices, indices], axis=1)
        order = np.argsort(-values, axis=1, kind="stable")[:, :k]
        best = np.take_along_axis(values, order, axis=1)
        best_indices = np.take_along_axis(indices, order, axis=1)
    return best, best_indices


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
    k: int = KNN_K,
    temperature: float = KNN_TEMPERATURE,
    num_classes: int | None = None,
    batch_size: int = 512,
    memory_budget_mb: float = DEFAULT_BLOCK_MB,
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
        batch_size: Most test rows per similarity block.
        memory_budget_mb: Memory the similarity blocks may take, in MiB (`block_shape`).

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
        memory_budget_mb=memory_budget_mb,
    )
    return 100.0 * float(np.mean(predictions == np.asarray(test_labels)))
