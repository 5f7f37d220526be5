"""Pretraining jobs, on top of the method, the run machinery and the online evaluation."""

from carl_tf.training.pretrain import PretrainResult, pretrain

__all__ = ["PretrainResult", "pretrain"]
