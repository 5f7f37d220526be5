"""The methods a run trains, chosen by `config.method`: each builds its model from a config and
names the callbacks only it needs. Everything else of a run (data, run directory, resume, kNN
monitor, export, evaluation) is the same for every method (`carl_tf.training.pretrain`).

* `carl`: `carl_tf.CARL`, with lambda's schedule (eq. 8) and the collapse guard.
* `simclr`: `carl_tf.method.simclr.SimCLR`, NT-Xent at `config.simclr_temperature`; the
  baseline of CARL's Table 1 under the same recipe.
"""

from collections.abc import Callable
from typing import NamedTuple

import keras

from carl_tf.method.augment import SimCLRAugment
from carl_tf.method.backbones import build_backbone
from carl_tf.method.base import TwoViewModel
from carl_tf.method.model import CARL
from carl_tf.method.optimizer import build_optimizer
from carl_tf.method.schedules import kl_weight_schedule
from carl_tf.method.simclr import SimCLR
from carl_tf.run.callbacks import CollapseGuard, collapse_advice


class Method(NamedTuple):
    """How a run builds one method's model and which callbacks it adds to every run's."""

    build: Callable[..., TwoViewModel]  # (config, backbone, augmenter) -> uncompiled model
    callbacks: Callable[..., list[keras.callbacks.Callback]]  # (config) -> callbacks


def _encoder_arguments(config, augmenter) -> dict:
    """The projection head and views every method's encoder is built with."""
    return {
        "projection_hidden_units": (config.projection_hidden_dim,)
        * config.projection_hidden_layers,
        "projection_dim": config.projection_dim,
        "augmenter": augmenter,
    }


def _carl(config, backbone, augmenter) -> CARL:
    return CARL(
        backbone,
        **_encoder_arguments(config, augmenter),
        num_prototypes=config.num_prototypes,
        kl_weight=config.kl_start,
        symmetric=config.symmetric,
        small_crops=config.small_crops,
        small_crop_size=config.small_crop_size,
        small_crop_scale=(config.small_crop_min_scale, config.small_crop_max_scale),
        target_temperature=config.target_temperature,
        unit_prototypes=config.unit_prototypes,
        cosine_temperature=config.cosine_temperature,
        target_momentum=config.target_momentum,
        prototype_block_size=config.prototype_block_size,
        prototype_init_scale=config.prototype_init_scale,
    )


def _carl_callbacks(config) -> list[keras.callbacks.Callback]:
    """Lambda's schedule, and the guard that stops a collapsed run (`CollapseGuard`)."""
    advice = collapse_advice(
        config.num_prototypes,
        config.batch_size,
        config.learning_rate,
        config.kl_start,
        config.kl_end,
    )
    return [
        kl_weight_schedule(config),
        CollapseGuard(
            config.collapse_fraction,
            config.batch_size,
            patience=config.collapse_patience,
            advice=advice,
        ),
    ]


def _simclr(config, backbone, augmenter) -> SimCLR:
    return SimCLR(
        backbone,
        **_encoder_arguments(config, augmenter),
        temperature=config.simclr_temperature,
    )


METHODS = {
    "carl": Method(_carl, _carl_callbacks),
    "simclr": Method(_simclr, lambda config: []),
}


def build_model(config, steps_per_epoch: int, extensions=()) -> TwoViewModel:
    """The model of `config.method`, compiled with SGD (`carl_tf.method.optimizer`) on the
    run's learning-rate schedule (`carl_tf.method.schedules`; `extensions` are the run's
    recorded extensions, which decide where its cosine cycle starts)."""
    backbone = build_backbone(
        config.backbone, width=config.backbone_width, image_size=config.image_size
    )
    augmenter = SimCLRAugment(
        image_size=config.image_size,
        crop_scale=(config.crop_min_scale, 1.0),
        blur_probability=config.blur_probability,
    )
    model = METHODS[config.method].build(config, backbone, augmenter)
    optimizer = build_optimizer(config, model, steps_per_epoch, extensions)
    # JAX runs an uncompiled step op by op, several times slower: there the step is always
    # compiled, and `jit_compile` chooses only for TensorFlow.
    jit_compile = config.jit_compile or keras.backend.backend() == "jax"
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    return model
