"""Tests of carl_tf.evaluation: feature extraction, kNN, clustering scores and linear probes."""

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from carl_tf.evaluation import linear_eval
from carl_tf.evaluation.clustering import cluster_accuracy, clustering_scores, kmeans_scores
from carl_tf.evaluation.features import extract_dataset_features, extract_features
from carl_tf.evaluation.knn import block_shape, knn_accuracy, knn_predict
from carl_tf.evaluation.linear_eval import (
    linear_probe,
    linear_probe_on_features,
    probe_learning_rate,
)
from carl_tf.evaluation.probe_augment import PadCropFlip


def _mean_colour_model() -> keras.Model:
    """(N, H, W, 3) -> (N, 3) mean colour; the dropout would randomise it if run in training mode."""
    inputs = keras.Input((4, 4, 3))
    outputs = keras.layers.Dropout(0.5)(keras.layers.GlobalAveragePooling2D()(inputs))
    return keras.Model(inputs, outputs)


def _constant_images(values: np.ndarray) -> np.ndarray:
    """Images (N, 4, 4, 3) uint8 with every pixel of image i equal to values[i]."""
    return np.broadcast_to(values[:, None, None, None], (len(values), 4, 4, 3)).astype(np.uint8)


def test_extract_features_keeps_order_across_partial_batches():
    values = np.arange(10) * 20
    features = extract_features(_mean_colour_model(), _constant_images(values), batch_size=4)

    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, np.repeat(values[:, None], 3, axis=1))


def test_extract_dataset_features_pairs_features_with_labels():
    values = np.arange(10) * 20
    dataset = tf.data.Dataset.from_tensor_slices((_constant_images(values), values // 20)).batch(4)

    features, labels = extract_dataset_features(_mean_colour_model(), dataset)

    np.testing.assert_array_equal(features, np.repeat(values[:, None], 3, axis=1))
    np.testing.assert_array_equal(labels, np.arange(10))


# Bank on the unit circle: a = (1, 0) of class 0, then b, c, d of class 1. For the query (1, 0)
# the similarities are 1, 0.8, 0.6, 0.
_BANK = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8], [0.0, 1.0]], np.float32)
_BANK_LABELS = np.array([0, 1, 1, 1])


def test_knn_weighted_vote_matches_hand_computation():
    # Scaled bank rows and queries check the L2 normalisation. With k=3, T=0.1:
    # (2, 0): class 0 scores e^10 = 22026 > class 1 e^8 + e^6 = 3384 -> 0, despite 2 of 3 votes
    #   being class 1 (labelled 0: right).
    # (0, -3): similarities 0, -0.6, -0.8: class 0 e^0 = 1 > class 1 e^-6 + e^-8 -> 0
    #   (labelled 1: wrong).
    # (0.6, 0.8): neighbours c, b, d, all class 1 -> 1 (labelled 1: right).
    queries = np.array([[2.0, 0.0], [0.0, -3.0], [0.6, 0.8]], np.float32)
    labels = np.array([0, 1, 1])
    bank = _BANK * np.array([[1.0], [3.0], [0.5], [2.0]], np.float32)

    predictions = knn_predict(bank, _BANK_LABELS, queries, k=3, temperature=0.1)
    accuracy = knn_accuracy(bank, _BANK_LABELS, queries, labels, k=3, temperature=0.1)

    np.testing.assert_array_equal(predictions, [0, 0, 1])
    assert accuracy == pytest.approx(200.0 / 3.0)


def test_knn_temperature_changes_the_vote():
    # With T=1 the weights flatten: class 0 e^1 = 2.718 < class 1 e^0.8 + e^0.6 = 4.048.
    query = np.array([[1.0, 0.0]], np.float32)

    sharp = knn_predict(_BANK, _BANK_LABELS, query, k=3, temperature=0.1)
    flat = knn_predict(_BANK, _BANK_LABELS, query, k=3, temperature=1.0)

    np.testing.assert_array_equal(sharp, [0])
    np.testing.assert_array_equal(flat, [1])


def test_knn_clips_k_to_the_bank_size():
    # With all 4 neighbours at T=0.1: (1, 0) gives class 0 e^10 > class 1 e^8 + e^6 + e^0;
    # (0, 1) is nearest to d, c, b of class 1 (e^10 + e^8 + e^6 > e^0).
    queries = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)

    clipped = knn_predict(_BANK, _BANK_LABELS, queries, k=200, temperature=0.1)
    whole_bank = knn_predict(_BANK, _BANK_LABELS, queries, k=4, temperature=0.1)

    np.testing.assert_array_equal(clipped, whole_bank)
    np.testing.assert_array_equal(clipped, [0, 1])


