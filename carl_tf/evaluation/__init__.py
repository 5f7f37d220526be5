"""Evaluation of frozen representations: kNN, linear probes, clustering, reports and plots.

`carl_tf.evaluation.evaluate.evaluate` (also `carl_tf.evaluate`) runs them on a model or run.
"""
