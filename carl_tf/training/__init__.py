"""Pretraining jobs, on top of the method, the run machinery and the online evaluation.

`carl_tf.training.pretrain.pretrain` is also `carl_tf.pretrain`.
"""
