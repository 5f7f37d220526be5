"""The train, test and predict steps of every method, one mixin per Keras backend.

A method's objective (`_objective`, e.g. `CARL._objective`) and the views
(`carl_tf.method.base.TwoViewModel._views`) are written once in `keras.ops`; only the step around
them differs between backends, as Keras's own trainers do:

* TensorFlow traces the step per replica: gradients come from a `tf.GradientTape` and Keras
  sums them over replicas, so the replica's loss is the global one divided by the replica count.
* JAX runs one pure function on the global batch: the step maps the model's state (trainable,
  non-trainable, optimizer and metric variables) to new state, through `keras.StatelessScope`,
  and `jax.value_and_grad` differentiates the global loss itself. Under
  `keras.distribution.DataParallel` the batch is sharded over the devices and XLA makes every
  batch sum (eq. 6, the BatchNorm moments) global.

`steps_for_backend()` picks the mixin of the running backend.
"""

import keras

from carl_tf.method import distributed
from carl_tf.method.inputs import split_batch

SUPPORTED_BACKENDS = ("tensorflow", "jax")


class TensorFlowSteps:
    """`train_step`/`test_step`/`predict_step(data)` for Keras's TensorFlow trainer."""

    def train_step(self, data):
        import tensorflow as tf  # this mixin only runs under the TensorFlow backend

        view_a, view_b, small_views = self._views(data)
        with tf.GradientTape() as tape:
            figures = self._objective(view_a, view_b, training=True, small_views=small_views)
            self._observe(figures)
            # Keras sums the replicas' gradients; every replica holds the same global loss.
            replica_loss = figures["loss"] / distributed.num_replicas()
            scaled_loss = self.optimizer.scale_loss(replica_loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        self._after_apply()
        return self._update_trackers(figures)

    def test_step(self, data):
        return self._update_trackers(self._test_figures(data))

    def predict_step(self, data):
        return self(split_batch(data).first_images, training=False)


class JaxSteps:
    """`train_step`/`test_step`/`predict_step(state, data)` for Keras's JAX trainer.

    The state is the tuple of value lists Keras's JAX trainer passes (trainable, non-trainable,
    optimizer, metrics); every step returns the new one. The non-trainable values hold the
    BatchNorm moving statistics and the views' seed-generator state (for CARL also lambda_e,
    and the partitions' seed-generator state with `prototype_block_size`). This step does not
    call `_after_apply`: `CARL` refuses `target_momentum`, its one use, under JAX.
    """

    def train_step(self, state, data):
        import jax  # this mixin only runs under the JAX backend

        trainable, non_trainable, optimizer_values, metric_values = state

        def loss_and_figures(trainable, non_trainable):
            with _scope(self, trainable, non_trainable) as scope:
                view_a, view_b, small_views = self._views(data)
                figures = self._objective(view_a, view_b, training=True, small_views=small_views)
            non_trainable = _current(scope, self.non_trainable_variables, non_trainable)
            with _scope_of(self.optimizer.variables, optimizer_values):
                scaled_loss = self.optimizer.scale_loss(figures["loss"])
            return scaled_loss, (figures, non_trainable)

        gradient_of = jax.value_and_grad(loss_and_figures, has_aux=True)
        (_, (figures, non_trainable)), gradients = gradient_of(trainable, non_trainable)
        trainable, optimizer_values = self.optimizer.stateless_apply(
            optimizer_values, gradients, trainable
        )
        logs, metric_values = self._stateless_trackers(metric_values, figures, observe=True)
        return logs, (trainable, non_trainable, optimizer_values, metric_values)

    def test_step(self, state, data):
        trainable, non_trainable, metric_values = state
        with _scope(self, trainable, non_trainable) as scope:
            figures = self._test_figures(data)
        non_trainable = _current(scope, self.non_trainable_variables, non_trainable)
        logs, metric_values = self._stateless_trackers(metric_values, figures)
        return logs, (trainable, non_trainable, metric_values)

    def predict_step(self, state, data):
        trainable, non_trainable = state
        return self.stateless_call(
            trainable, non_trainable, split_batch(data).first_images, training=False
        )

    def _stateless_trackers(self, metric_values, figures, observe=False):
        """The trackers updated with this step's figures, statelessly; with `observe`, also
        the state `_observe` takes from them (CARL's prototype counts)."""
        with _scope_of(self.metrics_variables, metric_values) as scope:
            if observe:
                self._observe(figures)
            logs = self._update_trackers(figures)
        return logs, _current(scope, self.metrics_variables, metric_values)


def steps_for_backend(backend: str | None = None) -> type:
    """The step mixin of `backend` (the running Keras backend by default).

    Raises:
        ValueError: For a backend carl_tf does not train under, naming the ones it does.
    """
    backend = backend or keras.backend.backend()
    if backend == "tensorflow":
        return TensorFlowSteps
    if backend == "jax":
        return JaxSteps
    raise ValueError(
        f"carl_tf trains under the {' and '.join(SUPPORTED_BACKENDS)} backends of Keras, not "
        f"{backend!r}; set KERAS_BACKEND=jax or KERAS_BACKEND=tensorflow"
    )


def _scope(model, trainable, non_trainable):
    """A StatelessScope in which `model`'s variables read the given values."""
    return _scope_of(
        [*model.trainable_variables, *model.non_trainable_variables], [*trainable, *non_trainable]
    )


def _scope_of(variables, values):
    return keras.StatelessScope(state_mapping=list(zip(variables, values)))


def _current(scope, variables, values):
    """The values `variables` hold at the end of `scope`: updated ones, else those given."""
    current = [scope.get_current_value(v) for v in variables]
    return [new if new is not None else old for new, old in zip(current, values)]
