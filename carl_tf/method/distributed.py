"""Global (all-replica) sums for the parts of the objective that are not linear in the batch."""

import tensorflow as tf


def num_replicas() -> int:
    """Replicas that take part in one step under the current strategy (1 outside any)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def global_sum(x):
    """Sums `x` over the replicas of the current step; differentiable, identity on one replica.

    TensorFlow defines the gradient of an all-reduce sum as the all-reduce sum of the upstream
    gradients, so a loss built on global sums and divided by the replica count (Keras sums the
    replicas' gradients) has exactly the single-device gradient.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)
