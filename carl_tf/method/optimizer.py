"""The pretraining optimizer: SGD with momentum and weight decay as the recipe means it.

The paper follows MoCo's recipe, written for PyTorch's SGD, where weight decay is an L2 term added
to the gradient before momentum (`coupled`): with momentum 0.9 a weight shrinks by about
`lr * wd / (1 - 0.9)` per step. Keras's `SGD(weight_decay=)` is decoupled: it shrinks each weight by
`lr * wd` per step outside the momentum, ten times weaker at momentum 0.9. `weight_decay_mode`
chooses between the two; `weight_decay_on` whether BatchNorm scales and offsets, biases and the
prototypes are decayed too (`all`, as both optimizers do by default) or only the other kernels
(`kernels`).
"""

import keras
from keras import ops

from carl_tf.method.schedules import learning_rate_schedule

WEIGHT_DECAY_MODES = ("decoupled", "coupled")
WEIGHT_DECAY_ON = ("all", "kernels")


@keras.saving.register_keras_serializable(package="carl_tf")
class CoupledSGD(keras.optimizers.SGD):
    """SGD whose weight decay is L2 added to the gradient before momentum (PyTorch's SGD).

    One step of a decayed variable w with gradient g, rate lr, momentum m and decay wd:
    `v <- m v - lr (g + wd w); w <- w + v`, which is PyTorch's `v <- m v + g + wd w;
    w <- w - lr v` at a constant rate. Variables excluded with `exclude_from_weight_decay` get
    plain SGD with momentum.
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.weight_decay and self._use_weight_decay(variable):
            gradient = ops.add(
                ops.cast(gradient, variable.dtype),
                ops.multiply(ops.cast(self.weight_decay, variable.dtype), variable),
            )
        super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        """Nothing: the decay is in the gradient (`update_step`), not applied beside it."""


def build_optimizer(config, model: keras.Model, steps_per_epoch: int, extensions=()):
    """SGD with momentum on the run's learning-rate schedule
    (`carl_tf.method.schedules.learning_rate_schedule`, which takes the run's recorded
    `extensions`), decaying `model`'s weights as `config.weight_decay_mode` and
    `config.weight_decay_on` say (module docstring).

    `model` must be built (its variables exist) and the optimizer not yet: the exclusions are
    fixed before the optimizer's first build.
    """
    schedule = learning_rate_schedule(config, steps_per_epoch, extensions)
    sgd = CoupledSGD if config.weight_decay_mode == "coupled" else keras.optimizers.SGD
    optimizer = sgd(schedule, momentum=config.momentum, weight_decay=config.weight_decay or None)
    if config.weight_decay_on == "kernels":
        optimizer.exclude_from_weight_decay(var_list=undecayed_variables(model))
    return optimizer


def undecayed_variables(model: keras.Model) -> list:
    """The variables `weight_decay_on="kernels"` leaves alone: every trainable variable of rank
    0 or 1 (BatchNorm scales and offsets, biases) and the model's `prototypes`, if it has any."""
    prototypes = getattr(model, "prototypes", None)
    keep = [v for v in model.trainable_variables if len(v.shape) <= 1]
    return keep + ([prototypes] if prototypes is not None else [])
