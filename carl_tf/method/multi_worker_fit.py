"""`fit` under MultiWorkerMirroredStrategy, which Keras 3's TensorFlow trainer breaks in two places.

Upstream: keras-team/keras#20585 and tensorflow/tensorflow#72388. `MultiWorkerFit` overrides two
private hooks of `keras/src/backend/tensorflow/trainer.py` (checked against Keras 3.15); it
changes nothing under the other strategies. This module checks at import that the installed
Keras still has those hooks, so a Keras that renamed them fails with one clear error instead of
multi-worker training silently running without the fix. tests/test_multi_worker.py trains with
two loopback workers through it.
"""

import keras
from keras import ops, tree

from carl_tf.errors import CarlError

_keras_tf_trainer = None
if keras.backend.backend() == "tensorflow":  # the module imports TensorFlow
    try:
        from keras.src.backend.tensorflow import trainer as _keras_tf_trainer
    except ImportError:  # a Keras without this module: _check_hooks says so
        pass

_HOOKS = ("_maybe_symbolic_build", "_make_function")


def _check_hooks() -> None:
    """Raises CarlError when the TensorFlow trainer lacks a hook this module overrides."""
    if keras.backend.backend() != "tensorflow":
        return
    trainer = getattr(_keras_tf_trainer, "TensorFlowTrainer", None)
    missing = [name for name in _HOOKS if not callable(getattr(trainer, name, None))]
    if missing or not hasattr(_keras_tf_trainer, "_collective_all_reduce_multi_worker"):
        raise CarlError(
            f"Keras {keras.__version__} lacks the private trainer hooks carl_tf's multi-worker fix "
            f"overrides ({', '.join(missing) or '_collective_all_reduce_multi_worker'}); install "
            "the Keras version pyproject.toml names (keras-team/keras#20585)"
        )


_check_hooks()


class MultiWorkerFit:
    """Mixin for a `keras.Model`: makes `fit` work under MultiWorkerMirroredStrategy."""

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Builds from one local replica's batch instead of a cross-replica mean of a batch.

        Keras MEAN-reduces the first distributed batch eagerly just to learn its shapes, which
        MultiWorkerMirroredStrategy cannot do with a `PerReplica`; one replica's batch has the
        same shapes and dtypes (the per-replica ones, as the reduced batch had) and needs no
        communication.
        """
        if iterator is not None and self._distribute_strategy is not None:
            local = self.distribute_strategy.experimental_local_results
            for _, _, batches in iterator:
                data_batch = tree.map_structure(lambda v: local(v)[0], next(batches))
                break
            iterator = None
        super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def _make_function(self, step_function):
        """Makes the step's logs shape (1,) under multi-worker, so Keras's reduction works.

        Across workers Keras reduces every log with `strategy.reduce("MEAN", v, axis=0)`, which
        rejects scalars. On (1,) it is the mean over replicas: every replica holds the same
        global figures, so the result is that scalar.
        """
        if _keras_tf_trainer._collective_all_reduce_multi_worker(self.distribute_strategy):
            local_step = step_function

            def step_function(data):
                return tree.map_structure(lambda v: ops.reshape(v, (1,)), local_step(data))

        return super()._make_function(step_function)