def _brute_force_knn(bank, bank_labels, queries, k, temperature, num_classes):
    """Direct transcription of the weighted vote, one query at a time."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    predictions = []
    for query in queries:
        similarities = bank @ (query / np.linalg.norm(query))
        nearest = np.argsort(-similarities)[:k]
        scores = np.zeros(num_classes)
        for j in nearest:
            scores[bank_labels[j]] += np.exp(similarities[j] / temperature)
        predictions.append(np.argmax(scores))
    return np.array(predictions)


def test_knn_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    bank = rng.normal(size=(300, 16)).astype(np.float32)
    bank_labels = rng.integers(0, 5, 300)
    queries = rng.normal(size=(100, 16)).astype(np.float32)

    # batch_size=32 leaves a partial last block of 4 queries.
    predictions = knn_predict(bank, bank_labels, queries, k=20, temperature=0.1, batch_size=32)

    expected = _brute_force_knn(bank, bank_labels, queries, 20, 0.1, 5)
    np.testing.assert_array_equal(predictions, expected)


def test_clustering_scores_match_scikit_learn():
    labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    assignments = np.array([0, 0, 1, 1, 1, 2, 2, 2, 0])

    scores = clustering_scores(assignments, labels, num_clusters=3)

    assert scores["nmi"] == normalized_mutual_info_score(labels, assignments)
    assert scores["ari"] == adjusted_rand_score(labels, assignments)
    # Each cluster holds 2 of its diagonal class: 6 of 9.
    assert scores["cluster_acc"] == pytest.approx(200.0 / 3.0)


def test_permuted_perfect_clustering_scores_perfectly():
    labels = np.array([0, 0, 1, 1, 2, 2])
    assignments = np.array([2, 2, 0, 0, 1, 1])

    scores = clustering_scores(assignments, labels, num_clusters=3)

    assert scores == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "cluster_acc": 100.0}


def test_cluster_accuracy_is_one_to_one_when_k_equals_classes():
    # Counts (cluster x class): [[2, 0, 0], [2, 1, 0], [0, 1, 2]]. Majority vote would map
    # clusters 0 and 1 both to class 0 (6 of 8); one-to-one the best is 2 + 1 + 2 = 5 of 8.
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    assignments = np.array([0, 0, 1, 1, 1, 2, 2, 2])

    assert cluster_accuracy(assignments, labels, num_clusters=3) == 62.5


def test_cluster_accuracy_chooses_by_k_not_by_clusters_used():
    # K = 3 = classes, but only clusters 0 = {0, 0, 1} and 1 = {0, 0, 2} are used. One-to-one
    # gives 2 + 1 = 3 of 6; majority vote (as if K were 2) would give 4 of 6.
    labels = np.array([0, 0, 1, 0, 0, 2])
    assignments = np.array([0, 0, 0, 1, 1, 1])

    assert cluster_accuracy(assignments, labels, num_clusters=3) == 50.0


def test_cluster_accuracy_majority_vote_when_k_exceeds_classes():
    # K = 4 > 2 classes. Clusters {0, 0}, {0, 1}, {1, 1}, {1, 0} get majorities 2 + 1 + 2 + 1.
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    assignments = np.array([0, 0, 1, 1, 2, 2, 3, 3])

    assert cluster_accuracy(assignments, labels, num_clusters=4) == 75.0


def test_cluster_accuracy_rejects_ids_outside_k():
    with pytest.raises(ValueError, match="Cluster ids"):
        cluster_accuracy(np.array([0, 3]), np.array([0, 1]), num_clusters=3)


def test_kmeans_scores_recover_separated_directions():
    # Three classes along three axes at different norms: only their directions group them.
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    scales = rng.uniform(0.5, 5.0, size=(60, 1))
    features = scales * (np.eye(3)[labels] + 0.05 * rng.normal(size=(60, 3)))

    scores = kmeans_scores(features, labels, num_classes=3)

    assert scores == {"nmi": pytest.approx(1.0), "ari": pytest.approx(1.0), "cluster_acc": 100.0}


@pytest.mark.parametrize(
    "epoch, expected",
    [(0, 1.0), (59, 1.0), (60, 0.1), (79, 0.1), (80, 0.01), (99, 0.01)],
)
def test_probe_learning_rate_drops_at_60_and_80_percent(epoch, expected):
    rate = probe_learning_rate(epoch, base_learning_rate=1.0, epochs=100)

    assert rate == pytest.approx(expected, rel=1e-12)


def test_probe_learning_rate_milestones_scale_with_epochs():
    rates = [probe_learning_rate(e, base_learning_rate=1.0, epochs=10) for e in range(10)]

    np.testing.assert_allclose(rates, [1.0] * 6 + [0.1] * 2 + [0.01] * 2, rtol=1e-12)


def test_linear_probe_on_features_separates_blobs(monkeypatch):
    rng = np.random.default_rng(0)
    centres = 3.0 * rng.normal(size=(4, 32))
    labels = rng.integers(0, 4, 600)
    features = (centres[labels] + rng.normal(size=(600, 32))).astype(np.float32)
    epochs_seen = []

    def spy(epoch, **kwargs):
        epochs_seen.append(epoch)
        return probe_learning_rate(epoch, **kwargs)

    monkeypatch.setattr(linear_eval, "probe_learning_rate", spy)
    scores = linear_probe_on_features(
        features[:400], labels[:400], features[400:], labels[400:], num_classes=4, epochs=5
    )

    assert scores["top1"] >= 99.0
    assert scores["top5"] == 100.0  # Top-4 of 4 classes.
    assert epochs_seen == list(range(5))


def test_pad_crop_flip_takes_a_crop_of_the_reflected_image():
    images = np.random.default_rng(0).uniform(0, 255, size=(8, 8, 8, 3)).astype(np.float32)
    layer = PadCropFlip(padding=2, seed=0)

    augmented = layer(images, training=True).numpy()

    padded = np.pad(images, [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    for image, crop in zip(padded, augmented):
        candidates = [
            image[dy : dy + 8, dx : dx + 8][:, :: -1 if flip else 1]
            for dy, dx, flip in itertools.product(range(5), range(5), (False, True))
        ]
        assert any(np.array_equal(crop, c) for c in candidates)
    np.testing.assert_array_equal(layer(images, training=False), images)


def _tiny_backbone() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def test_linear_probe_keeps_the_backbone_frozen():
    keras.utils.set_random_seed(0)
    backbone = _tiny_backbone()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(48, 16, 16, 3)).astype(np.uint8)
    labels = rng.integers(0, 3, 48)
    before = [w.copy() for w in backbone.get_weights()]

    scores = linear_probe(
        backbone,
        images[:32],
        labels[:32],
        images[32:],
        labels[32:],
        num_classes=3,
        epochs=2,
        batch_size=16,
    )

    assert set(scores) == {"top1", "top5"}
    assert all(math.isfinite(v) and 0.0 <= v <= 100.0 for v in scores.values())
    # get_weights includes the batch-norm moving statistics, which training mode would update.
    for old, new in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(old, new)
    assert backbone.trainable and len(backbone.trainable_weights) == 4


def test_feature_extraction_does_not_keep_the_model_alive():
    """The traced inference function of a model is dropped with the model (no leak per run)."""
    import gc
    import weakref

    from carl_tf.evaluation import features
    from carl_tf.method.backbones import build_backbone

    backbone = build_backbone("resnet18", width=4, image_size=16)
    first = features.extract_features(backbone, np.zeros((3, 16, 16, 3), np.uint8), batch_size=4)
    again = features.extract_features(backbone, np.zeros((3, 16, 16, 3), np.uint8), batch_size=4)
    np.testing.assert_array_equal(first, again)
    alive = weakref.ref(backbone)
    del backbone
    gc.collect()
    assert alive() is None


def _tensorflow_knn(bank, bank_labels, queries, k, temperature, num_classes):
    """The TensorFlow computation `knn_predict` had before it moved to NumPy (tf.math.top_k)."""
    bank = tf.math.l2_normalize(tf.convert_to_tensor(bank, tf.float32), axis=1)
    queries = tf.math.l2_normalize(tf.convert_to_tensor(queries, tf.float32), axis=1)
    similarities, indices = tf.math.top_k(tf.matmul(queries, bank, transpose_b=True), k=k)
    weights = tf.exp((similarities - similarities[:, :1]) / temperature)
    votes = tf.one_hot(tf.gather(tf.convert_to_tensor(bank_labels, tf.int64), indices), num_classes)
    return tf.argmax(tf.einsum("nk,nkc->nc", weights, votes), axis=1).numpy()


def _stable_brute_force_knn(bank, bank_labels, queries, k, temperature, num_classes):
    """`_brute_force_knn` with ties among neighbours going to the lower bank index."""
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    predictions = []
    for query in queries:
        similarities = (bank @ (query / np.linalg.norm(query))).astype(np.float32)
        nearest = np.argsort(-similarities, kind="stable")[:k]
        scores = np.zeros(num_classes)
        for j in nearest:
            scores[bank_labels[j]] += np.exp((similarities[j] - similarities.max()) / temperature)
        predictions.append(np.argmax(scores))
    return np.array(predictions)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
def test_knn_matches_tensorflow_and_brute_force_with_many_ties(temperature):
    # 400 bank features and 150 queries drawn from 6 unit vectors: many neighbours are equally
    # similar, also at the k-th place, so which of them count decides the vote. The dot
    # product of two different vectors among these has one non-zero term, so equal
    # similarities are equal floats in every implementation (sums of several rounded terms
    # could differ in the last bit between NumPy's and TensorFlow's matrix products).
    rng = np.random.default_rng(1)
    directions = np.array(
        [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0], [0, 0.6, 0.8], [0.8, 0, 0.6]], np.float32
    )
    bank = directions[rng.integers(0, 6, 400)]
    bank_labels = rng.integers(0, 6, 400)
    queries = directions[rng.integers(0, 6, 150)]
    for k in (1, 7, 50, 400):
        predictions = knn_predict(
            bank, bank_labels, queries, k=k, temperature=temperature, batch_size=64
        )
        expected = _tensorflow_knn(bank, bank_labels, queries, k, temperature, 6)
        np.testing.assert_array_equal(predictions, expected, err_msg=f"k={k}")
        brute = _stable_brute_force_knn(bank, bank_labels, queries, k, temperature, 6)
        np.testing.assert_array_equal(predictions, brute, err_msg=f"k={k}")


def test_knn_breaks_neighbour_ties_by_bank_index_and_score_ties_by_class():
    # Two identical bank features of classes 1 and 0: with k=1 the first (class 1) is the
    # neighbour; with k=2 both vote e^0 and the tied scores go to the lower class, 0.
    bank = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], np.float32)
    labels = np.array([1, 0, 2])
    query = np.array([[1.0, 0.0]], np.float32)

    assert knn_predict(bank, labels, query, k=1)[0] == 1
    assert knn_predict(bank, labels, query, k=2)[0] == 0


def test_knn_on_random_features_matches_tensorflow():
    rng = np.random.default_rng(2)
    bank = rng.normal(size=(1000, 32)).astype(np.float32)
    bank_labels = rng.integers(0, 10, 1000)
    queries = rng.normal(size=(300, 32)).astype(np.float32)

    predictions = knn_predict(bank, bank_labels, queries, k=200, temperature=0.1)

    expected = _tensorflow_knn(bank, bank_labels, queries, 200, 0.1, 10)
    np.testing.assert_array_equal(predictions, expected)
    assert predictions.dtype == np.int64
    # 0.01 MiB: blocks of 1 query by 655 bank rows, the k nearest merged over two chunks.
    assert block_shape(300, 1000, 0.01) == (1, 655)
    chunked = knn_predict(bank, bank_labels, queries, k=200, memory_budget_mb=0.01)
    np.testing.assert_array_equal(chunked, predictions)


def test_ties_across_bank_chunks_go_to_the_lower_bank_index():
    # Axis-aligned unit vectors: every similarity is exactly 0 or 1 whatever the matrix
    # product's blocking (a sum of rounded terms could differ in the last bit between blocks
    # of other shapes), so the neighbours chosen among the many equal ones decide the vote.
    rng = np.random.default_rng(5)
    bank = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 400)]
    bank_labels = rng.integers(0, 6, 400)
    queries = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 150)]
    assert block_shape(150, 400, 0.005) == (1, 327)  # two bank chunks
    for k in (1, 7, 50, 400):
        whole = knn_predict(bank, bank_labels, queries, k=k)
        chunked = knn_predict(bank, bank_labels, queries, k=k, memory_budget_mb=0.005)
        np.testing.assert_array_equal(chunked, whole, err_msg=f"k={k}")
        brute = _stable_brute_force_knn(bank, bank_labels, queries, k, 0.1, 6)
        np.testing.assert_array_equal(whole, brute, err_msg=f"k={k}")


def test_the_knn_block_shrinks_with_the_budget():
    budgets = (64, 16, 4, 1)
    shapes = [block_shape(512, 40_000, budget) for budget in budgets]
    assert shapes == [(512, 8192), (512, 2048), (256, 1024), (64, 1024)]
    assert all(rows * cols * 16 <= mb * (1 << 20) for (rows, cols), mb in zip(shapes, budgets))
    assert block_shape(300, 1000, 1024) == (300, 1000)  # one block: the unblocked computation


def test_knn_peak_memory_does_not_grow_with_the_bank():
    """With a 16 MiB budget a 40k bank peaked 334 MB above a 4k one; now the difference is the
    bank's own normalized copy."""
    import tracemalloc

    rng = np.random.default_rng(4)
    queries = rng.normal(size=(512, 16)).astype(np.float32)
    peaks = {}
    for size in (4_000, 40_000):
        bank = rng.normal(size=(size, 16)).astype(np.float32)
        labels = rng.integers(0, 10, size)
        tracemalloc.start()
        knn_predict(bank, labels, queries, k=200, memory_budget_mb=16)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    bank_copy = 40_000 * 16 * 4
    assert peaks[40_000] - peaks[4_000] < 2 * bank_copy, peaks
