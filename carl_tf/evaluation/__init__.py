"""Evaluation of frozen representations: kNN, linear probes and clustering scores."""

from carl_tf.evaluation.clustering import cluster_accuracy, clustering_scores, kmeans_scores
from carl_tf.evaluation.features import extract_dataset_features, extract_features
from carl_tf.evaluation.knn import knn_accuracy, knn_predict
from carl_tf.evaluation.linear_eval import (
    DEFAULT_LEARNING_RATE,
    linear_probe,
    linear_probe_on_features,
    probe_learning_rate,
)
from carl_tf.evaluation.probe_augment import PadCropFlip

__all__ = [
    "DEFAULT_LEARNING_RATE",
    "PadCropFlip",
    "cluster_accuracy",
    "clustering_scores",
    "extract_dataset_features",
    "extract_features",
    "kmeans_scores",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "linear_probe_on_features",
    "probe_learning_rate",
]
