"""The pretraining optimizer: coupled (PyTorch) and decoupled (Keras) weight decay against NumPy
SGD steps, which variables `weight_decay_on` spares, and the same step under MirroredStrategy."""

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from carl_tf.configs.common import paper_recipe
from carl_tf.method.optimizer import CoupledSGD, build_optimizer, undecayed_variables
from carl_tf.run.config import ConfigFieldError, validate_config
from tests.test_model import assert_mirrored_steps_equal_one_device, random_views, tiny_carl

LR, MOMENTUM, DECAY = 0.1, 0.9, 0.05


def numpy_sgd(w, gradients, mode, decayed=True, decay=DECAY):
    """PyTorch's SGD (`coupled`: g + wd w enters the momentum buffer) or Keras's decoupled one
    (w shrinks by lr wd before the momentum step), written independently of Keras."""
    w, v = np.array(w, dtype=np.float64), np.zeros_like(w, dtype=np.float64)
    for g in gradients:
        if mode == "coupled":
            d = g + (decay * w if decayed else 0.0)
            v = MOMENTUM * v + d  # torch.optim.SGD, dampening 0
            w = w - LR * v
        else:
            if decayed:
                w = w - LR * decay * w
            v = MOMENTUM * v - LR * g
            w = w + v
    return w


@pytest.mark.parametrize("mode", ["coupled", "decoupled"])
@pytest.mark.parametrize("decayed", [True, False])
def test_three_steps_equal_numpy_sgd(mode, decayed):
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(4, 3))
    gradients = [rng.normal(size=(4, 3)) for _ in range(3)]
    variable = keras.Variable(w0.astype("float32"))
    sgd = CoupledSGD if mode == "coupled" else keras.optimizers.SGD
    optimizer = sgd(LR, momentum=MOMENTUM, weight_decay=DECAY)
    if not decayed:
        optimizer.exclude_from_weight_decay(var_list=[variable])
    for g in gradients:
        optimizer.apply([tf.constant(g, tf.float32)], [variable])
    want = numpy_sgd(w0, gradients, mode, decayed)
    np.testing.assert_allclose(np.array(variable), want, rtol=1e-5, atol=1e-6)


def test_coupled_decay_is_about_ten_times_the_decoupled_one_at_momentum_point_nine():
    w0, zero = np.ones((2, 2)), [np.zeros((2, 2))] * 200
    coupled = -np.log(numpy_sgd(w0, zero, "coupled", decay=5e-4)[0, 0])
    decoupled = -np.log(numpy_sgd(w0, zero, "decoupled", decay=5e-4)[0, 0])
    assert 8 < coupled / decoupled < 10  # the reason weight_decay_mode exists


def _config(**fields) -> ml_collections.ConfigDict:
    config = paper_recipe()
    config.update(epochs=2, batch_size=8, **fields)
    return config


def test_kernels_spares_batchnorm_biases_and_prototypes():
    model = tiny_carl()
    spared = {v.path for v in undecayed_variables(model)}
    assert model.prototypes.path in spared
    for v in model.trainable_variables:
        is_kernel = len(v.shape) >= 2 and v.path != model.prototypes.path
        assert (v.path not in spared) == is_kernel, v.path
    optimizer = build_optimizer(_config(weight_decay_on="kernels"), model, steps_per_epoch=4)
    assert not optimizer._use_weight_decay(model.prototypes)
    assert optimizer._use_weight_decay(model.backbone.trainable_variables[0])  # a conv kernel
    everything = build_optimizer(_config(weight_decay_on="all"), model, steps_per_epoch=4)
    assert all(everything._use_weight_decay(v) for v in model.trainable_variables)


def test_build_optimizer_picks_the_mode_and_the_scaled_cosine_rate():
    model = tiny_carl()
    coupled = build_optimizer(_config(weight_decay_mode="coupled"), model, steps_per_epoch=4)
    decoupled = build_optimizer(_config(weight_decay_mode="decoupled"), model, steps_per_epoch=4)
    assert type(coupled) is CoupledSGD and type(decoupled) is keras.optimizers.SGD
    # lr 0.03 at batch 256 -> 0.03 * 8 / 256 at batch 8, cosine over 2 epochs of 4 steps.
    np.testing.assert_allclose(float(coupled.learning_rate), 0.03 * 8 / 256, rtol=1e-6)


def test_unknown_mode_or_scope_names_the_field():
    for field, value in (("weight_decay_mode", "l2"), ("weight_decay_on", "weights")):
        with pytest.raises(ConfigFieldError, match=field) as error:
            validate_config(_config(**{field: value}))
        assert error.value.field == field


def test_coupled_kernels_step_under_mirrored_strategy_equals_one_device(two_replicas):
    config = _config(weight_decay_mode="coupled", weight_decay_on="kernels", weight_decay=0.01)
    config.learning_rate = 0.5 * 256 / 8  # a rate large enough for the decay to show
    assert_mirrored_steps_equal_one_device(
        two_replicas,
        lambda: tiny_carl(kl_weight=2.0),
        random_views(7, batch=8),
        optimizer=lambda model: build_optimizer(config, model, steps_per_epoch=100),
    )


def test_a_run_recorded_before_the_fields_existed_resumes_with_their_old_values():
    from carl_tf.run.rundir import _changed_fields

    before = _config(weight_decay_mode="decoupled")  # what every run trained with then
    recorded = {k: v for k, v in before.to_dict().items() if not k.startswith("weight_decay_")}
    recorded.pop("target_temperature"), recorded.pop("unit_prototypes")
    assert _changed_fields(recorded, before.to_dict(), []) == []
    # The presets' coupled decay is a change for such a run: it resumes only as it trained.
    changed = _config(weight_decay_mode="coupled", target_temperature=0.5).to_dict()
    assert _changed_fields(recorded, changed, []) == ["target_temperature", "weight_decay_mode"]
