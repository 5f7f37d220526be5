"""Global (all-replica) sums and gathers for the parts of an objective that are not linear in the
batch.

Under TensorFlow a `tf.distribute` strategy runs one copy of the step per replica on its share
of the batch, so a batch sum needs an all-reduce. Under JAX, Keras's trainer runs one program on
the global batch (`keras.distribution.DataParallel` shards it over the devices and XLA inserts
the collectives), so every batch sum is already global and these functions are the identity.
"""

import keras


def _tensorflow_replica_context():
    """The current `tf.distribute` replica context, or None outside one or under another backend."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf  # only under the TensorFlow backend

    return tf.distribute.get_replica_context()


def num_replicas() -> int:
    """Replicas that take part in one step under the current strategy (1 outside any).

    Under JAX always 1: the step's loss is the global batch's, and its gradient is not summed
    over copies.
    """
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_id():
    """This replica's index in the step (0 outside a strategy and under JAX).

    Random draws folded with it differ between replicas whose generator state is mirrored.
    """
    context = _tensorflow_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


def global_sum(x):
    """Sums `x` over the replicas of the current step; differentiable, identity on one replica.

    TensorFlow defines the gradient of an all-reduce sum as the all-reduce sum of the upstream
    gradients, so a loss built on global sums and divided by the replica count (Keras sums the
    replicas' gradients) has exactly the single-device gradient.
    """
    context = _tensorflow_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    import tensorflow as tf

    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def gather(x):
    """`x` `(n, ...)` of every replica of the step, concatenated in replica order `(N, ...)`.

    Identity on one replica and under JAX. The gradient of `all_gather` is the sum over
    replicas of the upstream gradients, cut to this replica's rows: a global loss on gathered
    rows, divided by the replica count, has the single-device gradient (as for `global_sum`).
    """
    context = _tensorflow_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return x
    return context.all_gather(x, axis=0)
